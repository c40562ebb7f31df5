#!/usr/bin/env bash
# Issue 16, the follow-up to full RMD's collapse at η = 0.01: the same configuration (one-shot
# Omniglot, 64 channels, T = 50, meta-batch 4, 5000 hyper-iterations, 600 meta-test tasks, the same
# seed, λ0 and tasks) with Adam's step η = 0.003. Why this one: γ is a raw hyperparameter near 0.08
# under full RMD, and Adam moves each coordinate by up to ≈ 3η when a gradient jumps far above its
# running scale, so at η = 0.01 one spike moves γ by a third of its value per update (the log shows
# 0.086 → 0.060 → 0.036 → 0.014 → the clamp). The training log now carries the hypergradient's norm.
# Float release build with MPI (two ranks of one thread); resumes from results/table4-full-lr3e-3.
set -eu
cd "$(dirname "$0")/../.."
export HYPERTAPE_DATA=${HYPERTAPE_DATA:-$PWD/../shared/data}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
[ -x build/float-rel/experiments/oneshot ] || {
  meson setup build/float-rel --buildtype=release -Dreal=float -Dtests=false -Dmpi=enabled
  meson compile -C build/float-rel oneshot
}
out=results/table4-full-lr3e-3
resume=; [ -d $out ] && resume=--resume
exec mpirun -n 2 --mca btl self,vader build/float-rel/experiments/oneshot --channels 64 --T 50 \
  --meta-batch 4 --K full --lr 3e-3 --hyper-iters 5000 --test-tasks 600 --val-tasks 20 \
  --eval-every 250 --relerr-tasks 0 --threads 1 --out $out $resume
