#!/usr/bin/env bash
# The whole test suite: installs what is missing, then builds and runs CTest
# twice, in a release build and in an ASan+UBSan build.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export OPENBLAS_CORETYPE=Haswell OMP_NUM_THREADS=2
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
jobs=$(nproc)

echo "== release build"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$jobs" >/dev/null
ctest --test-dir build --output-on-failure -j"$jobs"

echo "== sanitizer build (AddressSanitizer + UndefinedBehaviorSanitizer)"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSCFM_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$jobs" >/dev/null
# (the sanitizer options and LeakSanitizer's Open MPI suppressions are part of
# the tests' environment: tests/CMakeLists.txt)
ctest --test-dir build-asan --output-on-failure -j"$jobs"
