#!/usr/bin/env bash
# Installs, from Debian's packages, what hypertape needs to build, test and run its experiments.
# Idempotent: packages already installed are left alone, and `apt-get update` runs only when
# something is missing. Works as root (as CI runs) or through sudo.
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

installed() {
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

missing=()
for p in "${packages[@]}"; do
  installed "$p" || missing+=("$p")
done

# The optional packages the archive has (apt-cache knows them) join the list; the others are named.
for p in "${optional[@]}"; do
  installed "$p" && continue
  if apt-cache show "$p" >/dev/null 2>&1; then
    missing+=("$p")
  else
    echo "setup: optional package $p is not available here; building without it"
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages (and the optional ones available) already installed"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "setup: missing packages: ${missing[*]}" >&2
  echo "setup: not root and no sudo; install them as root: apt-get install ${missing[*]}" >&2
  exit 1
fi

echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -q
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -q --no-install-recommends "${missing[@]}"

for p in "${missing[@]}"; do
  installed "$p" || { echo "setup: $p still not installed" >&2; exit 1; }
done
echo "setup: done"
