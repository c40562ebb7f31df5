# get-common.sh — what the three dataset scripts (get-mnist.sh, get-cifar10.sh,
# get-omniglot.sh) share: their command line, a checksum, a download.  Sourced
# by them, not run; each defines PROG (its name), USAGE_LINES (the lines of its
# header comment that usage prints), info, verify DIR and download DIR first.

usage() {
    sed -n "${USAGE_LINES}s/^# \{0,1\}//p" "$0"
}

# Prints the sha256 (or, with md5 as $2, the md5) of a file.  The file is
# read from stdin: given a name with a backslash or a newline, sha256sum
# puts a "\" before the sum it prints.
sum_of() {
    tool=${2:-sha256}
    [ -r "$1" ] || { echo "$PROG: $1: cannot read" >&2; return 1; }
    if command -v "${tool}sum" >/dev/null 2>&1; then
        "${tool}sum" <"$1" | cut -d' ' -f1
    elif [ "$tool" = sha256 ] && command -v shasum >/dev/null 2>&1; then
        shasum -a 256 <"$1" | cut -d' ' -f1
    else
        echo "$PROG: no ${tool}sum found" >&2
        return 1
    fi
}

# fetch URL FILE WHAT: downloads URL to FILE, atomically (a failed download
# leaves no FILE behind); WHAT names the files for fetching by hand.
fetch() {
    if command -v curl >/dev/null 2>&1; then
        curl -fL --progress-bar --retry 3 --connect-timeout 20 -o "$2.part" "$1" || { rm -f "$2.part"; return 1; }
    elif command -v wget >/dev/null 2>&1; then
        wget --timeout=20 -O "$2.part" "$1" || { rm -f "$2.part"; return 1; }
    else
        echo "$PROG: neither curl nor wget found; install one (sudo apt-get install curl) or fetch $3 by hand (scripts/$PROG alone lists where)" >&2
        return 1
    fi
    mv "$2.part" "$2"
}

# The command line: nothing (where the files come from), --verify DIR,
# --download DIR, --help.
get_main() {
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
            download "$2"
            ;;
        -h|--help)
            usage
            ;;
        *)
            usage >&2
            exit 2
            ;;
    esac
}
