#!/usr/bin/env bash
# test_install.sh SOURCE_ROOT — the install the README describes, end to end, in a temporary
# prefix: configure and build the library, `meson install` it, then build the README's consumer
# example (examples/consumer.c) with the README's exact command line and run it. Also checks
# that the umbrella header compiles on its own, pedantically, and that the program found the
# library through its rpath (not some other installed copy).
#
# Run by meson test (`install`); exits 0 on success, 1 with the failing step named.
set -euo pipefail

src=$(cd "${1:?usage: test_install.sh SOURCE_ROOT}" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/hypertape-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "test_install: FAILED: $*" >&2; exit 1; }

# The library alone (the programs and tests are not installed), built as a release.
PREFIX=$tmp/prefix
meson setup "$tmp/build" "$src" --prefix="$PREFIX" --buildtype=release -Dtests=false >"$tmp/setup.log" 2>&1 ||
  { cat "$tmp/setup.log" >&2; fail "meson setup"; }
meson compile -C "$tmp/build" hypertape:shared_library hypertape:static_library >"$tmp/compile.log" 2>&1 ||
  { cat "$tmp/compile.log" >&2; fail "meson compile"; }
meson install -C "$tmp/build" --no-rebuild >"$tmp/install.log" 2>&1 ||
  { cat "$tmp/install.log" >&2; fail "meson install"; }

# What the conventional places hold.
for f in include/hypertape/hypertape.h include/hypertape/hypertape_config.h \
         include/hypertape/ad/ad.h include/hypertape/ad/io.h include/hypertape/ops/ops.h \
         include/hypertape/models/models.h include/hypertape/optim/hypergrad.h \
         include/hypertape/optim/outer.h lib/x86_64-linux-gnu/pkgconfig/hypertape.pc \
         lib/x86_64-linux-gnu/libhypertape.so lib/x86_64-linux-gnu/libhypertape.a; do
  [ -e "$PREFIX/$f" ] || fail "meson install did not install $f"
done

mkdir "$tmp/app"
cp "$src/examples/consumer.c" "$tmp/app/"
cd "$tmp/app"

# ---- the README's lines, exactly (PREFIX is where `meson install` put hypertape) ----
export PKG_CONFIG_PATH=$PREFIX/lib/x86_64-linux-gnu/pkgconfig
cc -std=c11 -O2 consumer.c -o consumer $(pkg-config --cflags --libs hypertape) -Wl,-rpath,"$(pkg-config --variable=libdir hypertape)"
./consumer
# ---- end of the README's lines ----

[ -f dlam.npy ] || fail "consumer did not write dlam.npy"
# ldd's output is kept first: `ldd | grep -q` under pipefail fails when grep quits early
# and ldd dies of SIGPIPE.
libs=$(ldd ./consumer)
grep -q "libhypertape.so.0 => $PREFIX/lib/x86_64-linux-gnu/" <<<"$libs" ||
  { printf '%s\n' "$libs" >&2; fail "consumer does not load libhypertape from $PREFIX"; }

# The umbrella header on its own, as strictly as the library is compiled.
printf '#include <hypertape/hypertape.h>\nint main(void) { return ad_error_code(); }\n' > alone.c
cc -std=c11 -Wall -Wextra -Wpedantic -Werror -c alone.c $(pkg-config --cflags hypertape) ||
  fail "<hypertape/hypertape.h> does not compile on its own with -std=c11 -Wpedantic -Werror"
echo "test_install: ok (installed into a temporary prefix, consumer built and run)"
