#!/bin/sh
# get-mnist.sh — where to get MNIST, how to download it, and a check that a
# directory holds exactly the official files.
#
#   scripts/get-mnist.sh                   print where the files come from
#   scripts/get-mnist.sh --verify DIR      check the sha256 of the four files in DIR
#   scripts/get-mnist.sh --download DIR    fetch the missing ones into DIR, then check
#
# The experiments find the files through --data DIR, or $HYPERTAPE_DATA/mnist
# (see experiments/data/files.h).  Exit status: 0 all four files verified (or only
# information printed), 1 a file missing, mismatching or not downloadable,
# 2 bad usage.
#
# The sums are those of the official LeCun files (also published by TFDS),
# copied from the shared data folder's SOURCE.md.  The download comes from the
# fgnt/mnist mirror on GitHub, pinned to the commit SOURCE.md names, because
# yann.lecun.com often refuses scripted downloads.
set -eu

# MNIST_MIRROR overrides the mirror (a local copy, or file:///some/dir for tests).
MIRROR=${MNIST_MIRROR:-https://raw.githubusercontent.com/fgnt/mnist/ae608a02b796c9ee908c082585a5f006fe05258e}
ORIGIN=http://yann.lecun.com/exdb/mnist/

# file, bytes, sha256 — one line each.
FILES='train-images-idx3-ubyte.gz 9912422 440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609
train-labels-idx1-ubyte.gz 28881 3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c
t10k-images-idx3-ubyte.gz 1648877 8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6
t10k-labels-idx1-ubyte.gz 4542 f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6'

usage() {
    sed -n '2,12s/^# \{0,1\}//p' "$0"
}

info() {
    cat <<EOF
MNIST (Yann LeCun, Corinna Cortes, Christopher J.C. Burges; CC BY-SA 3.0)
  original site: $ORIGIN
  mirror used by --download: $MIRROR/<file>
The four files, their sizes and sha256 sums:
EOF
    echo "$FILES" | while read -r name bytes sum; do
        printf '  %-28s %9s  %s\n' "$name" "$bytes" "$sum"
    done
    cat <<EOF
To fetch them:  $0 --download DIR
To check them:  $0 --verify DIR
Then run an experiment with --data DIR, or set HYPERTAPE_DATA to DIR's parent
(DIR itself named mnist).
EOF
}

# Prints the sha256 of a file, with whichever tool this system has.
sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d' ' -f1
    elif command -v shasum >/dev/null 2>&1; then
        shasum -a 256 "$1" | cut -d' ' -f1
    else
        echo "get-mnist.sh: neither sha256sum nor shasum found" >&2
        return 1
    fi
}

# Downloads URL to FILE, atomically: a failed download leaves no FILE behind.
fetch() {
    if command -v curl >/dev/null 2>&1; then
        curl -fL --progress-bar --retry 3 --connect-timeout 20 -o "$2.part" "$1" || { rm -f "$2.part"; return 1; }
    elif command -v wget >/dev/null 2>&1; then
        wget --timeout=20 -O "$2.part" "$1" || { rm -f "$2.part"; return 1; }
    else
        echo "get-mnist.sh: neither curl nor wget found; install one (sudo apt-get install curl) or fetch the four files by hand (scripts/get-mnist.sh alone lists where)" >&2
        return 1
    fi
    mv "$2.part" "$2"
}

download() {
    dir=$1
    mkdir -p "$dir"
    status=0
    # A here-document, not a pipe, so that status survives the loop.
    while read -r name _bytes _sum; do
        if [ -e "$dir/$name" ]; then
            echo "$dir/$name: present, not downloaded again"
            continue
        fi
        echo "downloading $MIRROR/$name"
        fetch "$MIRROR/$name" "$dir/$name" || {
            echo "$dir/$name: download failed" >&2
            status=1
        }
    done <<EOF
$FILES
EOF
    return $status
}

verify() {
    dir=$1
    status=0
    while read -r name _bytes want; do
        path=$dir/$name
        if [ ! -f "$path" ]; then
            echo "$path: MISSING" >&2
            status=1
            continue
        fi
        got=$(sha256_of "$path") || return 1
        if [ "$got" = "$want" ]; then
            echo "$path: OK"
        else
            echo "$path: SHA256 MISMATCH (got $got, want $want)" >&2
            status=1
        fi
    done <<EOF
$FILES
EOF
    if [ $status -eq 0 ]; then
        echo "all four MNIST files verified in $dir"
    else
        echo "get-mnist.sh: $dir does not hold the official MNIST files" >&2
    fi
    return $status
}

case ${1:-} in
    "")
        info
        ;;
    --verify)
        [ $# -eq 2 ] || { usage >&2; exit 2; }
        verify "$2"
        ;;
    --download)
        [ $# -eq 2 ] || { usage >&2; exit 2; }
        # Verify even after a failed download: it says which files are missing.
        dl=0
        download "$2" || dl=1
        verify "$2" && [ $dl -eq 0 ]
        ;;
    -h|--help)
        usage
        ;;
    *)
        usage >&2
        exit 2
        ;;
esac
