#!/usr/bin/env bash
# par.sh — the programs' parallel runs give the numbers of the one-thread run, bit for bit:
# oneshot (meta-batch, meta-validation and meta-test tasks), taskinteract (trials) and hyperclean
# (Ks) at --threads 1, 2 (and 3), then under `mpirun -n 2` (and -n 3), on the local machine only.
# Compared: every CSV file, column by column, without the columns whose header names a time or
# a memory size (*seconds*, *_s, s_*, *sec*, *rss*), and oneshot's checkpoints from their first
# field to their timings (the run's identity, the iteration, λ and the RNG, every bit). oneshot is also
# stopped after 2 hyper-iterations and resumed to 4 under mpirun, against the same in one
# process. A oneshot run whose first configuration diverges (on the last rank's task) must record
# it as failed and run the next one alike at 1 and 2 threads and under mpirun -n 2 and -n 3 (exit
# status 1, the message once, Table 4's failed row, the same CSVs); hyperclean and taskinteract,
# which fail as a whole when a K or a trial diverges, must fail alike under mpirun (exit status 1,
# the message once, no results).
#
# Registered by tests/meson.build as the test `par-programs`: $1 the build's experiments folder,
# $2 the source root, $3 'mpi' when the build has MPI, $4 'short' in a sanitized build (several
# times slower): there only oneshot at 1 and 3 threads, hyperclean at 1 and 2, and oneshot under
# mpirun -n 2, stopped and resumed too, and the diverged oneshot run at 1 thread and mpirun -n 2.
# Without the Omniglot and MNIST folders: exit status 77 (skipped) after a line "skipped: ...",
# or exit status 1 when CI is set (tests/skip.sh); without MPI in the build or mpirun on PATH,
# the MPI part alike: a line "skipped: ...", or a failure when CI is set.
set -uo pipefail

bin=$1
cd "$2" || exit 1
mpi=${3:-nompi}
short=${4:-full}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OPENBLAS_NUM_THREADS=1
failed=0
cases=0

# shellcheck source=tests/skip.sh
source tests/skip.sh
data=$(tu_data_root "$PWD")
if [ ! -f "$data/omniglot/images_background.zip" ] || [ ! -f "$data/mnist/train-images-idx3-ubyte.gz" ]; then
  tu_skip "no Omniglot or MNIST in $data: every case" || exit 1
  exit 77
fi
export HYPERTAPE_DATA=$data

# strip FILE: the CSV without its timing and memory columns.
strip() {
  awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) keep[i] = $i !~ /seconds|_s$|^s_|sec|rss/ }
           { line = ""; sep = ""
             for (i = 1; i <= NF; i++) if (keep[i]) { line = line sep $i; sep = "," }
             print line }' "$1"
}

# ckpt_head FILE: a checkpoint's fields up to its seconds (the header line, with its length and
# CRC, depends on the timings stored after them): the run, the iteration, λ and the RNG.
ckpt_head() {
  local at
  at=$(grep -obUaP '\x07seconds\x02' "$1" | head -1 | cut -d: -f1)
  [ -n "$at" ] && head -c "$at" "$1" | tail -n +2
}

# same REF DIR LABEL: every CSV and checkpoint of REF is in DIR with the same numbers.
same() {
  local ref=$1 dir=$2 label=$3 f name bad=""
  cases=$((cases + 1))
  for f in $(cd "$ref" && find . -name '*.csv' -o -name 'ckpt_*.bin' | sort); do
    name=${f#./}
    if [ ! -f "$dir/$name" ]; then
      bad="$bad $name(missing)"
    elif [[ $name == *.csv ]]; then
      cmp -s <(strip "$ref/$name") <(strip "$dir/$name") || bad="$bad $name"
    else
      local a b
      a=$(ckpt_head "$ref/$name" | od -An -tx1 | tr -d ' \n')
      b=$(ckpt_head "$dir/$name" | od -An -tx1 | tr -d ' \n')
      { [ -n "$a" ] && [ "$a" = "$b" ]; } || bad="$bad $name"
    fi
  done
  if [ -z "$(cd "$ref" && find . -name '*.csv')" ]; then bad="$bad (no CSV in $ref)"; fi
  if [ -n "$bad" ]; then
    echo "FAIL: $label: differs from the one-thread run:$bad"
    failed=$((failed + 1))
  else
    echo "ok: $label"
  fi
}

# run LOG COMMAND...: runs it; a failure is reported with the end of its output.
run() {
  local log=$1 status
  shift
  "$@" >"$log" 2>&1
  status=$?
  if [ "$status" -ne 0 ]; then
    echo "FAIL: $* -> status $status:"
    # the messages (any rank's, a sanitizer's), then the end of the output
    grep -E 'rank [0-9]+:|runtime error|ERROR: |: error|failed' "$log" | head -10 | sed 's/^/    /'
    tail -5 "$log" | sed 's/^/    /'
    failed=$((failed + 1))
    return 1
  fi
}

# A meta-batch of 4 on 2 ranks: a plain allreduce of the ranks' partial sums would change the
# bits here (checked: it does), the ordered fold does not.
os=(--channels 4 --T 3 --K 1,full --meta-batch 4 --val-tasks 3 --test-tasks 5 --relerr-tasks 1
    --hyper-iters 4 --cos-every 1 --eval-every 2 --no-plots)
ti=(--dataset omniglot --chars 5 --trials 3 --max-iters 4 --T 10 --K 1,10 --fig-every 2
    --eval-every 2)
hc=(--T 5 --hyper-iters 3 --n-train 100 --n-val 100 --K 1,2,5 --exact-every 1 --no-plots)

# A diverged configuration is recorded as failed and the next one runs, whatever the transport.
# At T = 3 with --step0 1.2 --rho0 1 the inner loss of 1-RMD's 4th task of the first meta-batch
# rises from 1.6 to 53 (the watch stops at 10 times; tasks 1-3 stay below): a task of the last
# rank under mpirun -n 2 and -n 3, which alone sees the divergence. The short horizon (T = 1)
# after it trains. (Before, under mpirun the divergence ended every rank: no short horizon, no
# Table 4.) With --lr 3 instead, 1-RMD's meta-validation loss rises from 1.6 to 514 after
# hyper-iteration 4 (the kind of divergence of the 5000-iteration run), which every rank
# computes from the same numbers.
dv=(--channels 4 --T 3 --K 1,short --meta-batch 4 --val-tasks 3 --test-tasks 5 --relerr-tasks 1
    --hyper-iters 3 --no-plots --step0 1.2 --rho0 1)
dv_text='1-RMD, hyper-iteration 1: task 4 of the meta-batch: diverged: the inner loss rose'
dvv=(--channels 4 --T 3 --K 1,short --meta-batch 4 --val-tasks 3 --test-tasks 5 --relerr-tasks 1
     --hyper-iters 6 --eval-every 1 --no-plots --lr 3)
dvv_text='1-RMD, meta-validation after hyper-iteration [0-9]*: diverged: the validation loss rose'

# diverged LOG DIR LABEL TEXT COMMAND...: runs a "${dv[@]}" or "${dvv[@]}" command writing into
# DIR; it must exit 1, print the divergence message (the regular expression TEXT) once, write
# Table 4 with 1-RMD failed and the short horizon's row, and the short horizon's and the
# relative-error curves' files.
diverged() {
  local log=$1 dir=$2 label=$3 text=$4 status n f bad=""
  shift 4
  cases=$((cases + 1))
  "$@" >"$log" 2>&1
  status=$?
  [ "$status" -eq 1 ] || bad="$bad exit status $status, not 1;"
  n=$(grep -c -- "$text" "$log")
  [ "$n" -eq 1 ] || bad="$bad the divergence message printed $n times, not once;"
  grep -q '^| 1-RMD | (failed) |' "$dir/table4.md" 2>/dev/null || bad="$bad no '1-RMD (failed)' row in table4.md;"
  grep -q '^| Short horizon (T=1) | [0-9]' "$dir/table4.md" 2>/dev/null ||
    bad="$bad no short-horizon row in table4.md;"
  for f in train_short.csv val_short.csv ckpt_short.bin table4.csv relerr.csv; do
    [ -s "$dir/$f" ] || bad="$bad no $f;"
  done
  if [ -n "$bad" ]; then
    echo "FAIL: $label:$bad"
    grep -E 'rank [0-9]+:|runtime error|ERROR: |diverged|failed' "$log" | head -10 | sed 's/^/    /'
    tail -3 "$log" | sed 's/^/    /'
    failed=$((failed + 1))
  else
    echo "ok: $label: 1-RMD recorded as diverged, the short horizon run after it, exit status 1"
  fi
}

# fails_alike LOG DIR LABEL TEXT COMMAND...: a run whose every configuration diverges (hyperclean,
# taskinteract: one diverged K or trial fails the run) exits 1, prints TEXT once and leaves no
# result in DIR, under mpirun as in one process (a failure the ranks agreed on, ended without
# MPI_Abort).
fails_alike() {
  local log=$1 dir=$2 label=$3 text=$4 status n left bad=""
  shift 4
  cases=$((cases + 1))
  "$@" >"$log" 2>&1
  status=$?
  [ "$status" -eq 1 ] || bad="$bad exit status $status, not 1;"
  n=$(grep -cF -- "$text" "$log")
  [ "$n" -eq 1 ] || bad="$bad '$text' printed $n times, not once;"
  left=$(find "$dir" -type f ! -name .lock 2>/dev/null)
  [ -z "$left" ] || bad="$bad results left: $left;"
  if [ -n "$bad" ]; then
    echo "FAIL: $label:$bad"
    tail -5 "$log" | sed 's/^/    /'
    failed=$((failed + 1))
  else
    echo "ok: $label: exit status 1, the message once, no results"
  fi
}
ti_dv=("${ti[@]}" --gamma 4)
ti_dv_text="hyper-iterations: 1-RMD, trial 0, τ = 0: diverged: the inner loss rose"
hc_dv=("${hc[@]}" --gamma 1e6)
hc_dv_text="failed (see the message above)"

# ---- threads ------------------------------------------------------------------
# 4 tasks on 3 threads (workers with 2 tasks and with 1), 3 trials on 2, 3 Ks on 2 or 3.
for n in 1 3; do
  run "$work/os$n.log" "$bin/oneshot" "${os[@]}" --threads "$n" --out "$work/os$n"
done
for n in 1 2; do
  run "$work/hc$n.log" "$bin/hyperclean" "${hc[@]}" --threads "$n" --out "$work/hc$n"
done
same "$work/os1" "$work/os3" "oneshot --threads 3"
same "$work/hc1" "$work/hc2" "hyperclean --threads 2"
diverged "$work/dv1.log" "$work/dv1" "oneshot, a diverged configuration, --threads 1" \
  "$dv_text" "$bin/oneshot" "${dv[@]}" --threads 1 --out "$work/dv1"
if [ "$short" != short ]; then
  diverged "$work/dv2.log" "$work/dv2" "oneshot, a diverged configuration, --threads 2" \
    "$dv_text" "$bin/oneshot" "${dv[@]}" --threads 2 --out "$work/dv2"
  same "$work/dv1" "$work/dv2" "oneshot, a diverged configuration, --threads 2"
  diverged "$work/dvv1.log" "$work/dvv1" "oneshot, a diverged validation loss, --threads 1" \
    "$dvv_text" "$bin/oneshot" "${dvv[@]}" --threads 1 --out "$work/dvv1"
  fails_alike "$work/tidv2.log" "$work/tidv2" "taskinteract --threads 2, diverged" \
    "$ti_dv_text" "$bin/taskinteract" "${ti_dv[@]}" --threads 2 --out "$work/tidv2"
  fails_alike "$work/hcdv3.log" "$work/hcdv3" "hyperclean --threads 3, diverged" \
    "$hc_dv_text" "$bin/hyperclean" "${hc_dv[@]}" --threads 3 --out "$work/hcdv3"

  run "$work/os2.log" "$bin/oneshot" "${os[@]}" --threads 2 --out "$work/os2"
  for n in 1 2; do
    run "$work/ti$n.log" "$bin/taskinteract" "${ti[@]}" --threads "$n" --out "$work/ti$n"
  done
  run "$work/hcnf.log" "$bin/hyperclean" "${hc[@]}" --threads 3 --no-fork --out "$work/hcnf"
  same "$work/os1" "$work/os2" "oneshot --threads 2"
  same "$work/ti1" "$work/ti2" "taskinteract --threads 2"
  same "$work/hc1" "$work/hcnf" "hyperclean --threads 3 --no-fork"
fi

# ---- MPI ranks ------------------------------------------------------------------
# scripts/setup.sh installs Open MPI (libopenmpi-dev, openmpi-bin) and every build finds it
# (-Dmpi=auto): with CI set, a build without MPI or no mpirun is a failure (tests/skip.sh).
skip_mpi() {
  tu_skip "$1: the mpirun cases" "scripts/setup.sh installs libopenmpi-dev and openmpi-bin" ||
    { cases=$((cases + 1)); failed=$((failed + 1)); }
}
if [ "$mpi" != mpi ]; then
  skip_mpi "this build has no MPI"
elif ! command -v mpirun >/dev/null 2>&1; then
  skip_mpi "no mpirun on PATH"
else
  # Loopback only: shared memory between the ranks, the launcher's own traffic on lo.
  mpi_run=(mpirun --oversubscribe --mca btl self,vader --mca oob_tcp_if_include lo)
  if [ "$(id -u)" -eq 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  fi
  # Open MPI's own allocations are not this project's: no leak report for them under ASan.
  export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0
  run "$work/os-m2.log" "${mpi_run[@]}" -n 2 "$bin/oneshot" "${os[@]}" --threads 1 --out "$work/os-m2"
  same "$work/os1" "$work/os-m2" "mpirun -n 2 oneshot"
  diverged "$work/dv-m2.log" "$work/dv-m2" "mpirun -n 2 oneshot, a diverged configuration" \
    "$dv_text" "${mpi_run[@]}" -n 2 "$bin/oneshot" "${dv[@]}" --threads 1 --out "$work/dv-m2"
  same "$work/dv1" "$work/dv-m2" "mpirun -n 2 oneshot, a diverged configuration"
  if [ "$short" != short ]; then
    diverged "$work/dv-m3.log" "$work/dv-m3" "mpirun -n 3 oneshot, a diverged configuration" \
      "$dv_text" "${mpi_run[@]}" -n 3 "$bin/oneshot" "${dv[@]}" --threads 1 --out "$work/dv-m3"
    same "$work/dv1" "$work/dv-m3" "mpirun -n 3 oneshot, a diverged configuration"
    diverged "$work/dvv-m2.log" "$work/dvv-m2" "mpirun -n 2 oneshot, a diverged validation loss" \
      "$dvv_text" "${mpi_run[@]}" -n 2 "$bin/oneshot" "${dvv[@]}" --threads 1 --out "$work/dvv-m2"
    same "$work/dvv1" "$work/dvv-m2" "mpirun -n 2 oneshot, a diverged validation loss"
    # hyperclean and taskinteract fail as a whole when a K or a trial diverges: alike here.
    fails_alike "$work/tidv-m2.log" "$work/tidv-m2" "mpirun -n 2 taskinteract, diverged" \
      "$ti_dv_text" "${mpi_run[@]}" -n 2 "$bin/taskinteract" "${ti_dv[@]}" --threads 1 \
      --out "$work/tidv-m2"
    fails_alike "$work/hcdv-m3.log" "$work/hcdv-m3" "mpirun -n 3 hyperclean, diverged" \
      "$hc_dv_text" "${mpi_run[@]}" -n 3 "$bin/hyperclean" "${hc_dv[@]}" --threads 1 \
      --out "$work/hcdv-m3"
    # A meta-batch of 2 on 3 ranks of 2 threads: a rank without a task of the meta-batch.
    run "$work/osb2.log" "$bin/oneshot" "${os[@]}" --meta-batch 2 --threads 1 --out "$work/osb2"
    run "$work/osb2-m3.log" "${mpi_run[@]}" -n 3 "$bin/oneshot" "${os[@]}" --meta-batch 2 \
      --threads 2 --out "$work/osb2-m3"
    run "$work/ti-m2.log" "${mpi_run[@]}" -n 2 "$bin/taskinteract" "${ti[@]}" --threads 1 \
      --out "$work/ti-m2"
    run "$work/hc-m2.log" "${mpi_run[@]}" -n 2 "$bin/hyperclean" "${hc[@]}" --threads 1 \
      --out "$work/hc-m2"
    same "$work/osb2" "$work/osb2-m3" "mpirun -n 3 oneshot --meta-batch 2 --threads 2"
    same "$work/ti1" "$work/ti-m2" "mpirun -n 2 taskinteract"
    same "$work/hc1" "$work/hc-m2" "mpirun -n 2 hyperclean"
  fi
  # Stopped after 2 hyper-iterations, resumed to 4: in one process, and under mpirun.
  run "$work/osr.log" "$bin/oneshot" "${os[@]}" --hyper-iters 2 --threads 1 --out "$work/osr"
  run "$work/osr.log" "$bin/oneshot" "${os[@]}" --resume --threads 1 --out "$work/osr"
  run "$work/osr-m2.log" "${mpi_run[@]}" -n 2 "$bin/oneshot" "${os[@]}" --hyper-iters 2 \
    --threads 1 --out "$work/osr-m2"
  run "$work/osr-m2b.log" "${mpi_run[@]}" -n 2 "$bin/oneshot" "${os[@]}" --resume --threads 1 \
    --out "$work/osr-m2"
  cases=$((cases + 1))
  if grep -q "resuming at hyper-iteration 2" "$work/osr-m2b.log"; then
    echo "ok: mpirun -n 2 oneshot --resume goes on from the checkpoint"
  else
    echo "FAIL: mpirun -n 2 oneshot --resume did not resume at hyper-iteration 2"
    failed=$((failed + 1))
  fi
  same "$work/osr" "$work/osr-m2" "mpirun -n 2 oneshot, stopped and resumed"
  # Rank 0 alone writes: no file from another rank, and one progress stream.
  cases=$((cases + 1))
  if [ "$(grep -c 'at λ0 meta-validation accuracy' "$work/os-m2.log")" -eq 2 ]; then
    echo "ok: mpirun -n 2 oneshot prints its progress once (rank 0)"
  else
    echo "FAIL: mpirun -n 2 oneshot printed λ0's validation line $(grep -c 'at λ0 meta-validation accuracy' "$work/os-m2.log") times, not twice (one per configuration)"
    failed=$((failed + 1))
  fi
fi

echo "par: $cases cases, $failed failed"
[ "$failed" -eq 0 ]
