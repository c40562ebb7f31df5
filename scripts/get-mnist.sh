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
PROG=get-mnist.sh
USAGE_LINES=2,12
. "$(dirname "$0")/get-common.sh"

# MNIST_MIRROR overrides the mirror (a local copy, or file:///some/dir for tests).
MIRROR=${MNIST_MIRROR:-https://raw.githubusercontent.com/fgnt/mnist/ae608a02b796c9ee908c082585a5f006fe05258e}
ORIGIN=http://yann.lecun.com/exdb/mnist/

# file, bytes, sha256 — one line each.
FILES='train-images-idx3-ubyte.gz 9912422 440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609
train-labels-idx1-ubyte.gz 28881 3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c
t10k-images-idx3-ubyte.gz 1648877 8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6
t10k-labels-idx1-ubyte.gz 4542 f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6'

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

download() {
    dir=$1
    mkdir -p "$dir"
    dl=0
    # A here-document, not a pipe, so that dl survives the loop.
    while read -r name _bytes _sum; do
        if [ -e "$dir/$name" ]; then
            echo "$dir/$name: present, not downloaded again"
            continue
        fi
        echo "downloading $MIRROR/$name"
        fetch "$MIRROR/$name" "$dir/$name" "the four files" || {
            echo "$dir/$name: download failed" >&2
            dl=1
        }
    done <<EOF
$FILES
EOF
    # Verify even after a failed download: it says which files are missing.
    verify "$dir" && [ $dl -eq 0 ]
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
        got=$(sum_of "$path") || return 1
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
        echo "get-mnist.sh: $dir does not hold the official MNIST files (a mismatching file: remove it and run --download again)" >&2
    fi
    return $status
}

get_main "$@"
