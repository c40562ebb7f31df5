#!/usr/bin/env bash
# setup-packages.sh — scripts/setup.sh's decisions, with apt-get, apt-cache, dpkg-query and id
# replaced by stubs (nothing is installed; no root needed): a required package missing is an
# error only when it cannot be installed; an optional one (libdnnl-dev) never fails setup, is
# judged after `apt-get update` when the package lists do not know it (a fresh image's lists are
# empty), and is installed by an apt-get of its own.
#
#   bash tests/setup-packages.sh SOURCE_ROOT
#
# The stubs run with PATH holding only them and env, so no sudo is found unless a case adds one.
set -uo pipefail

setup=$1/scripts/setup.sh
work=$(mktemp -d "${TMPDIR:-/tmp}/setup-packages.XXXXXX")
trap 'rm -rf "$work"' EXIT
failed=0
cases=0
bin=$work/bin
mkdir -p "$bin"
ln -s "$(command -v env)" "$bin/env"
# State in $STATE: updated (apt-get update ran), inst-PKG (apt-get installed PKG), log.
# MISSING: packages not installed at the start; UNAVAILABLE: not in the archive even after an
# update; FAIL_INSTALL: packages whose apt-get install fails; STUB_UID: what id -u says;
# LISTS_CURRENT: the package lists were updated before (else they are empty, a fresh image).
cat >"$bin/dpkg-query" <<'STUB'
#!/bin/sh
[ $# -eq 3 ] && [ "$1" = -W ] && [ "$2" = '-f=${Status}' ] ||
  { echo "unexpected: dpkg-query $*" >>"$STATE/log"; exit 99; }
p=$3
case " $MISSING " in *" $p "*) [ -e "$STATE/inst-$p" ] || exit 1 ;; esac
echo "install ok installed"
STUB
# Each stub answers only the call setup.sh is meant to make (any other is a failure, exit 99,
# noted in the log), so a changed sub-command or flag cannot pass unseen.
cat >"$bin/apt-cache" <<'STUB'
#!/bin/sh
[ $# -eq 2 ] && [ "$1" = show ] || { echo "unexpected: apt-cache $*" >>"$STATE/log"; exit 99; }
p=$2
case " $UNAVAILABLE " in *" $p "*) exit 100 ;; esac
case " $MISSING " in *" $p "*) [ -e "$STATE/updated" ] || [ -n "$LISTS_CURRENT" ] || exit 100 ;; esac
exit 0
STUB
cat >"$bin/apt-get" <<'STUB'
#!/bin/sh
echo "apt-get $*" >>"$STATE/log"
[ "$*" = "update -q" ] && { : >"$STATE/updated"; exit 0; }
case "$*" in "install -y -q --no-install-recommends "?*) ;;
  *) echo "unexpected: apt-get $*" >>"$STATE/log"; exit 99 ;; esac
shift 4
for p; do case " $FAIL_INSTALL " in *" $p "*) exit 100 ;; esac; done
for p; do : >"$STATE/inst-$p"; done
STUB
cat >"$bin/id" <<'STUB'
#!/bin/sh
echo "$STUB_UID"
STUB
chmod +x "$bin"/*

# run NAME STATUS PATTERN VAR=VALUE...: setup.sh with the stubs and those variables exits with
# STATUS and its output matches PATTERN (grep -E); the apt-get calls are in $work/NAME/log.
run() {
  local name=$1 want=$2 pattern=$3 got
  shift 3
  local state=$work/$name
  mkdir -p "$state"
  : >"$state/log"
  cases=$((cases + 1))
  env -i PATH="$bin" STATE="$state" STUB_UID=0 MISSING= UNAVAILABLE= FAIL_INSTALL= LISTS_CURRENT= "$@" \
    "$BASH" "$setup" >"$state/out" 2>&1
  got=$?
  if [ "$got" -ne "$want" ] || ! grep -Eq -- "$pattern" "$state/out" ||
     grep -q '^unexpected:' "$state/log"; then
    failed=$((failed + 1))
    echo "FAIL: $name: setup.sh exited $got (want $want), output should match /$pattern/:"
    sed 's/^/    /' "$state/out" "$state/log"
  else
    echo "ok: $name"
  fi
}

# check NAME MESSAGE COMMAND...: COMMAND succeeds (MESSAGE says what failed).
check() {
  local name=$1 msg=$2
  shift 2
  cases=$((cases + 1))
  if "$@"; then echo "ok: $name: $msg"; else failed=$((failed + 1)); echo "FAIL: $name: $msg"; fi
}

run all-there 0 'already installed'
check all-there "no apt-get call" test ! -s "$work/all-there/log"

# A fresh image: the lists know nothing until apt-get update; the optional package is then found
# and installed by an apt-get of its own.
run fresh 0 'installed optional package libdnnl-dev' MISSING=libdnnl-dev
check fresh "apt-get update, then the optional install alone" \
  test "$(cat "$work/fresh/log")" = $'apt-get update -q\napt-get install -y -q --no-install-recommends libdnnl-dev'

# Not root, no sudo, only the optional package missing (the archive has it): a note, not a
# failure.
run no-root-optional 0 'optional packages not installed: libdnnl-dev' MISSING=libdnnl-dev \
  STUB_UID=1000 LISTS_CURRENT=1
# ... but a required one missing is an error.
run no-root-required 1 'missing packages: gcc' MISSING='gcc libdnnl-dev' STUB_UID=1000

# The optional install fails, or the archive does not have it: a warning, and the required
# packages are installed all the same.
run optional-fails 0 'warning: optional package libdnnl-dev did not install' \
  MISSING='gcc libdnnl-dev' FAIL_INSTALL=libdnnl-dev
check optional-fails "gcc installed by its own apt-get" \
  grep -qx 'apt-get install -y -q --no-install-recommends gcc' "$work/optional-fails/log"
run not-in-archive 0 'optional package libdnnl-dev is not available here' \
  MISSING=libdnnl-dev UNAVAILABLE=libdnnl-dev

# A required package that does not install is an error.
run required-fails 1 'setup: apt-get install failed' MISSING=gcc FAIL_INSTALL=gcc

# Through sudo when not root.
cat >"$work/sudo-stub" <<'STUB'
#!/bin/sh
echo "sudo $*" >>"$STATE/log"
exec "$@"
STUB
chmod +x "$work/sudo-stub"
ln -s "$work/sudo-stub" "$bin/sudo"
run sudo 0 'setup: done' MISSING='gcc libdnnl-dev' STUB_UID=1000
check sudo "both installs through sudo" test "$(grep -c '^sudo .*apt-get install' "$work/sudo/log")" -eq 2

echo "setup-packages: $((cases - failed)) of $cases cases held"
[ "$failed" -eq 0 ]
