# shellcheck shell=bash
# skip.sh — sourced by the shell tests (cli.sh, par.sh, get-data.sh): where the shared datasets
# are, and what a test does when something it needs is missing. The rule is the Check suites'
# (tests/testutil.c, tu_in_ci and tu_data_dir): without CI a missing dataset skips the cases that
# need it with a line "skipped: ...", which scripts/test.sh's summary lists; with CI set, CI has
# the datasets and the same is a failure.

# tu_in_ci: status 0 when CI is set, not empty, and neither "false" nor "0" (as tu_in_ci).
tu_in_ci() {
  case ${CI:-} in
    "" | false | 0) return 1 ;;
    *) return 0 ;;
  esac
}

# tu_data_root SOURCE_ROOT: prints the shared data root the tests read, as tu_data_root does:
# $HYPERTAPE_DATA when set and not empty, else SOURCE_ROOT/../shared/data.
tu_data_root() {
  if [ -n "${HYPERTAPE_DATA:-}" ]; then
    printf '%s\n' "$HYPERTAPE_DATA"
  else
    printf '%s\n' "$1/../shared/data"
  fi
}

# tu_skip WHAT [HINT]: WHAT says what is missing and which cases it leaves out. Without CI:
# prints "skipped: WHAT" and returns 0. With CI: prints "FAIL: WHAT (CI is set: ...; HINT)" and
# returns 1, for the caller to count as a failure. HINT defaults to setting HYPERTAPE_DATA.
tu_skip() {
  if tu_in_ci; then
    echo "FAIL: $1 (CI is set and CI has it: a failure, not a skip;" \
      "${2:-set HYPERTAPE_DATA to the shared data root})"
    return 1
  fi
  echo "skipped: $1"
}
