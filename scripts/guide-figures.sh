#!/usr/bin/env bash
# guide-figures.sh — draws docs/guide.md's figures with the programs that make them.
#
#   bash scripts/guide-figures.sh [BUILD_DIR]      (default: build/double, a -Dreal=double build)
#
# Each figure is named in the guide by a marker line
#   <!-- figure: guide-before guide-horizon --dot before -->
# which says: run BUILD_DIR/examples/guide-horizon --dot before, keep what it prints as
# docs/figures/guide-before.dot, and render that with Graphviz's dot as guide-before.png (the
# image the guide shows).  Figures no marker names any more are removed.  It records what it drew
# in docs/figures/guide-figures.sha256 (each file's SHA-256, and `dot -V`).  tests/guide.sh checks
# that each .dot is still what its program prints and each PNG the one drawn from it (redrawn and
# compared where `dot -V` is the recorded version); run this script when it says otherwise.
# Needs graphviz (scripts/setup.sh installs it).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build=${1:-$repo/build/double}
figures=$repo/docs/figures
if ! command -v dot >/dev/null 2>&1; then
  echo "guide-figures: Graphviz's dot is missing (bash scripts/setup.sh installs it)" >&2
  exit 1
fi
if [ ! -d "$build/examples" ]; then
  echo "guide-figures: no $build/examples: build it first (meson compile -C $build)" >&2
  exit 1
fi

made=()
while read -r name prog args; do
  # shellcheck disable=SC2086 # the arguments are words, as the marker writes them
  "$build/examples/$prog" $args >"$figures/$name.dot"
  dot -Tpng "$figures/$name.dot" -o "$figures/$name.png"
  made+=("$name")
  echo "docs/figures/$name.png  <-  $prog $args"
done < <(sed -n 's/^<!-- figure: \(.*\) -->$/\1/p' "$repo/docs/guide.md")

for old in "$figures"/guide-*.dot "$figures"/guide-*.png; do
  [ -e "$old" ] || continue
  name=$(basename "${old%.*}")
  if [[ " ${made[*]} " != *" $name "* ]]; then
    rm -f "$old"
    echo "removed ${old#"$repo"/}: no figure marker names it"
  fi
done

# The record tests/guide.sh checks the figures against.
record=$figures/guide-figures.sha256
{
  echo "# scripts/guide-figures.sh drew these; tests/guide.sh checks them against this record"
  echo "# graphviz: $(dot -V 2>&1)"
  for name in "${made[@]}"; do (cd "$figures" && sha256sum "$name.dot" "$name.png"); done
} >"$record.tmp"
mv "$record.tmp" "$record"
echo "docs/figures/guide-figures.sha256: recorded"
