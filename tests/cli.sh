#!/usr/bin/env bash
# cli.sh — the programs' command lines: bad flags exit 2 with a message naming the flag, bad
# files exit 1 with a message naming the file, and a few defaults that depend on other flags.
# Registered by tests/meson.build as the test `cli`, with the build's experiments folder as $1
# and the source root as $2. Prints one line per case; exits 1 if any case went wrong. Cases that
# need a shared dataset that is missing are skipped with a line "skipped: ..." (tests/skip.sh),
# or fail when CI is set.
set -uo pipefail

bin=$1
cd "$2" || exit 1 # the programs find ../shared/data from the repository root
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
cases=0
# shellcheck source=tests/skip.sh
source tests/skip.sh
data=$(tu_data_root "$PWD")

# skip WHAT: the cases WHAT names are skipped (tu_skip); with CI set, one failed case.
skip() {
  tu_skip "$1" || { cases=$((cases + 1)); failed=$((failed + 1)); }
}

# expect STATUS SUBSTRING -- COMMAND...: the command exits with STATUS and its stdout+stderr
# contain SUBSTRING.
expect() {
  local want=$1 text=$2
  shift 3
  local out status
  out=$("$@" 2>&1)
  status=$?
  cases=$((cases + 1))
  if [ "$status" -ne "$want" ] || [[ "$out" != *"$text"* ]]; then
    echo "FAIL: $* -> status $status (want $want), output lacks \"$text\":"
    printf '%s\n' "$out" | tail -5 | sed 's/^/    /'
    failed=$((failed + 1))
  else
    local line="$*"
    echo "ok: ${line:0:300}"
  fi
}

# ---- flags ------------------------------------------------------------------
expect 2 "--K: expected a whole number" -- "$bin/bench-estimators" --K 10x
expect 2 "--T: expected up to 8 whole numbers" -- "$bin/bench-estimators" --T 100,
expect 2 "--seed wants a whole number" -- "$bin/hyperclean" --seed " -1"
expect 2 "--K: empty entry" -- "$bin/oneshot" --K 1,,25
expect 2 "same configuration as an earlier entry" -- "$bin/oneshot" --T 1 --K 1,short
expect 2 "--K: 1 is given twice" -- "$bin/taskinteract" --K 1,1
expect 2 "both full RMD" -- "$bin/taskinteract" --K 100,200
expect 2 "--gamma" -- "$bin/taskinteract" --gamma -1
expect 2 "K = 50 is larger than T = 10" -- "$bin/hyperclean" --T 10 --K 1,50
expect 2 "--threads: expected a whole number in 1..256, got '0'" -- "$bin/oneshot" --threads 0
expect 2 "--threads: expected a whole number in 1..256, got '2x'" -- "$bin/taskinteract" --threads 2x
expect 2 "--threads: expected a whole number in 1..256, got '257'" -- "$bin/hyperclean" --threads 257
expect 2 "--clip-norm" -- "$bin/oneshot" --clip-norm -1
# ν0 = log(e^ρ0 − 1) is +inf past ρ0 ≈ 709.78 (it ran, and failed on an infinite inner loss)
expect 2 "--rho0: expected a finite number in (0, 100], got '800'" -- "$bin/taskinteract" --rho0 800

# ---- defaults that follow --T, and a run without gnuplot ----------------------
tiny=(--T 5 --hyper-iters 2 --n-train 100 --n-val 100 --out "$work/hc")
if [ -f "$data/mnist/train-images-idx3-ubyte.gz" ]; then
  expect 0 "K = 1,5" -- "$bin/hyperclean" "${tiny[@]}"
  # No gnuplot on PATH: a warning, the CSV files, and success.
  expect 0 "warning: gnuplot is not on PATH" -- env PATH=/nonexistent "$bin/hyperclean" "${tiny[@]}"
  cases=$((cases + 1))
  [ -s "$work/hc/hyperclean_table.md" ] || { echo "FAIL: no table written"; failed=$((failed + 1)); }
  # --oracle reports the test loss: with --gamma-check too, the test set is loaded for it.
  expect 0 "test loss" -- "$bin/hyperclean" --T 5 --n-train 100 --n-val 100 --gamma-check --oracle
  # --quick writes to its own folder (results/hyperclean-quick, as oneshot's results/oneshot-quick),
  # so a first look leaves a full run's results/hyperclean alone. Run from an empty folder.
  mkdir -p "$work/q/results/hyperclean"
  echo "a full run's summary" >"$work/q/results/hyperclean/hyperclean_summary.csv"
  expect 0 "wrote results/hyperclean-quick/hyperclean{" -- \
    bash -c 'cd "$1" && shift && exec "$@"' _ "$work/q" "$bin/hyperclean" --quick \
    --hyper-iters 1 --K 1 --T 5 --no-plots --data "$(cd "$data/mnist" && pwd)"
  cases=$((cases + 1))
  if [ ! -s "$work/q/results/hyperclean-quick/hyperclean_summary.csv" ] ||
    [ "$(cat "$work/q/results/hyperclean/hyperclean_summary.csv")" != "a full run's summary" ]; then
    echo "FAIL: hyperclean --quick did not write results/hyperclean-quick, or touched results/hyperclean"
    failed=$((failed + 1))
  else
    echo "ok: hyperclean --quick wrote results/hyperclean-quick and left results/hyperclean alone"
  fi
else
  skip "no MNIST in $data: the 4 hyperclean runs and their table"
fi

# ---- a damaged oneshot checkpoint ---------------------------------------------
os=(--channels 4 --T 3 --K 1 --meta-batch 1 --val-tasks 2 --test-tasks 2 --relerr-tasks 0
    --no-plots --out "$work/os")
if [ -f "$data/omniglot/images_background.zip" ]; then
  expect 0 "" -- "$bin/oneshot" "${os[@]}" --hyper-iters 2
  ckpt=$(ls "$work"/os/ckpt_*.bin 2>/dev/null | head -1)
  if [ -n "$ckpt" ]; then
    # A resumed run may ask for more hyper-iterations than the checkpoint's run did.
    expect 0 "" -- "$bin/oneshot" "${os[@]}" --hyper-iters 3 --resume
    # The clipping threshold changes the numbers: a checkpoint of another one is refused.
    expect 1 "belongs to another run" -- "$bin/oneshot" "${os[@]}" --hyper-iters 4 --resume \
      --clip-norm 0.5
    # The training log has the mean hypergradient's norm, before clipping: a positive number on
    # every row. (A number written out: mawk reads "nan" or "inf" as a number above 0.)
    cases=$((cases + 1))
    if ! awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "hypergrad_norm") c = i; next }
                  !c || $c !~ /^([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$/ || $c + 0 <= 0 { bad = 1 }
                  END { exit bad || NR < 2 }' "$work"/os/train_K1.csv; then
      echo "FAIL: train_K1.csv has a row without a positive hypergrad_norm, or no row:"
      sed 's/^/    /' "$work"/os/train_K1.csv | head -5
      failed=$((failed + 1))
    else
      echo "ok: train_K1.csv has a positive hypergrad_norm on every row"
    fi
    # One byte changed inside the checkpoint's fields: its CRC says so.
    cp "$ckpt" "$ckpt.keep"
    printf 'X' | dd of="$ckpt" bs=1 seek=200 conv=notrunc status=none
    expect 1 "$(basename "$ckpt") is damaged: the CRC32" -- "$bin/oneshot" "${os[@]}" --hyper-iters 5 --resume
    mv "$ckpt.keep" "$ckpt"
    head -c 100 "$ckpt" > "$ckpt.cut" && mv "$ckpt.cut" "$ckpt"
    expect 1 "$(basename "$ckpt") is truncated" -- "$bin/oneshot" "${os[@]}" --hyper-iters 5 --resume
  else
    echo "FAIL: oneshot left no checkpoint in $work/os"
    cases=$((cases + 1))
    failed=$((failed + 1))
  fi
  # The parent killed while a configuration trains: its worker must die with it.
  "$bin/oneshot" "${os[@]}" --hyper-iters 100000 --out "$work/os-kill" >/dev/null 2>&1 &
  parent=$!
  worker=""
  # (children and states from /proc: pgrep and ps need procps, which CI may lack)
  for _ in $(seq 300); do
    worker=$(awk -v p="$parent" '$4 == p { print $1; exit }' /proc/[0-9]*/stat 2>/dev/null)
    [ -n "$worker" ] && break
    sleep 0.1
  done
  cases=$((cases + 1))
  if [ -z "$worker" ]; then
    echo "FAIL: oneshot started no worker"; failed=$((failed + 1))
  else
    kill -KILL "$parent"
    wait "$parent" 2>/dev/null
    for _ in $(seq 50); do
      state=$(awk '{ print $3 }' "/proc/$worker/stat" 2>/dev/null)
      [ -z "$state" ] || [ "${state#Z}" != "$state" ] && break
      sleep 0.1
    done
    if [ -n "$state" ] && [ "${state#Z}" = "$state" ]; then
      echo "FAIL: the worker $worker outlived its killed parent"; failed=$((failed + 1))
      kill -KILL "$worker" 2>/dev/null
    else
      echo "ok: a killed oneshot leaves no worker"
    fi
  fi
else
  skip "no Omniglot in $data: oneshot's checkpoint, training-log and worker cases"
fi

# ---- the run kit: the example experiment, the output folder, workers ----------
ex=(--hyper-iters 5 --out "$work/ex")
expect 0 "" -- "$bin/example-l2" "${ex[@]}"
# (a missing file is a failure: "$(wc -l <missing)" is empty, and [ "" -ne 16 ] is an error,
# which `if` reads as false)
cases=$((cases + 1))
lines=none
[ -f "$work/ex/sweep.csv" ] && lines=$(wc -l <"$work/ex/sweep.csv")
temps=$(ls -A "$work/ex" 2>/dev/null | grep -v '^\.lock$' | grep '^\.')
if [ "$lines" != 16 ] || [ -n "$temps" ]; then
  echo "FAIL: example-l2 wrote sweep.csv lines: $lines (want 16); temporary files left: ${temps:-none}"
  failed=$((failed + 1))
else
  echo "ok: example-l2 wrote the 16 lines of sweep.csv and no temporary file"
fi
# K > T is full RMD by another name (exit 0 before, and no plot when every K was): refused.
expect 2 "K = 10 is larger than T = 3" -- "$bin/example-l2" --T 3 --K 1,10 --out "$work/ex-kt"
expect 2 "K = 5 is larger than T = 3" -- "$bin/example-l2" --T 3 --K 1,2 --out "$work/ex-kt"
expect 2 "--out: path too long" -- "$bin/example-l2" --out "$work/$(printf 'x%.0s' {1..5000})"
# A write error (here a file size limit, as a full disk) names the file and the reason, and
# leaves neither the file nor its temporary behind.  (40 hyper-iterations: 5 KB of rows, past
# the 1 KB limit; from the 79th on, the penalties exp(λ) have grown past what the inner step
# 0.5 allows and the run stops as diverged.)
expect 1 "sweep.csv: File too large" -- bash -c "trap '' XFSZ; ulimit -f 1; exec \"\$0\" \"\$@\"" \
  "$bin/example-l2" --hyper-iters 40 --out "$work/full"
if [ -e "$work/full/sweep.csv" ] || [ -n "$(ls -A "$work/full" | grep -v '^\.lock$')" ]; then
  echo "FAIL: a failed write left files in $work/full: $(ls -A "$work/full")"
  failed=$((failed + 1))
fi
# A second run on a folder another run holds is refused.  (The first must still be running: at
# the default --lr it diverges after ~80 hyper-iterations, a few seconds, and stops.)
"$bin/example-l2" --hyper-iters 100000 --lr 1e-4 --out "$work/busy" >/dev/null 2>&1 &
first=$!
for _ in $(seq 100); do [ -s "$work/busy/.lock" ] && break; sleep 0.1; done
expect 1 "is in use by another run (process $first)" -- "$bin/example-l2" --out "$work/busy"
kill "$first" 2>/dev/null
wait "$first" 2>/dev/null

# ---- divergence: every program stops with exit 1, says so, and leaves no results -----
# (ex_watch in experiments/kit: an inner loss not finite or ending 10 times above its start,
# a validation loss 10 times its first; each case below exited 0 with the numbers before.
# The settings keep the losses finite in the float build too, so that the kit's check, not an
# overflow caught by the estimators, is what stops them.)
# no_results DIR: DIR holds no file but the lock (and subfolders).
no_results() {
  local left
  left=$(find "$1" -type f ! -name .lock 2>/dev/null)
  cases=$((cases + 1))
  if [ -n "$left" ]; then
    echo "FAIL: a diverged run left results: $left"
    failed=$((failed + 1))
  fi
}
expect 1 "hyper-iteration 1: diverged: the inner loss rose from g_1 = 0.693147" -- \
  "$bin/example-l2" --hyper-iters 3 --gamma 1.5 --out "$work/div-ex"
no_results "$work/div-ex"
expect 1 "hyper-iteration 2: diverged: the inner loss rose" -- "$bin/example-l2" \
  --hyper-iters 20 --lr 1 --out "$work/div-ex-lr"
expect 1 "toy: krmd: diverged: the inner loss rose from g_1 = 0.75" -- \
  "$bin/toy" --query --lambda=1,1 --K=10 --gamma 2.2
expect 1 "fig1: sweep over K: diverged: the inner loss rose" -- "$bin/toy" --gamma 2.2 \
  --iters 5 --out "$work/div-toy"
no_results "$work/div-toy"
if [ -f "$data/mnist/train-images-idx3-ubyte.gz" ]; then
  # issue 14's case: --gamma 1e6 gave a validation loss of 1e19 and exit 0
  expect 1 "K = 1, hyper-iteration 1: diverged: the inner loss rose" -- "$bin/hyperclean" \
    --T 5 --hyper-iters 2 --n-train 100 --n-val 100 --K 1 --gamma 1e6 --out "$work/div-hc"
  no_results "$work/div-hc"
else
  skip "no MNIST in $data: hyperclean's divergence case"
fi
if [ -f "$data/cifar/cifar10_test_jpeg.bin.gz" ]; then
  expect 1 "1-RMD, trial 0, τ = 0: diverged: the inner loss rose" -- "$bin/taskinteract" \
    --quick --trials 1 --max-iters 2 --gamma 4 --out "$work/div-ti"
  no_results "$work/div-ti"
  # γρ = 100: the inner loss at λ0 overflows before t = T; the check says where, and for which run
  expect 1 "1-RMD, trial 0, start: the inner loss is not finite from t = " -- "$bin/taskinteract" \
    --quick --trials 1 --max-iters 2 --gamma 1 --rho0 100 --out "$work/div-ti-rho"
  no_results "$work/div-ti-rho"
else
  skip "no CIFAR-10 in $data: taskinteract's divergence cases"
fi
if [ -f "$data/omniglot/images_background.zip" ]; then
  # ρ = 1 and γ = 2: each step multiplies the weights' penalty part by 1 − 2γρ = −3.  1-RMD
  # diverges; the short horizon's one step (T = 1) does not, and runs after it: oneshot records
  # a diverged configuration and goes on (par.sh checks the same under mpirun).
  expect 1 "1-RMD, hyper-iteration 1: task 1 of the meta-batch: diverged: the inner loss rose" \
    -- "$bin/oneshot" --channels 4 --T 3 --K 1,short --meta-batch 1 --val-tasks 2 --test-tasks 2 \
    --relerr-tasks 0 --no-plots --hyper-iters 2 --step0 2 --rho0 1 --out "$work/div-os"
  cases=$((cases + 1))
  if ! grep -q '^| 1-RMD | (failed) |' "$work/div-os/table4.md" 2>/dev/null ||
    ! grep -q '^| Short horizon (T=1) | [0-9]' "$work/div-os/table4.md"; then
    echo "FAIL: oneshot's table4.md lacks the failed 1-RMD row or the short horizon's row"
    failed=$((failed + 1))
  fi
else
  skip "no Omniglot in $data: oneshot's divergence case"
fi

# ---- oneshot --resume refused: the folder untouched -------------------------------
# A checkpoint that belongs to another run (other flags), or is damaged, refuses the whole
# resume before any work: exit 1, and every file of the folder as it was (no result rewritten,
# no new configuration's files beside the old run's).  The lock's content (the process id) is
# not a result.
# same_folder BEFORE AFTER WHAT: AFTER holds exactly BEFORE's files, byte for byte.
same_folder() {
  local d
  cases=$((cases + 1))
  if ! d=$(diff -r --exclude=.lock "$1" "$2" 2>&1); then
    echo "FAIL: $3 changed the folder:"
    printf '%s\n' "$d" | head -5 | sed 's/^/    /'
    failed=$((failed + 1))
  else
    echo "ok: $3 left every file as it was"
  fi
}
osr=(--channels 4 --T 3 --meta-batch 1 --val-tasks 2 --test-tasks 2 --relerr-tasks 1 --no-plots
     --hyper-iters 2)
if [ -f "$data/omniglot/images_background.zip" ]; then
  # A finished run, resumed with another --lr: relerr*.csv were rewritten from λ0.
  expect 0 "" -- "$bin/oneshot" "${osr[@]}" --K 1 --out "$work/osr"
  cp -a "$work/osr" "$work/osr.before"
  expect 1 "ckpt_K1.bin belongs to another run" -- "$bin/oneshot" "${osr[@]}" --K 1 \
    --out "$work/osr" --resume --lr 0.02
  same_folder "$work/osr.before" "$work/osr" "a finished run resumed with another --lr"
  # A partly finished folder: the configuration without a checkpoint ran with the new flags.
  expect 0 "" -- "$bin/oneshot" "${osr[@]}" --K 1 --out "$work/osp"
  cp -a "$work/osp" "$work/osp.before"
  expect 1 "ckpt_K1.bin belongs to another run" -- "$bin/oneshot" "${osr[@]}" --K 1,full \
    --out "$work/osp" --resume --lr 0.02
  same_folder "$work/osp.before" "$work/osp" "a partly finished folder resumed with another --lr"
  # A damaged checkpoint of a finished configuration: table4 was rewritten without its row.
  expect 0 "" -- "$bin/oneshot" "${osr[@]}" --K 1,full --out "$work/osd"
  head -c 100 "$work/osd/ckpt_full.bin" >"$work/osd/cut" && mv "$work/osd/cut" "$work/osd/ckpt_full.bin"
  cp -a "$work/osd" "$work/osd.before"
  expect 1 "ckpt_full.bin is truncated" -- "$bin/oneshot" "${osr[@]}" --K 1,full \
    --out "$work/osd" --resume
  same_folder "$work/osd.before" "$work/osd" "a resume with a damaged checkpoint"
  # Every refused checkpoint is named, not only the first: here K1's belongs to another run
  # (--lr) and full's is truncated.
  for text in "ckpt_K1.bin belongs to another run" "ckpt_full.bin is truncated" \
      "2 of 2 configurations cannot go on"; do
    expect 1 "$text" -- "$bin/oneshot" "${osr[@]}" --K 1,full --out "$work/osd" --resume --lr 0.02
  done
  same_folder "$work/osd.before" "$work/osd" "a resume with two refused checkpoints"
  # The truncation profile of a resumed run keeps the points before the resume (it held only
  # those after): run to 8, resumed to 16, the same file as one run to 16 (points 1 4 8 12 16;
  # the file has no timing column).
  pro=(--K 1 --relerr-tasks 0 --profile-every 4)
  expect 0 "" -- "$bin/oneshot" "${osr[@]}" "${pro[@]}" --hyper-iters 16 --out "$work/osq-ref"
  expect 0 "" -- "$bin/oneshot" "${osr[@]}" "${pro[@]}" --hyper-iters 8 --out "$work/osq"
  expect 0 "resuming at hyper-iteration 8" -- "$bin/oneshot" "${osr[@]}" "${pro[@]}" \
    --hyper-iters 16 --out "$work/osq" --resume
  cases=$((cases + 1))
  points=$(cut -d, -f1 "$work/osq-ref/profile_K1.csv" 2>/dev/null | uniq | tr '\n' ' ')
  if [ "$points" != "iter 1 4 8 12 16 " ] ||
    ! cmp "$work/osq-ref/profile_K1.csv" "$work/osq/profile_K1.csv"; then
    echo "FAIL: the resumed profile_K1.csv differs from one run's (points of one run: $points;" \
      "resumed: $(cut -d, -f1 "$work/osq/profile_K1.csv" 2>/dev/null | uniq | tr '\n' ' '))"
    failed=$((failed + 1))
  else
    echo "ok: a resumed profile_K1.csv is one run's, points $points"
  fi
  # A profile that is not one (here a row cut short) refuses the resume, the folder untouched.
  expect 0 "" -- "$bin/oneshot" "${osr[@]}" "${pro[@]}" --hyper-iters 8 --out "$work/osb"
  echo "4,1,0.5" >>"$work/osb/profile_K1.csv"
  cp -a "$work/osb" "$work/osb.before"
  expect 1 "profile_K1.csv, line 11: not oneshot's truncation profile" -- "$bin/oneshot" \
    "${osr[@]}" "${pro[@]}" --hyper-iters 16 --out "$work/osb" --resume
  same_folder "$work/osb.before" "$work/osb" "a resume with a damaged profile"
else
  skip "no Omniglot in $data: oneshot's refused-resume cases"
fi

echo "cli: $cases cases, $failed failed"
[ "$failed" -eq 0 ]
