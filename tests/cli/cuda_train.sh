#!/usr/bin/env bash
# scfm train with train.backend = "cuda" (CTest label "gpu"; exits 77,
# skipped, where the build has no CUDA backend or the machine no device):
#  1. 40 steps of configs/tiny.cfg (with dropout) on the GPU follow the CPU
#     run's losses within 5e-2 relative (bf16 Linear layers; the tolerance
#     is a first estimate, docs/cuda.md);
#  2. 150 steps on the GPU lower the loss as on the CPU (train_tiny.sh);
#  3. np=2 on the GPU (ranks share one GPU: the gradient sum goes through
#     the host; with a GPU per rank, over NCCL) follows np=1 with two
#     micro-batches a step within 1e-3;
#  4. a checkpoint written on the GPU resumes on the CPU, and one written on
#     the CPU resumes on the GPU, each close to the run that did not stop.
# With SCFM_TEST_EMULATED=1 (cli.cuda_train_emulated: SCFM_CUDA_LIBRARY names
# the CPU-emulated backend of tests/cuda/emu, some thousand times slower
# than a GPU) the same checks run on fewer and smaller steps, and 2 is left
# out (learning needs the 150 steps).
# usage: cuda_train.sh SCFM SOURCE_DIR WORK_DIR
set -euo pipefail
scfm=$1 src=$2 work=$3
make_tokens=$(dirname "$scfm")/tests/make_tokens
source "$src/tests/cli/lib/checks.sh"
rm -rf "$work" && mkdir -p "$work" && cd "$work"
"$make_tokens" tokens 1000 >/dev/null
cfg=$src/configs/tiny.cfg
base=(--set data.shards=tokens --set data.vocab= --set train.warmup_steps=5 --set model.dropout=0.05
      --set model.attention_dropout=0.05 --quiet)
# steps of checks 1, 2, 3 and 4, and 4's checkpoint interval
steps=(40 150 20 20) every=10
if [[ ${SCFM_TEST_EMULATED:-0} == 1 ]]; then
    steps=(6 0 5 6) every=3
    base+=(--set train.micro_batch_tokens=256)
fi

set +e
"$scfm" train "$cfg" "${base[@]}" --set checkpoint.dir=probe --set train.steps=5 --set train.backend=cuda >probe.txt 2>&1
rc=$?
set -e
if [[ $rc -ne 0 ]] && grep -qE "no CUDA device was found|has no CUDA backend" probe.txt; then
    echo "skipped: $(grep -oE 'train.backend "cuda": .*' probe.txt)"
    exit 77
fi
[[ $rc -eq 0 ]] || { cat probe.txt; fail "one step on the GPU failed"; }

run() { # DIR BACKEND STEPS [ARGS...]
    local dir=$1 backend=$2 steps=$3
    shift 3
    "$scfm" train "$cfg" "${base[@]}" --set checkpoint.dir="$dir" --set train.backend="$backend" \
        --set train.steps="$steps" "$@"
}

# 1. GPU against CPU, step by step
run cpu cpu "${steps[0]}"
run gpu cuda "${steps[0]}"
same_steps "GPU against CPU" cpu/tiny/metrics.jsonl gpu/tiny/metrics.jsonl "${steps[0]}" 5e-2 loss

# 2. it learns
if [[ ${steps[1]} -gt 0 ]]; then
    run long cuda "${steps[1]}" --set train.warmup_steps=15
    loss_fell "GPU, ${steps[1]} steps" long/tiny/metrics.jsonl
fi

# 3. two ranks against one: 400 cells of exactly 64 tokens, so that one rank
# with 2 micro-batches of 256 tokens and two ranks with 1 each see the same
# 8 cells a step (as distributed.sh)
"$(dirname "$scfm")/tests/make_tokens" tokens64 400 300 6 1 64 64 >/dev/null
fixed=(--set data.shards=tokens64 --set model.max_len=64 --set train.micro_batch_tokens=256
       --set train.steps="${steps[2]}")
run one cuda "${steps[2]}" "${fixed[@]}" --set train.accumulate=2
mpirun --oversubscribe -np 2 "$scfm" train "$cfg" "${base[@]}" "${fixed[@]}" --set checkpoint.dir=two \
    --set train.backend=cuda
same_steps "GPU, np=2 against np=1 with accumulation 2" one/tiny/metrics.jsonl two/tiny/metrics.jsonl "${steps[2]}" \
    1e-3 loss grad_norm

# 4. checkpoints across backends: a run with a checkpoint half way; a copy
# resumed from there on the other backend
last=${steps[3]}
for from in cuda cpu; do
    to=$([[ $from == cuda ]] && echo cpu || echo cuda)
    run "whole_$from" "$from" "$last" --set checkpoint.every="$every"
    cp -r "whole_$from" "resumed_$from"
    rm -r "resumed_$from/tiny/$(printf step_%07d "$last")"
    printf "step_%07d" "$every" >"resumed_$from/tiny/latest"
    head -"$every" "whole_$from/tiny/metrics.jsonl" >"resumed_$from/tiny/metrics.jsonl"
    run "resumed_$from" "$to" "$last" --set checkpoint.every="$every" --resume
    same_steps "written on $from, resumed on $to" "whole_$from/tiny/metrics.jsonl" "resumed_$from/tiny/metrics.jsonl" \
        "$last" 5e-2 loss
done
echo "cuda_train: all checks passed"
