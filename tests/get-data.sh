#!/usr/bin/env bash
# get-data.sh — the dataset scripts (scripts/get-cifar10.sh, get-omniglot.sh,
# get-mnist.sh) on local files: what they accept, what they refuse and with
# which exit status, and that a download is checked before it is used.
#
#   bash tests/get-data.sh SOURCE_ROOT
#
# There is no internet here, so downloads come from file:// addresses (curl
# reads them; without curl those cases are skipped, or fail when CI is set:
# scripts/setup.sh installs curl).  CIFAR-10's official
# archive is not available offline: a small archive of the same layout is
# built here, and CIFAR10_SUMS gives the script its sums, so the whole
# download → check → extract → check path runs; with the built-in (official)
# sums the same archive must be refused before extraction.  The shared data
# folder ($HYPERTAPE_DATA, else SOURCE_ROOT/../shared/data), when present,
# gives the real files: MNIST's official ones, Omniglot's pixel-exact
# rebuild, CIFAR-10's JPEG subset; without it those cases are skipped with a
# line "skipped: ...", or fail when CI is set (tests/skip.sh).  Exit status 0
# when every case held.
set -uo pipefail

root=$1
scripts=$root/scripts
# shellcheck source=tests/skip.sh
source "$root/tests/skip.sh"
data=$(tu_data_root "$root")
work=$(mktemp -d "${TMPDIR:-/tmp}/get-data.XXXXXX")
trap 'rm -rf "$work"' EXIT
failed=0
cases=0

# expect STATUS PATTERN CMD...: CMD exits with STATUS and its output (stdout
# and stderr) matches the extended regular expression PATTERN.
expect() {
  local want=$1 pattern=$2 got
  shift 2
  cases=$((cases + 1))
  "$@" >"$work/out" 2>&1
  got=$?
  if [ "$got" -ne "$want" ] || ! grep -Eq -- "$pattern" "$work/out"; then
    failed=$((failed + 1))
    echo "FAILED: $* exited $got (want $want), output should match /$pattern/:"
    sed 's/^/    /' "$work/out"
  fi
}

# check MESSAGE COND...: the test expression COND holds (MESSAGE says what failed).
check() {
  local msg=$1
  shift
  cases=$((cases + 1))
  if ! test "$@"; then
    failed=$((failed + 1))
    echo "FAILED: $msg"
  fi
}

have_curl=false
command -v curl >/dev/null 2>&1 && have_curl=true
have_data=false
[ -d "$data/mnist" ] && [ -d "$data/omniglot" ] && [ -d "$data/cifar" ] && have_data=true

# ---- usage -------------------------------------------------------------------
for s in get-cifar10.sh get-omniglot.sh get-mnist.sh; do
  expect 0 'https://' sh "$scripts/$s"
  expect 2 '--verify DIR' sh "$scripts/$s" --bogus
  expect 2 '--verify DIR' sh "$scripts/$s" --verify
  expect 2 '--download DIR' sh "$scripts/$s" --download a b
done
expect 0 'c32a1d4ab5d03f1284b67883e8d87530' sh "$scripts/get-cifar10.sh"
mkdir "$work/empty"
expect 1 'data_batch_1.bin: MISSING' sh "$scripts/get-cifar10.sh" --verify "$work/empty"
expect 1 'images_evaluation.zip: MISSING' sh "$scripts/get-omniglot.sh" --verify "$work/empty"

# ---- CIFAR-10: a small archive of the official layout -------------------------
src=$work/src/cifar-10-batches-bin
mkdir -p "$src"
for f in data_batch_1 data_batch_2 data_batch_3 data_batch_4 data_batch_5 test_batch; do
  printf '%s record bytes\n' "$f" >"$src/$f.bin"
done
printf 'airplane\n' >"$src/batches.meta.txt"
tar -czf "$work/fake.tar.gz" -C "$work/src" cifar-10-batches-bin
line() { echo "$1 $(wc -c <"$2") $(sha256sum "$2" | cut -d' ' -f1) $3"; }
sums=$(line cifar-10-binary.tar.gz "$work/fake.tar.gz" "$(md5sum "$work/fake.tar.gz" | cut -d' ' -f1)")
for f in data_batch_1 data_batch_2 data_batch_3 data_batch_4 data_batch_5 test_batch; do
  sums+=$'\n'$(line "$f.bin" "$src/$f.bin" -)
done

if $have_curl; then
  dl=$work/dl
  export CIFAR10_URL=file://$work/fake.tar.gz
  # With its sums: downloaded, checked (sha256 and md5), extracted, checked.
  expect 0 'verified in .*/dl/cifar-10-batches-bin' env CIFAR10_SUMS="$sums" \
    sh "$scripts/get-cifar10.sh" --download "$dl"
  check "the archive was not extracted into DIR" -f "$dl/cifar-10-batches-bin/test_batch.bin"
  expect 0 'cifar-10-binary.tar.gz: OK \(sha256 and md5\)' env CIFAR10_SUMS="$sums" \
    sh "$scripts/get-cifar10.sh" --verify "$dl"
  expect 0 'nothing downloaded' env CIFAR10_SUMS="$sums" sh "$scripts/get-cifar10.sh" --download "$dl"
  # A folder whose name holds a backslash (sha256sum FILE would print "\" before the sum).
  cp -r "$dl" "$work/back\\slash"
  expect 0 'cifar-10-binary.tar.gz: OK \(sha256 and md5\)' env CIFAR10_SUMS="$sums" \
    sh "$scripts/get-cifar10.sh" --verify "$work/back\\slash"
  # A damaged data file is found, and a second --download extracts it again.
  printf 'X' >>"$dl/cifar-10-batches-bin/data_batch_2.bin"
  expect 1 'data_batch_2.bin: SHA256 MISMATCH' env CIFAR10_SUMS="$sums" \
    sh "$scripts/get-cifar10.sh" --verify "$dl"
  expect 0 'present, not downloaded again' env CIFAR10_SUMS="$sums" \
    sh "$scripts/get-cifar10.sh" --download "$dl"
  # A damaged archive is not extracted.
  rm -r "$dl/cifar-10-batches-bin"
  printf 'X' >>"$dl/cifar-10-binary.tar.gz"
  expect 1 'not the official archive; not extracted' env CIFAR10_SUMS="$sums" \
    sh "$scripts/get-cifar10.sh" --download "$dl"
  check "a damaged archive was extracted" ! -e "$dl/cifar-10-batches-bin"
  # With the official sums, the same (foreign) archive is refused.
  expect 1 'cifar-10-binary.tar.gz: SHA256 MISMATCH' sh "$scripts/get-cifar10.sh" --download "$work/dl2"
  check "a foreign archive was extracted" ! -e "$work/dl2/cifar-10-batches-bin"
  # A failed download leaves nothing behind.
  expect 1 'download failed' env CIFAR10_URL="file://$work/nowhere.tar.gz" \
    sh "$scripts/get-cifar10.sh" --download "$work/dl3"
  check "a failed download left a file" -z "$(ls -A "$work/dl3")"
  unset CIFAR10_URL
elif ! tu_skip "no curl: the download cases" "scripts/setup.sh installs curl"; then
  cases=$((cases + 1))
  failed=$((failed + 1))
fi

# ---- the shared data folder ---------------------------------------------------
if $have_data; then
  expect 0 'all four MNIST files verified' sh "$scripts/get-mnist.sh" --verify "$data/mnist"
  expect 0 'images_evaluation.zip: OK \(the pixel-exact rebuild' \
    sh "$scripts/get-omniglot.sh" --verify "$data/omniglot"
  expect 1 'cifar10_test_jpeg.bin.gz: the shared JPEG-degraded subset' \
    sh "$scripts/get-cifar10.sh" --verify "$data/cifar"
  if $have_curl; then
    # A mirror laid out as upstream's python/ folder: the three zips side by side.
    mkdir "$work/mirror"
    ln -s "$data/omniglot/images_background.zip" "$data/omniglot/images_evaluation.zip" \
      "$data/omniglot/original_small/images_background_small1.zip" "$work/mirror/"
    om=$work/om
    expect 0 'every Omniglot zip verified' env OMNIGLOT_MIRROR="file://$work/mirror" \
      sh "$scripts/get-omniglot.sh" --download "$om"
    printf 'X' | dd of="$om/images_background.zip" bs=1 seek=1000 conv=notrunc 2>/dev/null
    check "the small zip was not placed in original_small/" \
      -f "$om/original_small/images_background_small1.zip"
    expect 1 'images_background.zip: SHA256 MISMATCH' sh "$scripts/get-omniglot.sh" --verify "$om"
    # MNIST from a mirror of the four files, into a folder whose name holds a backslash; a
    # damaged file is kept, with the hint how to recover (as the other two scripts give).
    mn="$work/back\\slash/mnist"
    expect 0 'all four MNIST files verified' env MNIST_MIRROR="file://$data/mnist" \
      sh "$scripts/get-mnist.sh" --download "$mn"
    printf 'X' >>"$mn/t10k-labels-idx1-ubyte.gz"
    expect 1 'present, not downloaded again' env MNIST_MIRROR="file://$data/mnist" \
      sh "$scripts/get-mnist.sh" --download "$mn"
    expect 1 'files \(a mismatching file: remove it and run --download again\)' \
      env MNIST_MIRROR="file://$data/mnist" sh "$scripts/get-mnist.sh" --download "$mn"
    expect 1 't10k-labels-idx1-ubyte.gz: SHA256 MISMATCH' sh "$scripts/get-mnist.sh" --verify "$mn"
    rm "$mn/train-images-idx3-ubyte.gz"
    expect 1 'download failed' env MNIST_MIRROR="file://$work/nowhere" \
      sh "$scripts/get-mnist.sh" --download "$mn"
    check "a failed MNIST download left a file" ! -e "$mn/train-images-idx3-ubyte.gz"
  fi
else
  if ! tu_skip "no mnist, omniglot or cifar folder in $data: the shared data cases"; then
    cases=$((cases + 1))
    failed=$((failed + 1))
  fi
fi

echo "get-data: $((cases - failed)) of $cases cases held"
[ "$failed" -eq 0 ]
