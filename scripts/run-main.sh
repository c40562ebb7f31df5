#!/usr/bin/env bash
# Sets up the machine, builds hypertape in release mode (build/release, double precision) and
# runs the main job. Arguments are passed on to the main program (try --help).
set -euo pipefail

# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$repo"

main=build/release/experiments/toy

bash scripts/setup.sh
ht_configure build/release --buildtype=release -Dreal=double -Dtests=false
meson compile -C build/release

if [ ! -x "$main" ]; then
  echo "run-main: the main program ($main) is not built yet" >&2
  exit 1
fi
echo "run-main: $main $*" >&2
exec "$main" "$@"
