#!/usr/bin/env bash
# Sets up the machine, builds hypertape six ways (five when build/float has no oneDNN) and runs
# the test suite:
#
#   build/double  -Dreal=double, warnings are errors          built and tested
#   build/float   -Dreal=float,  warnings are errors          built and tested, and its one-shot
#                                                             hypergradients compared with the
#                                                             double build's (tests/oneshot_fvd.c);
#                                                             conv2d through oneDNN when
#                                                             libdnnl-dev is there (-Ddnnl=auto)
#   build/asan-float  the float build with ASan + UBSan       only when build/float has oneDNN:
#                                                             the test program, suites dnnl,
#                                                             kernels, omp and fastpaths
#                                                             (oneDNN's kernels, their per-thread
#                                                             caches freed, no leak; the float
#                                                             kernels on OpenMP threads)
#   build/asan    -Dreal=double, debug, AddressSanitizer +    built and tested, leaks detected
#                 UndefinedBehaviorSanitizer, warnings are errors
#   build/tsan    clang, -Dreal=double, ThreadSanitizer,      the test program only; runs the
#                 warnings are errors, OpenMP through         threads, tape, lifetime and par
#                 LLVM's libomp with its Archer tool          suites, and omp, kernels and
#                 (libomp-dev); without them, no OpenMP       fastpaths when OpenMP is on (omp:
#                 (-Domp=disabled) and a line says so         the kernels on 1-3 OpenMP threads)
#   build/fuzz    clang, -Dfuzz=true, ASan + UBSan            the libFuzzer targets of
#                                                             tests/fuzz, each run for
#                                                             $FUZZ_SECONDS (default 5)
#
# It ends with every Check summary line it found in the test logs, one line per shared dataset
# whose tests were skipped because its folder is missing, one line per group of a shell test's
# cases skipped for the same reason (tests/skip.sh; CI=true makes either a failure instead),
# then one line "N passed, N failed" summed over the test runs (four, five with asan-float) and
# the fuzz smoke run (each target one test; skipped checks in neither). A build that does not compile, or a test that
# fails without a Check summary, counts as (at least) one failure. A build/tsan without OpenMP
# (libomp or Archer missing) is one line of the summary, not a failure; with CI=true it is a
# failure (scripts/setup.sh, run first, installs libomp-dev). The exit status is non-zero if
# anything failed.
set -uo pipefail

# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$repo" || exit 1

passed=0
failed=0
report=()    # the summary's lines, printed at the end
skips=()     # "skipped: ..." lines of the tests (a missing dataset), one per check and build
test_skips=()  # "build/NAME: TEST: skipped: ..." lines of the shell tests (tests/skip.sh)

fail() {     # fail MESSAGE: one failure that is not a test's
  failed=$((failed + 1))
  report+=("$1")
}

step() {     # step TITLE: a banner with the time so far
  printf '\n=== %s (%ds so far)\n' "$1" "$SECONDS"
}

# build NAME [meson setup options...]: configures and compiles build/NAME; 0 on success.
build() {
  local name=$1 dir=build/$1
  shift
  step "configure $dir"
  if ! ht_configure "$dir" --werror "$@"; then
    fail "$dir: FAILED to configure (see above)"
    return 1
  fi
  step "compile $dir"
  if ! meson compile -C "$dir"; then
    fail "$dir: FAILED to compile (see above)"
    return 1
  fi
}

# tsan_openmp_check: whether build/tsan can run OpenMP under ThreadSanitizer, that is whether
# clang's -fopenmp links LLVM's libomp and its Archer tool (libarcher.so, of the same libomp-dev)
# is beside the libomp it links. Prints Archer's path and returns 0, or prints what is missing
# and returns 1.
tsan_openmp_check() {
  local dir libomp archer rc=1
  dir=$(mktemp -d) || { echo "no temporary folder for a test program"; return 1; }
  printf '#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n' > "$dir/p.c"
  if ! clang -fopenmp "$dir/p.c" -o "$dir/p" > "$dir/log" 2>&1; then
    echo "clang -fopenmp cannot build a program (no omp.h or no OpenMP runtime: libomp-dev):" \
      "$(head -n 1 "$dir/log")"
  elif ! libomp=$(ldd "$dir/p" | awk '$1 ~ /^libomp\.so/ { print $3; exit }') ||
       [ -z "$libomp" ]; then
    echo "clang -fopenmp does not link LLVM's libomp (links: $(ldd "$dir/p" | awk '/omp/ { print $1 }'))"
  else
    archer=$(dirname "$(realpath "$libomp")")/libarcher.so
    if [ -f "$archer" ]; then
      echo "$archer"
      rc=0
    else
      echo "no Archer ($archer) beside the libomp clang links (libomp-dev)"
    fi
  fi
  rm -rf "$dir"
  return "$rc"
}

# summarize NAME TESTLOG: reads a meson testlog.txt; prints the report lines of each test, then a
# last line "COUNTS passed failed skipped". A test whose output holds a Check summary counts its
# checks; one that fails after a clean Check summary (a leak or crash at exit) counts one failure
# more, and so does a Check summary of 0 checks (a suite name that matched nothing); one without
# a Check summary counts as one test (exit status 77 is meson's "skipped").
# A check that printed a line "skipped: ..." (tests/testutil.h, tu_data_dir) passed in Check's
# count but is counted as skipped here, and its line is printed prefixed "SKIP ". A shell test's
# lines "skipped: ..." (tests/skip.sh: cases left out for a missing dataset) are printed prefixed
# "SKIPT " and the test's name; the test counts by its exit status. Check's own lines naming a
# failed test are kept too, at most 20 per build.
summarize() {
  awk -v build="build/$1" '
    function flush() {
      if (name == "") return
      for (i = 1; i <= nskip; i++)
        print (nchk > 0 ? "SKIP " : "SKIPT " build ": " name ": ") skipline[i]
      if (nchk > 0) {
        P -= nskip; S += nskip
        if (result != "exit status 0" && f == 0) {
          F++; print build ": " name ": FAILED (" result ") after its Check summary"
        }
      } else if (result == "exit status 0") {
        P++; print build ": " name ": ok (no Check summary)"
      } else if (result == "exit status 77") {
        S++; print build ": " name ": skipped"
      } else {
        F++; print build ": " name ": FAILED (" result "), no Check summary"
      }
      name = ""
    }
    /^=+ [0-9]+\/[0-9]+ =+$/ { flush(); name = "?"; result = ""; nchk = 0; f = 0; nskip = 0; next }
    name != "" && /^skipped: / { skipline[++nskip] = $0; next }
    name != "" && /^test: / && name == "?" { sub(/^test: +/, ""); name = $0; next }
    name != "" && /^result: / && result == "" { sub(/^result: +/, ""); result = $0; next }
    # Anywhere on the line: with no check run, Check prints it right after "Running suite(s):".
    name != "" && match($0, /[0-9]+%: Checks: [0-9]+, Failures: [0-9]+, Errors: [0-9]+$/) {
      line = substr($0, RSTART)
      split(line, n, /[^0-9]+/)    # n[1] percent, n[2] checks, n[3] failures, n[4] errors
      nchk++; f += n[3] + n[4]; P += n[2] - n[3] - n[4]; F += n[3] + n[4]
      print build ": " name
      print line
      if (n[2] == 0) { f++; F++; print build ": " name ": FAILED: no check ran" }
      next
    }
    # the Check lines that say which test failed where ("file.c:12:F:tcase:test:0: message")
    name != "" && nchk > 0 && /^[^ :]+:[0-9]+:[FE]:/ && ++shown <= 20 { print }
    END { flush(); printf "COUNTS %d %d %d\n", P, F, S }
  ' "$2"
}

# run_tests NAME TIMEOUT_MULTIPLIER [VAR=value...] [-- TEST...]: runs meson test in build/NAME
# (only the named tests, if any) with those variables in its environment, and adds up its results.
run_tests() {
  local name=$1 dir=build/$1 multiplier=$2 rc out counts p f s line vars=() tests=()
  shift 2
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do vars+=("$1"); shift; done
  [ $# -gt 0 ] && shift && tests=("$@")
  step "test $dir${tests[*]:+ (${tests[*]})}"
  rm -f "$dir"/meson-logs/testlog*
  env "${vars[@]}" meson test -C "$dir" --no-rebuild --print-errorlogs --num-processes 2 \
    --timeout-multiplier "$multiplier" "${tests[@]}"
  rc=$?
  if [ ! -f "$dir/meson-logs/testlog.txt" ]; then
    fail "$dir: no test ran (meson test exited with $rc and wrote no test log)"
    return
  fi
  out=$(summarize "$name" "$dir/meson-logs/testlog.txt")
  counts=$(tail -n 1 <<<"$out")
  read -r _ p f s <<<"$counts"
  if [ "$out" != "$counts" ]; then
    while IFS= read -r line; do
      case $line in
        "SKIP "*) skips+=("${line#SKIP }") ;;
        "SKIPT "*) test_skips+=("${line#SKIPT }") ;;
        *) report+=("$line") ;;
      esac
    done < <(sed '$d' <<<"$out")
  fi
  passed=$((passed + p))
  failed=$((failed + f))
  if [ "$p" -eq 0 ] && [ "$f" -eq 0 ] && [ "$s" -eq 0 ]; then
    fail "$dir: no test ran"
  elif [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    fail "$dir: meson test exited with $rc"
  fi
}

# Check reads these from the environment to pick or filter the tests it runs (CK_VERBOSITY=silent
# drops the summary line this script counts): one left in the caller's shell would run fewer
# checks, or none, and still pass. meson sets CK_RUN_SUITE itself for each suite's test
# (tests/meson.build), so that one is left alone.
unset CK_RUN_CASE CK_INCLUDE_TAGS CK_EXCLUDE_TAGS CK_VERBOSITY CK_FORK CK_DEFAULT_TIMEOUT \
  CK_TIMEOUT_MULTIPLIER CK_LOG_FILE_NAME CK_XML_LOG_FILE_NAME CK_TAP_LOG_FILE_NAME CK_MAX_MSG_SIZE

step "setup"
bash scripts/setup.sh || fail "scripts/setup.sh FAILED (see above)"

if build double -Dreal=double; then
  run_tests double 1
fi

# ---- the float build: its suite, and its one-shot hypergradients against the double build's.
# build/double writes the reference (tests/oneshot_fvd.c, %.17g); the float build's
# float-vs-double tests read it from HYPERTAPE_DOUBLE_REF and fail if it is missing.
fvd_ref=$repo/build/double/oneshot-fvd-reference.txt
rm -f "$fvd_ref"
if [ -x build/double/tests/oneshot-fvd ] &&
  ! OPENBLAS_NUM_THREADS=1 build/double/tests/oneshot-fvd --print > "$fvd_ref"; then
  fail "build/double: oneshot-fvd --print FAILED: no reference for the float build"
  rm -f "$fvd_ref"
fi
if build float -Dreal=float -Ddnnl=auto; then
  run_tests float 1 HYPERTAPE_DOUBLE_REF="$fvd_ref"
fi

# oneDNN is only in the float build, which build/asan (double) does not see: its code, and the
# thread caches it frees at thread exit, under the sanitizers in a build of the tests alone.
if grep -q '^#define HT_DNNL 1' build/float/hypertape_config.h 2>/dev/null; then
  step "configure build/asan-float"
  if ht_configure build/asan-float --werror -Dreal=float -Ddnnl=enabled --buildtype=debug \
       -Db_sanitize=address,undefined -Db_lundef=false; then
    step "compile build/asan-float"
    if meson compile -C build/asan-float tests/hypertape-tests; then
      run_tests asan-float 3 ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
        UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 -- dnnl kernels omp fastpaths
    else
      fail "build/asan-float: FAILED to compile (see above)"
    fi
  else
    fail "build/asan-float: FAILED to configure (see above)"
  fi
fi

# Sanitized code runs several times slower: give each test three times its timeout.
if build asan -Dreal=double --buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false; then
  run_tests asan 3 \
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
fi

# ThreadSanitizer (clang) on the suites that run sweeps on several threads at once: threads (4
# threads sharing one λ) and tape (a sweep on a second thread), lifetime (leaves freed on 4
# threads into the process-wide FIFO of freed values), and on the programs' worker pool (par);
# and on the kernels spread over OpenMP threads (ops/threads.c): omp runs every kernel family
# (elementwise, broadcast, unary, pooling, batch-norm) at 1, 2 and 3 threads (148 parallel
# regions). kernels and fastpaths run the same kernels, on one thread here (tests/meson.build
# sets OpenBLAS's count to 1, which caps the kernels'), so they add little but cost little (7 s).
# The others run on one thread, where TSan has nothing to find. OpenBLAS is not instrumented:
# one BLAS thread (common.sh sets it; said again here). halt_on_error makes a report end the
# (forked) test with exit code 66, so the suite fails and so does this script. history_size=7
# (the most) keeps each thread's recent accesses long enough to name both sides of a race: with
# the default, TSan drops a report whose earlier access it can no longer trace, and a race put
# back in ad/grad.c on purpose was caught in 2 runs of 5 (with 7: 5 of 5).
#
# OpenMP: gcc's libgomp is not built with TSan, so the hand-over between a parallel region's
# threads (its barriers) is invisible to it, and every kernel spread over OpenMP threads would
# be reported as racing with what the next region or the caller does (measured on libomp with
# Archer turned off, OMP_TOOL=disabled: 277 reports in the omp suite's first 4 minutes, when it
# was stopped; with Archer, none). So this build uses clang's
# -fopenmp, which links LLVM's libomp, and starts Archer, libomp's OMPT tool that tells TSan
# about every barrier, task and lock (OMP_TOOL_LIBRARIES names it, rather than relying on
# libomp finding it on the library path). ignore_noninstrumented_modules=1 is what libomp asks
# for: TSan then ignores the memset/memcpy/mutex calls made by libraries it cannot see into
# (libomp's own mutexes, and the omp suite's OpenBLAS at 3 threads clearing a gemm's output),
# whose synchronisation it cannot see either; our code is all instrumented. With both, a race
# put into a kernel on purpose (a counter shared by binary_range's threads, ops/elementwise.c)
# was reported in 5 runs of 5, and ranges of ops_for overlapping by one index were reported too.
# When clang's -fopenmp does not link libomp, or Archer is missing (no libomp-dev), the build
# falls back to -Domp=disabled and the first four suites, with a line in the summary; under CI
# it is a failure instead, since scripts/setup.sh (run first) installs libomp-dev.
# shellcheck source=tests/skip.sh
source tests/skip.sh    # tu_in_ci
tsan_omp=-Domp=disabled
tsan_env=()
tsan_suites=(threads tape lifetime par)
tsan_why=$(tsan_openmp_check) && {
  tsan_omp=-Domp=enabled
  tsan_env=(OMP_TOOL_LIBRARIES="$tsan_why" OMP_NUM_THREADS=2)
  tsan_suites+=(omp kernels fastpaths)
  tsan_why=
}
if [ -n "$tsan_why" ]; then
  if tu_in_ci; then
    fail "build/tsan: FAILED: no OpenMP under ThreadSanitizer: $tsan_why (CI is set: CI runs scripts/setup.sh, which installs libomp-dev)"
  else
    report+=("build/tsan: built without OpenMP, the OpenMP kernels unchecked for races: $tsan_why (install libomp-dev: scripts/setup.sh)")
  fi
  printf 'build/tsan: without OpenMP: %s\n' "$tsan_why"
fi
step "configure build/tsan"
if CC=clang ht_configure build/tsan --werror -Dreal=double --buildtype=debugoptimized \
     -Db_sanitize=thread -Db_lundef=false "$tsan_omp"; then
  step "compile build/tsan"
  if meson compile -C build/tsan tests/hypertape-tests; then
    run_tests tsan 3 OPENBLAS_NUM_THREADS=1 "${tsan_env[@]}" \
      TSAN_OPTIONS=halt_on_error=1:exitcode=66:history_size=7:ignore_noninstrumented_modules=1 \
      -- "${tsan_suites[@]}"
  else
    fail "build/tsan: FAILED to compile (see above)"
  fi
else
  fail "build/tsan: FAILED to configure (see above)"
fi

# The fuzz targets (tests/fuzz): a smoke run of each, FUZZ_SECONDS apiece (a longer run by hand:
# tests/fuzz/run.sh build/fuzz 600).  A target that ran clean counts as one test passed; a
# crash (or UB, a leak, a timeout, an allocation over 512 MB) as one failed.
if CC=clang build fuzz -Dfuzz=true -Dtests=false -Db_sanitize=address,undefined \
     -Db_lundef=false; then
  step "fuzz smoke run (${FUZZ_SECONDS:-5}s per target)"
  fuzz_out=$(bash tests/fuzz/run.sh build/fuzz "${FUZZ_SECONDS:-5}" 2>&1)
  fuzz_rc=$?
  printf '%s\n' "$fuzz_out"
  fuzz_ok=$(grep -c '^fuzz-.*no crash$' <<<"$fuzz_out")
  fuzz_bad=$(grep -c '^fuzz-.*CRASHED' <<<"$fuzz_out")
  passed=$((passed + fuzz_ok))
  failed=$((failed + fuzz_bad))
  report+=("build/fuzz: $(tail -n 1 <<<"$fuzz_out")")
  while IFS= read -r line; do report+=("build/fuzz: $line"); done < <(grep '^fuzz-.*CRASHED' <<<"$fuzz_out")
  if [ "$fuzz_rc" -ne 0 ] && [ "$fuzz_bad" -eq 0 ]; then
    fail "build/fuzz: tests/fuzz/run.sh exited with $fuzz_rc"
  fi
fi

printf '\n=== summary (%ds in all)\n' "$SECONDS"
for line in "${report[@]}"; do printf '%s\n' "$line"; done
if [ "${#skips[@]}" -gt 0 ]; then  # one line per missing folder, with its checks over all builds
  printf '%s\n' "${skips[@]}" | sort | uniq -c | sed -E 's/^ *([0-9]+) /\1 checks /'
fi
for line in "${test_skips[@]}"; do printf '%s\n' "$line"; done
printf '%d passed, %d failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]
