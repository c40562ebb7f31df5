#!/usr/bin/env bash
# Installs, from Debian's packages, what hypertape needs to build, test and run its experiments.
# Idempotent: packages already installed are left alone, and `apt-get update` runs only when
# something is missing. Works as root (as CI runs) or through sudo.
#
# Exit status 1 only when a required package is missing and cannot be installed. The optional
# ones are judged after `apt-get update` (on a fresh image the package lists are empty and every
# package looks unavailable), installed by an apt-get of their own, and when that is not possible
# (not in the archive, not root, the install fails) setup says so and goes on.
#
# The sanitizer build build/asan uses gcc's -fsanitize=address,undefined: its runtimes
# (libasan8, liblsan0, libubsan1) come with gcc itself on Debian 12 (gcc-12 -> libgcc-12-dev).
# The ThreadSanitizer build build/tsan uses clang, whose sanitizer runtimes are in libclang-rt-dev
# (only recommended by clang, and recommends are not installed here); the fuzz targets
# (build/fuzz) need the same clang, and libFuzzer from that package. build/tsan runs the OpenMP
# kernels on LLVM's OpenMP runtime (libomp-dev: clang's -fopenmp links it), with its Archer tool
# (libarcher.so, in the same package) telling ThreadSanitizer about libomp's barriers; gcc's
# libgomp has no such tool. Without libomp-dev, scripts/test.sh builds build/tsan without OpenMP
# and says so (with CI set, a failure).
set -euo pipefail

packages=(
  gcc libc6-dev             # compiler (present on most machines; listed for a minimal Debian)
  clang libclang-rt-dev     # scripts/test.sh's build/tsan (ThreadSanitizer) and build/fuzz (libFuzzer)
  libomp-dev                # build/tsan's OpenMP: LLVM's libomp and Archer (TSan sees its barriers)
  meson ninja-build pkg-config
  libopenblas-dev           # BLAS (cblas.h)
  check                     # unit-test framework
  zlib1g-dev                # reading the gzipped IDX/CIFAR datasets
  libstb-dev                # stb_image (Omniglot PNGs) and stb_image_write
  libzip-dev                # reading the Omniglot zips in place
  gnuplot-nox               # figures of the experiments
  libopenmpi-dev openmpi-bin  # MPI: mpirun -n P oneshot/taskinteract/hyperclean (meson -Dmpi=auto)
  graphviz                  # dot: docs/guide.md's figures (scripts/guide-figures.sh)
  dataset-fashion-mnist     # Fashion-MNIST, in /usr/share/datasets/fashion-mnist/
)

# Optional: used when the distribution has it, and nothing fails when it does not.
optional=(
  libdnnl-dev               # oneDNN: conv2d's kernels in the float build (meson -Ddnnl=auto)
)

# curl: the download cases of tests/get-data.sh (file:// addresses, no network), so CI runs them.
packages+=(curl)

installed() {
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

# available PACKAGE: the package lists know PACKAGE (apt-cache has a candidate for it).
available() {
  apt-cache show "$1" >/dev/null 2>&1
}

missing=() opt_missing=()
for p in "${packages[@]}"; do
  installed "$p" || missing+=("$p")
done
for p in "${optional[@]}"; do
  installed "$p" || opt_missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ] && [ ${#opt_missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages and the ${#optional[@]} optional ones already installed"
  exit 0
fi

# Without root: a missing required package is an error; missing optional ones only a note.
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: missing packages: ${missing[*]}" >&2
    echo "setup: not root and no sudo; install them as root: apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: optional packages not installed: ${opt_missing[*]} (not root and no sudo);" \
    "building without them"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive

# The lists are refreshed when a required package is missing, or an optional one is unknown to
# them (a fresh image's lists are empty): then, and only then, is an optional one judged absent.
update=false
[ ${#missing[@]} -gt 0 ] && update=true
for p in "${opt_missing[@]}"; do
  available "$p" || update=true
done
if $update; then
  echo "setup: apt-get update"
  if ! "${as_root[@]}" apt-get update -q; then
    [ ${#missing[@]} -gt 0 ] && { echo "setup: apt-get update failed" >&2; exit 1; }
    echo "setup: warning: apt-get update failed; judging the optional packages on the old lists"
  fi
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  if ! "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -q --no-install-recommends "${missing[@]}"; then
    echo "setup: apt-get install failed" >&2
    exit 1
  fi
  for p in "${missing[@]}"; do
    installed "$p" || { echo "setup: $p still not installed" >&2; exit 1; }
  done
fi

# The optional ones, each on its own: a failure is a warning, never the exit status.
for p in "${opt_missing[@]}"; do
  if ! available "$p"; then
    echo "setup: optional package $p is not available here; building without it"
  elif ! "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -q --no-install-recommends "$p" || ! installed "$p"; then
    echo "setup: warning: optional package $p did not install; building without it"
  else
    echo "setup: installed optional package $p"
  fi
done
echo "setup: done"
