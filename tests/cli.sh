#!/usr/bin/env bash
# cli.sh — the programs' command lines: bad flags exit 2 with a message naming the flag, bad
# files exit 1 with a message naming the file, and a few defaults that depend on other flags.
# Registered by tests/meson.build as the test `cli`, with the build's experiments folder as $1
# and the source root as $2. Prints one line per case; exits 1 if any case went wrong.
set -uo pipefail

bin=$1
cd "$2" || exit 1 # the programs find ../shared/data from the repository root
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
cases=0

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
    echo "ok: $*"
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

# ---- defaults that follow --T, and a run without gnuplot ----------------------
tiny=(--T 5 --hyper-iters 2 --n-train 100 --n-val 100 --out "$work/hc")
if [ -f ../shared/data/mnist/train-images-idx3-ubyte.gz ] || [ -n "${HYPERTAPE_DATA:-}" ]; then
  expect 0 "K = 1,5" -- "$bin/hyperclean" "${tiny[@]}"
  # No gnuplot on PATH: a warning, the CSV files, and success.
  expect 0 "warning: gnuplot is not on PATH" -- env PATH=/nonexistent "$bin/hyperclean" "${tiny[@]}"
  [ -s "$work/hc/hyperclean_table.md" ] || { echo "FAIL: no table written"; failed=$((failed + 1)); }
else
  echo "note: no MNIST found: the hyperclean runs are not checked"
fi

# ---- a damaged oneshot checkpoint ---------------------------------------------
os=(--channels 4 --T 3 --K 1 --meta-batch 1 --val-tasks 2 --test-tasks 2 --relerr-tasks 0
    --no-plots --out "$work/os")
if [ -f ../shared/data/omniglot/images_background.zip ] || [ -n "${HYPERTAPE_DATA:-}" ]; then
  expect 0 "" -- "$bin/oneshot" "${os[@]}" --hyper-iters 2
  ckpt=$(ls "$work"/os/ckpt_*.bin 2>/dev/null | head -1)
  if [ -n "$ckpt" ]; then
    # A resumed run may ask for more hyper-iterations than the checkpoint's run did.
    expect 0 "" -- "$bin/oneshot" "${os[@]}" --hyper-iters 3 --resume
    head -c 100 "$ckpt" > "$ckpt.cut" && mv "$ckpt.cut" "$ckpt"
    expect 1 "$(basename "$ckpt") is truncated" -- "$bin/oneshot" "${os[@]}" --hyper-iters 5 --resume
  else
    echo "FAIL: oneshot left no checkpoint in $work/os"
    failed=$((failed + 1))
  fi
else
  echo "note: no Omniglot found: the checkpoint cases are not checked"
fi

echo "cli: $cases cases, $failed failed"
[ "$failed" -eq 0 ]
