#!/usr/bin/env bash
# The quick start: installs what is missing, builds scfm, then runs the main
# pipeline on the built-in synthetic atlas: simulate -> vocab -> tokenize ->
# train (configs/tiny.cfg), printing the loss as it falls -> embed every cell
# -> eval, printing the model's embedding against a PCA baseline; then the
# same for a count encoder (configs/scvi-like.cfg, scVI's NB VAE with the
# batch as a condition) on count shards of the same atlas.
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
echo "== scfm tokenize --mode counts (2 MPI ranks): each cell's raw counts over the vocabulary's genes"
"${mpirun[@]}" ./build/scfm tokenize --mode counts --vocab $out/vocab $out/atlas.h5ad -o $out/count_shards --force
echo "== scfm train configs/scvi-like.cfg: 800 steps of 128 cells (about 20 epochs) of an NB VAE"
./build/scfm train configs/scvi-like.cfg
echo "== scfm embed (2 MPI ranks) and eval: the VAE's 10-dimensional latent mean against PCA"
"${mpirun[@]}" ./build/scfm embed checkpoints/scvi-like $out/atlas.h5ad -o $out/embedded_scvi.h5ad --force
./build/scfm eval $out/embedded_scvi.h5ad --label cell_type --batch batch -o $out/report_scvi --force
echo "== outputs: $out/ (atlas, vocabulary, shards, count_shards, embedded.h5ad, embedded_scvi.h5ad,"
echo "   report/ and report_scvi/ with report.json and report.png),"
echo "   checkpoints/tiny/ and checkpoints/scvi-like/ (metrics.jsonl, config.cfg, the last step_*/)"
