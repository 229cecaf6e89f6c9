#!/usr/bin/env bash
# The quick start's pipeline, small: simulate -> vocab -> tokenize (2 ranks)
# -> train, and training refuses shards made with another vocabulary.
#   usage: pipeline.sh SCFM SOURCE_DIR WORK_DIR
set -euo pipefail
scfm=$1 src=$2 work=$3
rm -rf "$work" && mkdir -p "$work" && cd "$work"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpirun=(mpirun --oversubscribe -np 2)
"$scfm" simulate --cells 600 --genes 300 --types 4 --batches 2 --seed 3 -o atlas.h5ad --quiet
"$scfm" simulate --cells 100 --genes 200 --types 2 --batches 1 --seed 4 -o other.h5ad --quiet
"${mpirun[@]}" "$scfm" vocab atlas.h5ad -o vocab --special cls --quiet
"$scfm" vocab other.h5ad -o other_vocab --quiet
"${mpirun[@]}" "$scfm" tokenize --mode rank --vocab vocab atlas.h5ad -o shards --max-length 128 --quiet
"$scfm" train "$src/configs/tiny.cfg" --set data.shards=shards --set data.vocab=vocab --set checkpoint.dir=ck \
    --set train.steps=20 --set train.warmup_steps=2 --quiet
[[ $(wc -l <ck/tiny/metrics.jsonl) -eq 20 ]] || { echo "FAIL: expected 20 metric lines"; exit 1; }

set +e
"$scfm" train "$src/configs/tiny.cfg" --set data.shards=shards --set data.vocab=other_vocab --set checkpoint.dir=ck2 \
    --set train.steps=5 --set train.warmup_steps=1 --quiet 2>err.txt
rc=$?
set -e
cat err.txt
[[ $rc -eq 2 ]] || { echo "FAIL: another vocabulary: exit $rc, want 2"; exit 1; }
grep -q "vocab" err.txt || { echo "FAIL: the error does not mention the vocabulary"; exit 1; }
[[ ! -e ck2 ]] || { echo "FAIL: a refused run left ck2/ behind"; exit 1; }
echo "pipeline: ok"
