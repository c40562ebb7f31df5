#!/usr/bin/env bash
# The main job: the data-hypercleaning K-sweep of Sec. 4.2.1 (K = 1, 5, 25, 50, 100; 1000
# hyper-iterations each). Sets up the machine, builds build/release (double precision) and runs
# build/release/experiments/hyperclean; arguments are passed on to it (try --help; --quick is a
# one-minute first look). Results go to results/hyperclean/ (with --quick, results/hyperclean-quick/)
# unless --out says otherwise.
#
# The first line printed names the dataset: MNIST when it is found (--data, $HYPERTAPE_DATA/mnist,
# or ../shared/data/mnist beside the repository), else Fashion-MNIST from Debian's
# dataset-fashion-mnist package (/usr/share/datasets/fashion-mnist, installed by setup.sh).
# A --dataset given on the command line wins.
#
# Cores: hyperclean runs the Ks --threads at a time (default: every core), each on one
# OpenBLAS thread whatever OPENBLAS_NUM_THREADS says (its sums depend on the thread count), so
# its numbers are the same at any --threads, timings aside.
#
# Paths are the caller's: a relative --data, --out or HYPERTAPE_DATA is read from the folder the
# script was started in (made absolute here, before the script moves to the repository root to
# build and run; the program's own defaults, results/... and ../shared/data, stay the
# repository's).
set -euo pipefail

# caller_path PATH: PATH made absolute against the caller's folder (an absolute or empty one as is).
caller=$PWD
caller_path() {
  case $1 in
    /* | "") printf '%s\n' "$1" ;;
    *) printf '%s\n' "$caller/$1" ;;
  esac
}
if [ -n "${HYPERTAPE_DATA:-}" ]; then
  HYPERTAPE_DATA=$(caller_path "$HYPERTAPE_DATA")
  export HYPERTAPE_DATA
fi
args=()
prev=""
for a in "$@"; do
  case $prev in
    --data | --out) a=$(caller_path "$a") ;;
  esac
  case $a in
    --data=* | --out=*) a=${a%%=*}=$(caller_path "${a#*=}") ;;
  esac
  args+=("$a")
  prev=$a
done
set -- "${args[@]+"${args[@]}"}"

# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$repo"

main=build/release/experiments/hyperclean

# The dataset, decided before anything else is printed.
dataset=""
data_flag=""
prev=""
for a in "$@"; do
  case $prev in
    --dataset) dataset=$a ;;
    --data) data_flag=$a ;;
  esac
  case $a in
    --dataset=*) dataset=${a#--dataset=} ;;
    --data=*) data_flag=${a#--data=} ;;
  esac
  prev=$a
done
has_train_images() {
  [ -f "$1/train-images-idx3-ubyte.gz" ] || [ -f "$1/train-images-idx3-ubyte" ]
}
extra=()
if [ -n "$dataset" ]; then
  where=${data_flag:-as the program finds it}
  echo "run-main: dataset $dataset (from the command line; data: $where)"
elif [ -n "$data_flag" ]; then
  echo "run-main: dataset mnist (the program's default; data: --data $data_flag)"
elif [ -n "${HYPERTAPE_DATA:-}" ] && has_train_images "$HYPERTAPE_DATA/mnist"; then
  echo "run-main: dataset mnist ($HYPERTAPE_DATA/mnist)"
  extra=(--dataset mnist)
elif has_train_images "../shared/data/mnist"; then
  echo "run-main: dataset mnist ($(cd ../shared/data/mnist && pwd))"
  extra=(--dataset mnist)
else
  echo "run-main: dataset fashion (no MNIST found; Fashion-MNIST from" \
    "/usr/share/datasets/fashion-mnist)"
  extra=(--dataset fashion)
fi

bash scripts/setup.sh
ht_configure build/release --buildtype=release -Dreal=double -Dtests=false
# Only the main program and what it needs: an unrelated target cannot stop the job.
meson compile -C build/release hyperclean

if [ ! -x "$main" ]; then
  echo "run-main: the main program ($main) is not built" >&2
  exit 1
fi
echo "run-main: $main ${extra[*]} $*" >&2
exec "$main" "${extra[@]}" "$@"
