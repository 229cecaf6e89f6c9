#!/usr/bin/env bash
# Runs `scfm train` on this machine with every core as OpenMP threads, bound
# to cores. OPENBLAS_CORETYPE, where a machine needs it, passes through.
#   launch/local.sh CONFIG [--set section.key=value]...
# SCFM (default: build/scfm) and THREADS (default: all cores) override.
set -euo pipefail
[[ $# -ge 1 ]] || { echo "usage: launch/local.sh CONFIG [--set section.key=value]..." >&2; exit 2; }
here=$(cd "$(dirname "$0")/.." && pwd)
scfm=${SCFM:-$here/build/scfm}
[[ -x $scfm ]] || { echo "launch/local.sh: $scfm not found; build first (cmake -S . -B build && cmake --build build)" >&2; exit 1; }
export OMP_NUM_THREADS=${THREADS:-$(nproc)}
export OMP_PROC_BIND=${OMP_PROC_BIND:-close} OMP_PLACES=${OMP_PLACES:-cores}
exec "$scfm" train "$@"
