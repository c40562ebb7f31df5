#!/bin/sh
# get-cifar10.sh — where to get CIFAR-10's official binary version, how to
# download it, and a check that a folder holds exactly the official files.
#
#   scripts/get-cifar10.sh                   print where the files come from
#   scripts/get-cifar10.sh --verify DIR      check the six data files in
#                                            DIR/cifar-10-batches-bin (or DIR),
#                                            and the archive if DIR holds it
#   scripts/get-cifar10.sh --download DIR    fetch cifar-10-binary.tar.gz into
#                                            DIR, check it, extract it there,
#                                            check the data files
#
# The programs read the extracted files (experiments/data/cifar.h): pass
# --data DIR, or name DIR cifar/ inside $HYPERTAPE_DATA.  Exit status: 0 the
# six data files verified (or only information printed), 1 a file missing,
# mismatching or not downloadable, 2 bad usage.
#
# The archive's md5 is the one its authors publish beside it; its sha256 and
# size are TFDS's (tensorflow/datasets, url_checksums/cifar10.txt).  The
# sha256 of the six extracted files are not published by the authors: they
# are the ones torchvision-ruby (ankane/torchvision-ruby, datasets/cifar10.rb)
# checks, test_batch.bin's also quoted by two unrelated projects.
set -eu
PROG=get-cifar10.sh
USAGE_LINES=2,16
. "$(dirname "$0")/get-common.sh"

# CIFAR10_URL overrides the archive's address (file:///some/file for tests).
URL=${CIFAR10_URL:-https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz}
PAGE=https://www.cs.toronto.edu/~kriz/cifar.html
ARCHIVE=cifar-10-binary.tar.gz
FOLDER=cifar-10-batches-bin

# name, bytes, sha256, md5 ("-": none published) — the archive first, then
# the files the programs read.  CIFAR10_SUMS replaces the list (the script's
# own test, tests/get-data.sh, builds a small archive and gives its sums).
SUMS=${CIFAR10_SUMS:-"$ARCHIVE 170052171 c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd c32a1d4ab5d03f1284b67883e8d87530
data_batch_1.bin 30730000 cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5 -
data_batch_2.bin 30730000 a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed -
data_batch_3.bin 30730000 bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67 -
data_batch_4.bin 30730000 014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48 -
data_batch_5.bin 30730000 755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add -
test_batch.bin 30730000 8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b -"}

# The shared data folder's JPEG-degraded subset (its SOURCE.md): not the
# official files, but recognized, so that --verify says what a folder holds.
SUBSET='cifar10_train4000_jpeg.bin.gz 1bb2551e671794f2dc73a816cc3f2313c6e2562d240e1342face67ff6c25c002
cifar10_test_jpeg.bin.gz b0cf859b1d8b6f9aca973f4f806d37295a60510439b23b9004700773591239af'

info() {
    cat <<EOF
CIFAR-10 (Alex Krizhevsky, "Learning Multiple Layers of Features from Tiny
Images", 2009; no formal license: cite the report), binary version
  published at: $PAGE
  archive: $URL
The archive and the files it holds (in $FOLDER/), their sizes and sha256 sums:
EOF
    echo "$SUMS" | while read -r name bytes sum md5; do
        printf '  %-24s %9s  %s\n' "$name" "$bytes" "$sum"
        [ "$md5" = - ] || printf '  %-24s %9s  md5 %s (published on the page above)\n' "" "" "$md5"
    done
    cat <<EOF
To fetch them:  $0 --download DIR   (170 MB, and 184 MB extracted)
To check them:  $0 --verify DIR
Then run taskinteract with --data DIR, or name DIR cifar/ inside
\$HYPERTAPE_DATA.  Without them it reads the shared JPEG-degraded subset
(cifar10_train4000_jpeg.bin.gz, cifar10_test_jpeg.bin.gz) when that is where
it looks; scripts/get-cifar10.sh --verify says which set a folder holds.
EOF
}

# check PATH SHA256 MD5: prints PATH's verdict; 0 when it matches.
check() {
    if [ ! -f "$1" ]; then
        echo "$1: MISSING" >&2
        return 1
    fi
    got=$(sum_of "$1") || return 1
    if [ "$got" != "$2" ]; then
        echo "$1: SHA256 MISMATCH (got $got, want $2)" >&2
        return 1
    fi
    if [ "$3" != - ]; then
        got=$(sum_of "$1" md5) || return 1
        if [ "$got" != "$3" ]; then
            echo "$1: MD5 MISMATCH (got $got, want $3)" >&2
            return 1
        fi
        echo "$1: OK (sha256 and md5)"
    else
        echo "$1: OK"
    fi
}

# Where DIR's data files are: DIR/cifar-10-batches-bin when it exists, else DIR.
data_dir() {
    if [ -d "$1/$FOLDER" ]; then echo "$1/$FOLDER"; else echo "$1"; fi
}

# The archive's line of SUMS, and the data files' lines.
archive_line() { echo "$SUMS" | head -n 1; }
file_lines() { echo "$SUMS" | tail -n +2; }

# Checks the archive in DIR, if there; 0 when absent or matching.
verify_archive() {
    # shellcheck disable=SC2046 # the line's four words, split on purpose
    set -- "$1" $(archive_line)
    [ -e "$1/$2" ] || return 0
    check "$1/$2" "$4" "$5"
}

# Checks the six data files; 0 when all match.
verify_files() {
    data=$(data_dir "$1")
    files_ok=0
    # A here-document, not a pipe, so that files_ok survives the loop.
    while read -r name _bytes sum md5; do
        check "$data/$name" "$sum" "$md5" || files_ok=1
    done <<EOF
$(file_lines)
EOF
    return $files_ok
}

# Says so when DIR holds the shared subset instead (it is not an error to
# have it; it is just not the official set).
note_subset() {
    while read -r name sum; do
        [ -f "$1/$name" ] || continue
        if [ "$(sum_of "$1/$name")" = "$sum" ]; then
            echo "$1/$name: the shared JPEG-degraded subset (not the official files; taskinteract reads it when no official files are there, and its numbers differ)" >&2
        fi
    done <<EOF
$SUBSET
EOF
}

verify() {
    status=0
    verify_archive "$1" || status=1
    verify_files "$1" || status=1
    if [ $status -eq 0 ]; then
        echo "CIFAR-10 binary version verified in $(data_dir "$1")"
    else
        note_subset "$1"
        echo "get-cifar10.sh: $1 does not hold the official CIFAR-10 files" >&2
    fi
    return $status
}

download() {
    mkdir -p "$1"
    if verify_files "$1" >/dev/null 2>&1; then
        echo "$(data_dir "$1"): the six files are there and verified; nothing downloaded"
        return 0
    fi
    archive=$1/$ARCHIVE
    if [ -e "$archive" ]; then
        echo "$archive: present, not downloaded again"
    else
        echo "downloading $URL"
        fetch "$URL" "$archive" "$URL" || { echo "$archive: download failed" >&2; return 1; }
    fi
    # The archive is checked before tar reads it: a damaged or foreign one
    # is never extracted.
    verify_archive "$1" || {
        echo "get-cifar10.sh: $archive is not the official archive; not extracted (remove it and run again)" >&2
        return 1
    }
    echo "extracting $archive into $1/$FOLDER"
    tar -xzf "$archive" -C "$1" || { echo "get-cifar10.sh: tar failed on $archive" >&2; return 1; }
    verify "$1"
}

get_main "$@"
