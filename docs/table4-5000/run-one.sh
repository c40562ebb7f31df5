#!/usr/bin/env bash
# One Table 4 configuration on its own, as the follow-ups of issue 16 ran them:
#   bash docs/table4-5000/run-one.sh K ETA      (K: 1, 10, 25, full or short; ETA: Adam's step)
# The same problem, seed, λ0 and tasks as run-table4.sh (one-shot Omniglot, 64 channels, T = 50,
# meta-batch 4, 5000 hyper-iterations, 600 meta-test tasks), into results/table4-K-lrETA, resuming
# from its checkpoint when that folder exists. Float release build with MPI, two ranks of one thread.
# Why η = 0.003 was tried: γ is a raw hyperparameter near 0.08 under full RMD, and Adam moves each
# coordinate by up to ≈ 3η when a gradient jumps far above its running scale, so at η = 0.01 a spike
# moves γ by a third of its value per update (full RMD's log: 0.086 → 0.060 → 0.036 → 0.014 → the
# clamp). The training log carries the hypergradient's norm (hypergrad_norm). Figure 7's plot 4
# (relative error against K) comes from run-table4.sh, at the λ its full RMD ended with.
set -eu
[ $# -eq 2 ] || { echo "usage: $0 K ETA" >&2; exit 2; }
K=$1 eta=$2
cd "$(dirname "$0")/../.."
export HYPERTAPE_DATA=${HYPERTAPE_DATA:-$PWD/../shared/data}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
[ -x build/float-rel/experiments/oneshot ] || {
  meson setup build/float-rel --buildtype=release -Dreal=float -Dtests=false -Dmpi=enabled
  meson compile -C build/float-rel oneshot
}
out=results/table4-$K-lr$eta
resume=; [ -d "$out" ] && resume=--resume
exec mpirun -n 2 --mca btl self,vader build/float-rel/experiments/oneshot --channels 64 --T 50 \
  --meta-batch 4 --K "$K" --lr "$eta" --hyper-iters 5000 --test-tasks 600 --val-tasks 20 \
  --eval-every 250 --relerr-tasks 0 --threads 1 --out "$out" $resume
