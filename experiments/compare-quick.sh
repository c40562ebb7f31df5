#!/usr/bin/env bash
# compare-quick.sh — runs every program's quick configuration with two builds and compares what
# they write, timing columns aside: the check that a refactoring of experiments/ left the
# programs' results as they were.
#
#   bash experiments/compare-quick.sh OLD_BUILD NEW_BUILD WORK
#
# OLD_BUILD and NEW_BUILD are build folders (each with experiments/ in it), for instance a
# build of main made in another folder (git archive main | tar -x -C /tmp/base; meson setup
# /tmp/base/build/release --buildtype=release) and build/release here. WORK receives a/ and b/
# with every output. Data: $HYPERTAPE_DATA (default ../shared/data beside the repository).
#
# oneshot also runs 3 hyper-iterations and is resumed to its 6 (--resume).
# Compared: every *.csv both runs wrote (column by column, dropping the columns whose header
# names a time or a memory size: *seconds*, *_s, s_*, *sec*, *rss*), the stdout of toy --query
# and of bench-estimators (its median_s column dropped); the gnuplot scripts (*.gp) are
# compared too but only reported. Prints one line per file; exits 1 when a CSV differs or is
# missing on one side.
set -uo pipefail

old=$1 new=$2 work=$3
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export HYPERTAPE_DATA=${HYPERTAPE_DATA:-$here/../shared/data}
export OPENBLAS_NUM_THREADS=1
rm -rf "$work/a" "$work/b"
mkdir -p "$work/a" "$work/b"

# run SIDE BUILD: the quick configurations, each into its own folder under WORK/SIDE.
run() {
  local d=$work/$1 bin=$2/experiments
  "$bin/toy" --out "$d/toy" --iters 60 2>"$d/toy.log"
  "$bin/toy" --query --lambda=1,1 --K=10 >"$d/toy-query.txt" 2>&1
  "$bin/toy" --query --lambda=0.5,-2 --K=3 --T=20 --tilde >>"$d/toy-query.txt" 2>&1
  "$bin/hyperclean" --quick --hyper-iters 12 --out "$d/hyperclean" >"$d/hyperclean.log" 2>&1
  "$bin/taskinteract" --quick --out "$d/taskinteract" >"$d/ti-cifar.log" 2>&1
  "$bin/taskinteract" --quick --dataset omniglot --out "$d/taskinteract" >"$d/ti-omni.log" 2>&1
  "$bin/oneshot" --quick --out "$d/oneshot" >"$d/oneshot.log" 2>&1
  "$bin/oneshot" --quick --hyper-iters 3 --relerr-tasks 0 --out "$d/oneshot-resumed" \
    >"$d/oneshot-resumed.log" 2>&1
  "$bin/oneshot" --quick --resume --out "$d/oneshot-resumed" >>"$d/oneshot-resumed.log" 2>&1
  "$bin/bench-estimators" --T 20,40 --K 5 --repeats 1 >"$d/bench-estimators.txt" 2>&1
  "$bin/bench-hyperclean" --csv --repeats 1 --n-train 500 --n-val 500 --K 1,5 \
    >"$d/bench-hyperclean.csv" 2>"$d/bench-hyperclean.log"
}

# strip FILE: the CSV without its timing and memory columns.
strip() {
  awk -F, 'NR == 1 { for (i = 1; i <= NF; i++)
                       keep[i] = $i !~ /seconds|_s$|^s_|sec|rss/ }
           { line = ""; sep = ""
             for (i = 1; i <= NF; i++) if (keep[i]) { line = line sep $i; sep = "," }
             print line }' "$1"
}

echo "running $old"
run a "$old"
echo "running $new"
run b "$new"

bad=0
while IFS= read -r f; do
  rel=${f#"$work/a/"}
  if [ ! -f "$work/b/$rel" ]; then
    echo "MISSING in new: $rel"; bad=1
  elif cmp -s <(strip "$f") <(strip "$work/b/$rel"); then
    echo "same: $rel ($(wc -l <"$f") lines)"
  else
    echo "DIFFERS: $rel"; bad=1
    diff <(strip "$f") <(strip "$work/b/$rel") | head -5 | sed 's/^/    /'
  fi
done < <(find "$work/a" -name '*.csv' | sort)
while IFS= read -r f; do
  rel=${f#"$work/b/"}
  [ -f "$work/a/$rel" ] || { echo "MISSING in old: $rel"; bad=1; }
done < <(find "$work/b" -name '*.csv' | sort)

if cmp -s "$work/a/toy-query.txt" "$work/b/toy-query.txt"; then echo "same: toy --query output"
else echo "DIFFERS: toy --query output"; bad=1; fi
if cmp -s <(awk '{ $3 = ""; print }' "$work/a/bench-estimators.txt") \
          <(awk '{ $3 = ""; print }' "$work/b/bench-estimators.txt"); then
  echo "same: bench-estimators table (median_s aside)"
else echo "DIFFERS: bench-estimators table"; bad=1; fi

n_gp=0 n_gp_same=0
while IFS= read -r f; do
  rel=${f#"$work/a/"}
  n_gp=$((n_gp + 1))
  if cmp -s "$f" "$work/b/$rel" 2>/dev/null; then n_gp_same=$((n_gp_same + 1))
  else echo "note: gnuplot script differs: $rel"; fi
done < <(find "$work/a" -name '*.gp' | sort)
echo "gnuplot scripts: $n_gp_same of $n_gp identical"
[ "$bad" -eq 0 ] && echo "all CSV outputs identical (timing and memory columns aside)"
exit "$bad"
