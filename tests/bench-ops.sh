#!/usr/bin/env bash
# bench-ops.sh — bench-ops --oneshot with its tasks on worker threads computes what the program
# computes whatever the number of workers: `--dump` writes, besides the first task's
# hypergradients, every K's first mean hypergradient (mean_K*) and λ after the last Adam update
# (lam_K*); these files must be the same bytes at --threads 1, 2 and 3 (a meta-batch of 3, so two
# workers get unequal shares) and without --threads at one OpenBLAS thread (the tasks in turn).
# Also: the dump is not empty and differs between Ks (the comparison is not vacuous), the
# flag's misuse exits 2, and --tape's lean step keeps at most half of the step.  Registered by tests/meson.build as the test `bench-ops`, with the
# build's experiments folder as $1.  Prints one line per case; exits 1 if any case went wrong.
set -uo pipefail

bin=$1/bench-ops
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OPENBLAS_NUM_THREADS=1
failed=0
cases=0

ok() { cases=$((cases + 1)); echo "ok: $*"; }
fail() { cases=$((cases + 1)); failed=$((failed + 1)); echo "FAIL: $*"; }

small=(--oneshot --channels 8 --T 5 --K 1,5 --repeats 2 --meta-batch 3)

# run NAME ARGS...: bench-ops into $work/NAME.
run() {
  local name=$1
  shift
  if ! "$bin" "${small[@]}" --dump "$work/$name" "$@" >"$work/$name.out" 2>&1; then
    fail "bench-ops ${small[*]} $* exited with an error:"
    tail -5 "$work/$name.out" | sed 's/^/    /'
    return 1
  fi
}

run t1 --threads 1 && run t2 --threads 2 && run t3 --threads 3 && run seq || {
  echo "$cases cases, $failed failed"
  exit 1
}

n=$(ls "$work/t1" | grep -c '^\(mean\|lam\)_K[0-9]*_[0-9]*\.f64$')
if [ "$n" -ge 4 ] && grep -q '^mean_K5_00 ' "$work/t1/manifest.txt"; then
  ok "the dump holds $n mean_K*/lam_K* files"
else
  fail "the dump holds $n mean_K*/lam_K* files (want each K's, listed in the manifest)"
fi
if cmp -s "$work/t1/mean_K1_00.f64" "$work/t1/mean_K5_00.f64"; then
  fail "mean_K1_00 and mean_K5_00 are the same bytes: the dump does not follow K"
else
  ok "mean_K1_00 and mean_K5_00 differ"
fi

for other in t2 t3 seq; do
  bad=0
  for f in "$work"/t1/manifest.txt "$work"/t1/*.f64; do
    cmp -s "$f" "$work/$other/$(basename "$f")" || { bad=1; echo "    differs: $(basename "$f")"; }
  done
  [ "$(ls "$work/t1" | wc -l)" -eq "$(ls "$work/$other" | wc -l)" ] || bad=1
  case $other in
    seq) what="without --threads (tasks in turn, 1 OpenBLAS thread)" ;;
    *) what="--threads ${other#t}" ;;
  esac
  if [ "$bad" -eq 0 ]; then ok "the dump at $what is --threads 1's, byte for byte"
  else fail "the dump at $what differs from --threads 1's"
  fi
done

out=$("$bin" --threads 2 2>&1)
status=$?
if [ "$status" -eq 2 ] && [[ "$out" == *"--threads"*"go with --oneshot"* ]]; then
  ok "--threads without --oneshot: exit 2"
else
  fail "--threads without --oneshot: status $status, output: $out"
fi

# --tape records one step of each program's own problem; a lean tape must give back at least
# half of it (the ops' ad_op.reads declarations at work: 0.32 and 0.36 of the step are kept).
out=$("$bin" --tape 2>&1)
status=$?
lines=$(grep -c 'bytes on the tape for the step' <<<"$out")
halves=$(awk '/bytes on the tape for the step/ { for (i = 1; i < NF; i++) if ($(i + 1) == "bytes") total = $i;
                                                  for (i = 1; i < NF; i++) if ($(i + 1) == "once") lean = $i;
                                                  if (lean > 0 && 2 * lean <= total) n++ } END { print n + 0 }' <<<"$out")
if [ "$status" -eq 0 ] && [ "$lines" -eq 2 ] && [ "$halves" -eq 2 ]; then
  ok "--tape: two steps, each kept at most half on a lean tape"
else
  fail "--tape: status $status, $lines steps, $halves at most half on a lean tape; output: $out"
fi

echo "$cases cases, $failed failed"
[ "$failed" -eq 0 ]
