#!/usr/bin/env bash
# Table 4 at the paper's budget (issue 16): one-shot Omniglot, 64 channels, T = 50, meta-batch 4,
# 5000 hyper-iterations per configuration, 600 meta-test tasks; float release build, 2 MPI ranks
# of one thread each (the faster mode on 2 cores: README, "Threads and MPI"). Run from anywhere;
# it resumes from results/table4's checkpoints when the folder exists (the run spans sessions).
# The run behind docs/table4-5000 used this at commit ed14faa.
set -eu
cd "$(dirname "$0")/../.."
export HYPERTAPE_DATA=${HYPERTAPE_DATA:-$PWD/../shared/data}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
[ -x build/float-rel/experiments/oneshot ] || {
  meson setup build/float-rel --buildtype=release -Dreal=float -Dtests=false -Dmpi=enabled
  meson compile -C build/float-rel oneshot
}
resume=; [ -d results/table4 ] && resume=--resume
exec mpirun -n 2 --mca btl self,vader build/float-rel/experiments/oneshot --channels 64 --T 50 \
  --meta-batch 4 --K 1,10,full,25,short --hyper-iters 5000 --test-tasks 600 --val-tasks 20 \
  --eval-every 250 --threads 1 --out results/table4 $resume
