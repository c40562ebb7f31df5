# Sourced by scripts/test.sh and scripts/run-main.sh; not run on its own.
# shellcheck shell=bash

# The repository root, whatever the caller's working directory.
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# The shared datasets: CI has them at ../shared/data beside the clone. A value already set by
# the caller wins.
if [ -z "${HYPERTAPE_DATA:-}" ] && [ -d "$repo/../shared/data" ]; then
  HYPERTAPE_DATA="$(cd "$repo/../shared/data" && pwd)"
  export HYPERTAPE_DATA
fi

# One BLAS thread: results reproducible bit for bit, and no oversubscription of 2 cores.
export OPENBLAS_NUM_THREADS=1

# ht_configure DIR [meson setup options...]
# Configures DIR, or reconfigures it with the given options if it was configured before.
ht_configure() {
  local dir=$1
  shift
  if [ -f "$dir/meson-private/coredata.dat" ]; then
    meson setup --reconfigure "$dir" "$@"
  else
    meson setup "$dir" "$@"
  fi
}
