#!/usr/bin/env bash
# The quick start: installs what is missing, builds scfm, then runs the main
# pipeline on the built-in synthetic atlas: simulate -> vocab -> tokenize ->
# train (configs/tiny.cfg), printing the loss as it falls -> embed every cell
# -> eval, printing the model's embedding against a PCA baseline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell} OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
out=build/quickstart
mkdir -p $out
mpirun=(mpirun --oversubscribe -np 2)
echo "== scfm simulate: 5000 cells x 2000 genes, 8 cell types, 2 batches"
./build/scfm simulate --cells 5000 --genes 2000 --types 8 --batches 2 --seed 1 -o $out/atlas.h5ad --force
echo "== scfm vocab (2 MPI ranks): gene dictionary and medians"
"${mpirun[@]}" ./build/scfm vocab $out/atlas.h5ad -o $out/vocab --force
echo "== scfm tokenize --mode rank (2 MPI ranks): Geneformer rank-value tokens, 256 per cell"
"${mpirun[@]}" ./build/scfm tokenize --mode rank --vocab $out/vocab $out/atlas.h5ad -o $out/shards --max-length 256 --force
echo "== scfm train configs/tiny.cfg: 300 steps of masked-gene prediction"
./build/scfm train configs/tiny.cfg
echo "== scfm embed (2 MPI ranks): every cell's mean-pooled embedding into obsm['X_scfm']"
"${mpirun[@]}" ./build/scfm embed checkpoints/tiny $out/atlas.h5ad -o $out/embedded.h5ad --force
echo "== scfm eval: the embedding against PCA of the counts (kNN accuracy, clusters, silhouette, batch mixing)"
./build/scfm eval $out/embedded.h5ad --label cell_type --batch batch -o $out/report --force
echo "== outputs: $out/ (atlas, vocabulary, shards, embedded.h5ad, report/report.json and report.png),"
echo "   checkpoints/tiny/ (metrics.jsonl, config.cfg, step_0000300/)"
