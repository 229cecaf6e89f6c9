#!/usr/bin/env bash
# Usage: run_install_test.sh BUILD_DIR SOURCE_DIR WORK_DIR
#
# Installs the scfm build in BUILD_DIR into WORK_DIR/prefix, then checks that
# another program can use it:
#   1. consumer.c built with `cc $(pkg-config --cflags --libs scfm)`, and run;
#   2. tests/install/consumer/ configured with -DCMAKE_PREFIX_PATH=WORK_DIR/prefix
#      (find_package(scfm), target scfm::scfm), built and run;
#   3. WORK_DIR/prefix/bin/scfm --version.
# Environment: CC, CMAKE, PKG_CONFIG pick the tools (defaults cc, cmake,
# pkg-config); SCFM_INSTALL_CONFIG the configuration to install (multi-config).
set -euo pipefail

if [ $# -ne 3 ]; then
    echo "usage: $0 BUILD_DIR SOURCE_DIR WORK_DIR" >&2
    exit 2
fi
build_dir=$(cd "$1" && pwd)
source_dir=$(cd "$2" && pwd)
work_dir=$3
CC=${CC:-cc}
CMAKE=${CMAKE:-cmake}
PKG_CONFIG=${PKG_CONFIG:-pkg-config}

step() { printf '\n== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

# Nothing from the environment may help the installed files be found.
unset DESTDIR LD_LIBRARY_PATH PKG_CONFIG_LIBDIR CMAKE_PREFIX_PATH scfm_DIR || true

rm -rf "$work_dir"
mkdir -p "$work_dir"
work_dir=$(cd "$work_dir" && pwd)
prefix=$work_dir/prefix

step "cmake --install $build_dir --prefix $prefix"
config_args=()
if [ -n "${SCFM_INSTALL_CONFIG:-}" ]; then config_args=(--config "$SCFM_INSTALL_CONFIG"); fi
"$CMAKE" --install "$build_dir" --prefix "$prefix" "${config_args[@]}" \
    || fail "cmake --install failed"

# The library may live in lib/ or lib/<multiarch>/ (GNUInstallDirs).
pcfile=$(find "$prefix" -path '*/pkgconfig/scfm.pc' -print -quit)
[ -n "$pcfile" ] || fail "no pkgconfig/scfm.pc under $prefix"
libdir=$(dirname "$(dirname "$pcfile")")

step "installed files"
for f in "$libdir/libscfm.so" "$prefix/bin/scfm" \
         "$libdir/cmake/scfm/scfmConfig.cmake" "$libdir/cmake/scfm/scfmConfigVersion.cmake" \
         "$libdir/cmake/scfm/scfmTargets.cmake"; do
    [ -e "$f" ] || fail "missing $f"
    echo "ok  ${f#"$prefix"/}"
done
[ -L "$libdir/libscfm.so" ] || fail "$libdir/libscfm.so is not the development symlink"
ls "$libdir"/libscfm.so.[0-9]* >/dev/null 2>&1 || fail "no versioned libscfm.so.N (SOVERSION) in $libdir"
for h in "$source_dir"/include/scfm/*.h; do
    [ -f "$prefix/include/scfm/$(basename "$h")" ] || fail "header $(basename "$h") not installed"
done
echo "ok  include/scfm/ ($(ls "$prefix"/include/scfm/*.h | wc -l) headers)"

# Checks that an executable loads libscfm from the installed prefix.
uses_installed_lib() {
    local exe=$1 resolved
    resolved=$(ldd "$exe" | awk '$1 ~ /^libscfm\.so/ {print $3}')
    [ -n "$resolved" ] || fail "$exe: ldd does not resolve libscfm: $(ldd "$exe")"
    case $(readlink -f "$resolved") in
        "$(readlink -f "$libdir")"/*) echo "ok  $(basename "$exe") loads $resolved" ;;
        *) fail "$exe loads $resolved, not the library under $libdir" ;;
    esac
}

step "1. pkg-config"
export PKG_CONFIG_PATH=$libdir/pkgconfig
version=$("$PKG_CONFIG" --modversion scfm) || fail "pkg-config cannot read $pcfile"
flags=$("$PKG_CONFIG" --cflags --libs scfm) || fail "pkg-config --cflags --libs scfm failed"
echo "scfm $version: $flags"
case $flags in
    *"-I$prefix/include"*) ;;
    *) fail "pkg-config --cflags does not give -I$prefix/include: $flags" ;;
esac
# shellcheck disable=SC2086  # the flags are meant to be split
"$CC" -std=c11 -Wall -Wextra -Werror -o "$work_dir/consumer-pc" \
    "$source_dir/tests/install/consumer.c" $flags \
    || fail "compiling consumer.c with pkg-config flags failed"
uses_installed_lib "$work_dir/consumer-pc"
"$work_dir/consumer-pc" || fail "consumer built with pkg-config exited with $?"
unset PKG_CONFIG_PATH

step "2. find_package(scfm)"
"$CMAKE" -S "$source_dir/tests/install/consumer" -B "$work_dir/consumer-build" \
    -DCMAKE_C_COMPILER="$CC" -DCMAKE_PREFIX_PATH="$prefix" -DSCFM_EXPECTED_PREFIX="$prefix" \
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF \
    || fail "configuring the find_package consumer failed"
"$CMAKE" --build "$work_dir/consumer-build" || fail "building the find_package consumer failed"
uses_installed_lib "$work_dir/consumer-build/consumer"
"$work_dir/consumer-build/consumer" || fail "consumer built with find_package exited with $?"

step "3. $prefix/bin/scfm --version"
out=$("$prefix/bin/scfm" --version) || fail "bin/scfm --version exited with $?"
echo "$out"
uses_installed_lib "$prefix/bin/scfm"
[ "$out" = "scfm $version" ] || fail "bin/scfm --version printed '$out', expected 'scfm $version'"

printf '\nPASS: installed scfm %s works with pkg-config and find_package\n' "$version"
