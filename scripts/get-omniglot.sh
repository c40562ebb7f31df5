#!/bin/sh
# get-omniglot.sh — where to get Omniglot, how to download it, and a check
# that a folder holds the official files.
#
#   scripts/get-omniglot.sh                  print where the files come from
#   scripts/get-omniglot.sh --verify DIR     check the three zips in DIR
#   scripts/get-omniglot.sh --download DIR   fetch the missing ones into DIR,
#                                            then check
#
# The programs read the zips as they are (experiments/data/omniglot.h): pass
# --data DIR, or name DIR omniglot/ inside $HYPERTAPE_DATA.  The third zip,
# original_small/images_background_small1.zip, is for the test suite only.
# Exit status: 0 every zip verified (or only information printed), 1 a file
# missing, mismatching or not downloadable, 2 bad usage.
#
# The official zips are the ones in the authors' repository
# (github.com/brendenlake/omniglot, python/).  Their sha256 and sizes are
# TFDS's (tensorflow/datasets, url_checksums/omniglot.txt), their md5 the
# ones torchvision checks.  The shared data folder beside this repository
# holds a rebuild instead (its SOURCE.md): other bytes, every image's pixels
# identical; --verify accepts it and says so.
set -eu
PROG=get-omniglot.sh
USAGE_LINES=2,14
. "$(dirname "$0")/get-common.sh"

# OMNIGLOT_MIRROR overrides where the zips come from (file:///some/dir for tests).
MIRROR=${OMNIGLOT_MIRROR:-https://github.com/brendenlake/omniglot/raw/master/python}
ORIGIN=https://github.com/brendenlake/omniglot

# file (under DIR; fetched as its last path component), bytes, sha256, md5 —
# one line each.  The small zip's md5 is the datasets-mila/datasets--omniglot
# md5sums file's.
FILES='images_background.zip 9464212 ad41ab679c8b5d90b271ef46be6987cc81211774a695c29dcc5367b2b26ee640 68d2efa1b9178cc56df9314c21c6e718
images_evaluation.zip 6462886 1f61a8f3366785b057fc117d9228e78a16e3d976c8953b2a10fcc74cf0609cee 6b91aef0f799c5bb55b94e3f2daec811
original_small/images_background_small1.zip 1319022 f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4 e704a628b5459e08445c13499850abc4'

# The pixel-exact rebuild in the shared data folder: file, sha256.
REBUILD='images_background.zip dadfb472e2b4e6bdcfa8c8b2440720c34a13b63a9abc1b346f29a16d49421149
images_evaluation.zip 7018cd4799053ca3caaef34174b2f7f0311b3de83e848a3ea1e8837ddeb8d370'

info() {
    cat <<EOF
Omniglot (Brenden Lake, Ruslan Salakhutdinov, Joshua Tenenbaum, Science 2015;
MIT license)
  original repository: $ORIGIN
  zips fetched by --download from: $MIRROR/<file>
The zips (the last one for the test suite only), their sizes, sha256 and md5:
EOF
    echo "$FILES" | while read -r name bytes sum md5; do
        printf '  %s (%s bytes)\n    sha256 %s\n    md5    %s\n' "$name" "$bytes" "$sum" "$md5"
    done
    cat <<EOF
To fetch them:  $0 --download DIR
To check them:  $0 --verify DIR
Then run oneshot or taskinteract --dataset omniglot with --data DIR, or name
DIR omniglot/ inside \$HYPERTAPE_DATA.
EOF
}

# The rebuild's sha256 for zip $1, or nothing.
rebuild_sum() {
    echo "$REBUILD" | while read -r name sum; do
        [ "$name" = "$1" ] && echo "$sum"
    done
}

# check PATH NAME SHA256 MD5: prints PATH's verdict; 0 when it is the
# official zip or the rebuild.
check() {
    if [ ! -f "$1" ]; then
        echo "$1: MISSING" >&2
        return 1
    fi
    got=$(sum_of "$1") || return 1
    if [ "$got" = "$(rebuild_sum "$2")" ]; then
        echo "$1: OK (the pixel-exact rebuild kept in the shared data folder: not the upstream bytes, every image identical)"
        return 0
    fi
    if [ "$got" != "$3" ]; then
        echo "$1: SHA256 MISMATCH (got $got, want $3)" >&2
        return 1
    fi
    got=$(sum_of "$1" md5) || return 1
    if [ "$got" != "$4" ]; then
        echo "$1: MD5 MISMATCH (got $got, want $4)" >&2
        return 1
    fi
    echo "$1: OK (sha256 and md5)"
}

verify() {
    status=0
    # A here-document, not a pipe, so that status survives the loop.
    while read -r name _bytes sum md5; do
        check "$1/$name" "$name" "$sum" "$md5" || status=1
    done <<EOF
$FILES
EOF
    if [ $status -eq 0 ]; then
        echo "every Omniglot zip verified in $1"
    else
        echo "get-omniglot.sh: $1 does not hold the official Omniglot zips (a mismatching file: remove it and run --download again)" >&2
    fi
    return $status
}

download() {
    mkdir -p "$1"
    dl=0
    while read -r name _bytes _sum _md5; do
        if [ -e "$1/$name" ]; then
            echo "$1/$name: present, not downloaded again"
            continue
        fi
        url=$MIRROR/${name##*/}
        echo "downloading $url"
        mkdir -p "$(dirname "$1/$name")"
        fetch "$url" "$1/$name" "the two zips" || {
            echo "$1/$name: download failed" >&2
            dl=1
        }
    done <<EOF
$FILES
EOF
    # Verify even after a failed download: it says which files are missing.
    verify "$1" && [ $dl -eq 0 ]
}

get_main "$@"
