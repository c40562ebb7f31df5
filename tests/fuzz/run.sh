#!/usr/bin/env bash
# Runs the libFuzzer targets of a -Dfuzz=true build, each for SECONDS, and
# says for each how many inputs it ran and whether it crashed.
#
#   tests/fuzz/run.sh BUILD SECONDS [TARGET...]      (TARGET: idx, png, ... ; default all)
#
# BUILD is a fuzz build, configured and compiled:
#   CC=clang meson setup build/fuzz -Dfuzz=true -Dtests=false \
#       -Db_sanitize=address,undefined -Db_lundef=false
#   meson compile -C build/fuzz fuzz
# scripts/test.sh does this and runs each target for a few seconds (CI's
# smoke run); a longer run by hand, e.g. 10 minutes each:
#   nice tests/fuzz/run.sh build/fuzz 600
#
# For each target fuzz-NAME it
#   - writes the seeds (fuzz-seeds, from the shared data when $HYPERTAPE_DATA
#     names them) into BUILD/fuzz-seeds/NAME;
#   - replays every input in tests/fuzz/regress/NAME/ (what earlier runs found,
#     each fixed): any crash there fails at once;
#   - fuzzes (with the dictionary tests/fuzz/NAME.dict when there is one:
#     libFuzzer's -dict, e.g. png.dict's chunk names), growing the corpus BUILD/fuzz-corpus/NAME (kept between runs);
#     a crash, leak, undefined behaviour, timeout (> 10 s for one input) or
#     allocation over 512 MB leaves its input in BUILD/fuzz-artifacts/NAME/.
# The last line is "fuzz: N targets, N runs, N crashed"; the exit status is
# 1 when one crashed (or could not run), 2 for bad usage.
set -uo pipefail

if [ $# -lt 2 ] || ! [[ $2 =~ ^[0-9]+$ ]] || [ ! -d "$1" ]; then
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
build=$(cd "$1" && pwd)
seconds=$2
shift 2
src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin="$build/tests/fuzz"

if [ $# -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for exe in "$bin"/fuzz-*; do
    name=${exe##*/fuzz-}
    [ -f "$exe" ] && [ -x "$exe" ] && [ "$name" != seeds ] && targets+=("$name")
  done
fi
if [ ! -x "$bin/fuzz-seeds" ] || [ ${#targets[@]} -eq 0 ]; then
  echo "fuzz: no targets in $bin (meson compile -C $1 fuzz)" >&2
  exit 1
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
rm -rf "$build/fuzz-seeds"
"$bin/fuzz-seeds" "$build/fuzz-seeds" || { echo "fuzz: fuzz-seeds failed" >&2; exit 1; }

crashed=0 total_runs=0
for t in "${targets[@]}"; do
  exe="$bin/fuzz-$t"
  corpus="$build/fuzz-corpus/$t" art="$build/fuzz-artifacts/$t" log="$build/fuzz-logs/$t.log"
  mkdir -p "$corpus" "$art" "$build/fuzz-seeds/$t" "${log%/*}"
  if [ ! -x "$exe" ]; then
    echo "fuzz-$t: no such target"
    crashed=$((crashed + 1))
    continue
  fi
  limits=(-timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512)
  dict=()
  [ -f "$src/$t.dict" ] && dict=(-dict="$src/$t.dict")
  regress=("$src/regress/$t"/*)
  if [ -e "${regress[0]}" ]; then
    if ! "$exe" "${limits[@]}" "${regress[@]}" >"$log" 2>&1; then
      echo "fuzz-$t: CRASHED on a regression input (tests/fuzz/regress/$t); see $log"
      tail -n 20 "$log"
      crashed=$((crashed + 1))
      continue
    fi
  fi
  "$exe" -max_total_time="$seconds" "${limits[@]}" "${dict[@]}" -print_final_stats=1 -artifact_prefix="$art/" "$corpus" "$build/fuzz-seeds/$t" >"$log" 2>&1
  rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
  total_runs=$((total_runs + ${runs:-0}))
  if [ $rc -ne 0 ]; then
    crashed=$((crashed + 1))
    echo "fuzz-$t: CRASHED (exit $rc) after ${runs:-?} runs; input in $art/; log $log"
    grep -m 1 -E 'ERROR|runtime error|fuzz: |out-of-memory|timeout' "$log"
  else
    nreg=0
    [ -e "${regress[0]}" ] && nreg=${#regress[@]}
    echo "fuzz-$t: ${runs:-?} runs in ${seconds}s, ${cov:-cov: ?}, corpus $(ls "$corpus" | wc -l) inputs, $nreg regression inputs, no crash"
  fi
done
echo "fuzz: ${#targets[@]} targets, $total_runs runs, $crashed crashed"
[ $crashed -eq 0 ]
