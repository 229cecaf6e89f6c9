#!/usr/bin/env bash
# Training configs/tiny.cfg on the built-in token set lowers the loss and
# leaves the documented outputs.  usage: train_tiny.sh SCFM SOURCE_DIR WORK_DIR
set -euo pipefail
scfm=$1 src=$2 work=$3
make_tokens=$(dirname "$scfm")/tests/make_tokens
source "$src/tests/cli/lib/checks.sh"
rm -rf "$work" && mkdir -p "$work" && cd "$work"
steps=150
"$make_tokens" tokens 1000 >/dev/null
"$scfm" train "$src/configs/tiny.cfg" --set data.shards=tokens --set data.vocab= --set checkpoint.dir=ck \
    --set train.steps=$steps --set train.warmup_steps=15 --quiet
run=ck/tiny
for f in config.cfg metrics.jsonl step_0000$steps/model.safetensors step_0000$steps/config.cfg; do
    [[ -s $run/$f ]] || { echo "FAIL: $run/$f missing"; exit 1; }
done
lines=$(wc -l <$run/metrics.jsonl)
[[ $lines -eq $steps ]] || { echo "FAIL: $lines metric lines for $steps steps"; exit 1; }
grep -q '^steps = 150;' $run/config.cfg || grep -q 'steps = 150' $run/config.cfg ||
    { echo "FAIL: the resolved config does not hold the override"; exit 1; }
loss_fell "tiny, $steps steps" $run/metrics.jsonl
