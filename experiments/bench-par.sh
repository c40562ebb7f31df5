#!/usr/bin/env bash
# bench-par.sh — seconds per one-shot hyper-iteration (oneshot: 64 channels, T = 50, 10-RMD, a
# meta-batch of 4 tasks) at 1 thread, at 2 threads, and on 2 MPI ranks of 1 thread each, run in
# turn round after round (1, 2, 2×1, 1, 2, 2×1, ...) so that a change in the machine's load falls
# on all three alike; then the median seconds of each, the speed-up over 1 thread (the median of
# the rounds' ratios) and the efficiency (speed-up / workers).
#
#   bash experiments/bench-par.sh [BUILD [ROUNDS [ITERS]]]
#
# BUILD (default build/release) holds experiments/oneshot; ROUNDS (default 3) rounds of ITERS
# (default 4) hyper-iterations per run. The seconds are the program's own (train_K10.csv,
# iter_seconds: the meta-batch's hypergradients, their sum and the Adam step), from the second
# hyper-iteration on (the first pays for first touches of memory); data loading, validation and
# the meta-test are not in them. BLAS runs on one thread in every mode (the program sets it).
# Needs Omniglot ($HYPERTAPE_DATA/omniglot or ../shared/data/omniglot) and, for the third mode,
# mpirun (as root: OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 are set here).
# Prints the load (uptime) before and after: on a shared machine, quote it with the numbers.
set -uo pipefail

build=${1:-build/release}
rounds=${2:-3}
iters=${3:-4}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export HYPERTAPE_DATA=${HYPERTAPE_DATA:-$here/../shared/data}
if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
bin=$build/experiments/oneshot
[ -x "$bin" ] || { echo "bench-par: no $bin (meson compile -C $build)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

flags=(--channels 64 --T 50 --K 10 --meta-batch 4 --hyper-iters "$iters" --eval-every "$iters"
       --val-tasks 1 --test-tasks 1 --relerr-tasks 0 --cos-every 0 --no-plots)
names=("1 thread" "2 threads" "2 ranks x 1 thread")
workers=(1 2 2)
cmds=("$bin ${flags[*]} --threads 1"
      "$bin ${flags[*]} --threads 2"
      "mpirun -n 2 --mca btl self,vader $bin ${flags[*]} --threads 1")

echo "load before: $(uptime)"
echo "oneshot ${flags[*]}; $rounds rounds"
for ((r = 1; r <= rounds; r++)); do
  for m in 0 1 2; do
    out=$work/r$r-m$m
    # shellcheck disable=SC2086 # the command is words on purpose
    if ! ${cmds[$m]} --out "$out" >"$out.log" 2>&1; then
      echo "bench-par: ${names[$m]} failed:" >&2
      tail -5 "$out.log" >&2
      exit 1
    fi
    # iter_seconds of hyper-iterations 2.. (column 3 of train_K10.csv)
    awk -F, 'NR > 2 { print $3 }' "$out/train_K10.csv" >"$work/r$r-m$m.s"
    printf '  round %d, %-20s median %.3f s per hyper-iteration\n' "$r" "${names[$m]}" \
      "$(sort -g "$work/r$r-m$m.s" | awk '{ a[NR] = $1 } END { print NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }')"
  done
done
echo "load after:  $(uptime)"

median() { sort -g | awk '{ a[NR] = $1 } END { print NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
printf '\n| mode | s / hyper-iteration (median, min-max) | speed-up | efficiency |\n'
printf '|---|---:|---:|---:|\n'
for m in 0 1 2; do
  all=$(cat "$work"/r*-m$m.s | median)
  lo=$(cat "$work"/r*-m$m.s | sort -g | head -1)
  hi=$(cat "$work"/r*-m$m.s | sort -g | tail -1)
  # the speed-up: per round, the ratio of the medians (1 thread / this mode), then their median
  sp=$(for ((r = 1; r <= rounds; r++)); do
         a=$(median <"$work/r$r-m0.s")
         b=$(median <"$work/r$r-m$m.s")
         awk -v a="$a" -v b="$b" 'BEGIN { print a / b }'
       done | median)
  printf '| %s | %.3f (%.3f-%.3f) | %.2fx | %.0f %% |\n' "${names[$m]}" "$all" "$lo" "$hi" "$sp" \
    "$(awk -v s="$sp" -v w="${workers[$m]}" 'BEGIN { print 100 * s / w }')"
done
