#!/usr/bin/env bash
# Builds GMP configured for this machine's CPU (static, position-independent) into a
# prefix, from the GMP 6.3.0 source that ships inside the gmp-mpfr-sys crate already in
# cargo's registry (no download, no hand-edited copy of GMP). Then build gelunet against
# it with the `gmp-system` feature:
#
#   scripts/build-host-gmp.sh "$HOME/.local/gmp-host"
#   LIBRARY_PATH="$HOME/.local/gmp-host/lib" C_INCLUDE_PATH="$HOME/.local/gmp-host/include" \
#     cargo build --release -p gelunet-cli --features gmp-system
#
# Why: gmp-mpfr-sys always builds GMP's "fat" library, whose run-time CPU dispatch does
# not know recent Intel models (0xA7, 0x8F) and falls back to generic x86-64 code. GMP
# configured for the host runs its tuned assembly (README, "GMP for the host CPU").
#
# The host CPU: $GMP_HOST if set (a GMP cpu-vendor-os triple, e.g.
# skylake-pc-linux-gnu); else GMP's own config.guess (icelake-pc-linux-gnu on the
# project's 2-core machines), except that a generic x86_64 answer on a core with AVX2,
# BMI2 and ADX is configured as skylake.
set -euo pipefail

prefix=${1:?usage: scripts/build-host-gmp.sh PREFIX}
mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)

registry=${CARGO_HOME:-$HOME/.cargo}/registry/src
src=$(ls -d "$registry"/*/gmp-mpfr-sys-1.*/gmp-6.3.0-c 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$src" ]; then
  echo "no gmp-mpfr-sys source in $registry: run 'cargo fetch' (or build with --features gmp once) first" >&2
  exit 1
fi
command -v m4 >/dev/null || { echo "GMP's build needs m4 (apt-get install -y m4)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$src" "$work/gmp-src"
chmod -R u+w "$work/gmp-src"
# The crate's copy ships without execute bits on its scripts.
find "$work/gmp-src" -maxdepth 1 \( -name configure -o -name 'config.*' -o -name '*-sh' \) -exec chmod +x {} +
chmod +x "$work/gmp-src/configfsf.guess" "$work/gmp-src/configfsf.sub" 2>/dev/null || true

host=${GMP_HOST:-}
if [ -z "$host" ]; then
  guess=$(cd "$work/gmp-src" && ./config.guess)
  # A CPU config.guess names (e.g. zen3-pc-linux-gnu) is kept; a generic answer on a
  # core with AVX2, BMI2 and ADX becomes skylake.
  if [ "${guess%%-*}" = x86_64 ] && grep -qw avx2 /proc/cpuinfo && grep -qw bmi2 /proc/cpuinfo \
      && grep -qw adx /proc/cpuinfo; then
    host="skylake-${guess#*-}"
  else
    host=$guess
  fi
fi
echo "GMP 6.3.0 from $src"
echo "configured for $host, installed in $prefix"

mkdir -p "$work/build"
cd "$work/build"
"$work/gmp-src/configure" --host="$host" --prefix="$prefix" --disable-shared --enable-static \
  --with-pic >"$work/configure.log" 2>&1 || { tail -n 30 "$work/configure.log" >&2; exit 1; }
make -j"$(nproc)" >"$work/make.log" 2>&1 || { tail -n 30 "$work/make.log" >&2; exit 1; }
make check -j"$(nproc)" >"$work/check.log" 2>&1 || { tail -n 30 "$work/check.log" >&2; exit 1; }
make install >/dev/null
echo "done: $prefix/lib/libgmp.a ($(grep -m1 '^#define HAVE_HOST_CPU' config.h 2>/dev/null || echo "host $host"))"
