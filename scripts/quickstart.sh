#!/usr/bin/env bash
# The quick start: installs what is missing, builds scfm, writes the built-in
# synthetic token set and pretrains configs/tiny.cfg on it, printing the loss.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell} OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
echo "== writing the built-in token set (2000 synthetic cells, 6 cell types)"
./build/tests/make_tokens build/fixtures/tokens 2000
echo "== pretraining configs/tiny.cfg (300 steps, masked-gene prediction)"
./build/scfm train configs/tiny.cfg 2>&1 | tee build/quickstart.log
echo "== outputs in checkpoints/tiny/: metrics.jsonl, config.cfg, step_0000300/model.safetensors"
