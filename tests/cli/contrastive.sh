#!/usr/bin/env bash
# The contrastive objective (configs/contrastive.cfg, docs/objectives.md):
#  1. np=2 equals one process holding the same global batch: with cells of
#     64 tokens, one rank with a 512-token budget and two ranks with 256 each
#     see the same 8 cells per micro-batch index (16 views, the negatives of
#     each other), so every step's loss and gradient norm agree to 1e-5 and
#     the weights after 10 steps to 1e-4; the same cells split into 4
#     micro-batches of 4 cells at np=1 (fewer negatives) give other losses;
#  2. a run resumed from its step-5 checkpoint ends with the same weights,
#     bit for bit, and the same losses;
#  3. on a simulated atlas, 30 steps of masked genes + contrastive training
#     give `scfm eval` kNN accuracies of the cell type clearly above a model
#     of the same shape at its random initialisation (one step at lr 1e-12).
#   usage: contrastive.sh SCFM SOURCE_DIR WORK_DIR
set -euo pipefail
scfm=$1 src=$2 work=$3
tools=$(dirname "$scfm")/tests
rm -rf "$work" && mkdir -p "$work" && cd "$work"
source "$src/tests/cli/lib/checks.sh"
source "$src/tests/cli/lib/knn_vs_random.sh"
cfg=$src/configs/contrastive.cfg

# 1. the cross-rank loss and gradient
"$tools/make_tokens" tokens 400 300 6 1 64 64 >/dev/null
base=(--set data.shards=tokens --set data.vocab= --set model.max_len=64 --set model.dropout=0.1
      --set train.steps=10 --set train.warmup_steps=2 --set train.log_every_seconds=0 --set train.accumulate=2
      --set objective.projection_dim=32 --quiet)
OMP_NUM_THREADS=1 "$scfm" train "$cfg" "${base[@]}" --set checkpoint.dir=one --set train.micro_batch_tokens=512
OMP_NUM_THREADS=1 mpirun --oversubscribe -np 2 "$scfm" train "$cfg" "${base[@]}" --set checkpoint.dir=two \
    --set train.micro_batch_tokens=256
OMP_NUM_THREADS=1 "$scfm" train "$cfg" "${base[@]}" --set checkpoint.dir=small --set train.micro_batch_tokens=256 \
    --set train.accumulate=4
# step, loss, contrastive loss and gradient norm of each step
fields() { sed -E 's/.*"step": ([0-9]+).*"loss": ([-0-9.e]+).*"grad_norm": ([0-9.e]+).*"contrastive_loss": ([0-9.e]+).*/\1 \2 \4 \3/' "$1"; }
same_steps "np=2 against np=1" one/contrastive/metrics.jsonl two/contrastive/metrics.jsonl 10 1e-5 \
    loss contrastive_loss grad_norm || fail "np=2 differs from one process with the same global batch"
"$tools/compare_weights" one/contrastive/step_0000010/model.safetensors two/contrastive/step_0000010/model.safetensors \
    1e-4 key.bias || fail "np=2 weights differ from np=1"
# ZeRO-1 (each rank updates half of the parameters from reduce-scattered
# gradients, with the learned temperature's among them) takes the same steps
OMP_NUM_THREADS=1 mpirun --oversubscribe -np 2 "$scfm" train "$cfg" "${base[@]}" --set checkpoint.dir=zero \
    --set train.micro_batch_tokens=256 --set train.zero1=1 --set objective.learn_temperature=1
OMP_NUM_THREADS=1 mpirun --oversubscribe -np 2 "$scfm" train "$cfg" "${base[@]}" --set checkpoint.dir=plain \
    --set train.micro_batch_tokens=256 --set objective.learn_temperature=1
same_steps "ZeRO-1 against plain data parallel, np=2" plain/contrastive/metrics.jsonl zero/contrastive/metrics.jsonl \
    10 1e-5 loss contrastive_loss grad_norm || fail "ZeRO-1 changes the contrastive run"
"$tools/compare_weights" plain/contrastive/step_0000010/model.safetensors zero/contrastive/step_0000010/model.safetensors \
    1e-5 key.bias || fail "ZeRO-1 weights differ"
paste <(fields one/contrastive/metrics.jsonl) <(fields small/contrastive/metrics.jsonl) | awk '
  { d = $3 - $7; if (d < 0) d = -d; if (d > worst) worst = d }
  END { printf "fewer negatives per micro-batch: InfoNCE differs by up to %.3f\n", worst; exit !(worst > 0.05) }' ||
    fail "the InfoNCE loss does not depend on which views are negatives"

# 2. resuming from step 5 repeats the uninterrupted run's last 5 steps bit for bit
# (views, masks and dropout are keyed by seed, epoch and cell): 1's np=1 run
# again with checkpoints at steps 5 and 10, then a copy resumed from step 5
rm -rf one
OMP_NUM_THREADS=1 "$scfm" train "$cfg" "${base[@]}" --set checkpoint.dir=one --set train.micro_batch_tokens=512 \
    --set checkpoint.every=5
cp -r one resumed
rm -r resumed/contrastive/step_0000010
printf step_0000005 >resumed/contrastive/latest
head -5 one/contrastive/metrics.jsonl >resumed/contrastive/metrics.jsonl
OMP_NUM_THREADS=1 "$scfm" train "$cfg" "${base[@]}" --set checkpoint.dir=resumed --set train.micro_batch_tokens=512 \
    --set checkpoint.every=5 --resume
cmp one/contrastive/step_0000010/model.safetensors resumed/contrastive/step_0000010/model.safetensors ||
    fail "a resumed contrastive run differs from the uninterrupted one"
[[ "$(fields one/contrastive/metrics.jsonl)" == "$(fields resumed/contrastive/metrics.jsonl)" ]] ||
    fail "a resumed contrastive run's losses differ"
echo "resumed from step 5: identical weights and losses at step 10"

# 3. kNN accuracy of the cell type, trained against random initialisation
"$scfm" simulate --cells 1500 --genes 500 --types 6 --batches 2 --seed 3 -o atlas.h5ad --quiet
"$scfm" vocab atlas.h5ad -o vocab --quiet
"$scfm" tokenize --mode rank --vocab vocab atlas.h5ad -o shards --max-length 64 --quiet
knn_vs_random "$scfm" "$cfg" atlas.h5ad trained --set data.shards=shards --set data.vocab=vocab \
    --set train.micro_batch_tokens=2048 --set train.steps=30 --set train.warmup_steps=3
trained=$(knn_accuracy trained) random=$(knn_accuracy random)
echo "kNN accuracy of the cell type: trained $trained, random initialisation $random"
awk -v t="$trained" -v r="$random" 'BEGIN { exit !(t > r + 0.2) }' ||
    fail "contrastive training does not beat random initialisation clearly"
