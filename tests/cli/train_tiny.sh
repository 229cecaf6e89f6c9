#!/usr/bin/env bash
# Training configs/tiny.cfg on the built-in token set lowers the loss and
# leaves the documented outputs.  usage: train_tiny.sh SCFM SOURCE_DIR WORK_DIR
set -euo pipefail
scfm=$1 src=$2 work=$3
make_tokens=$(dirname "$scfm")/tests/make_tokens
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
# mean loss of the first 10 steps against the last 20
awk -F'"loss": ' '{ split($2, a, ","); loss[NR] = a[1] }
  END {
    for (i = 1; i <= 10; i++) first += loss[i] / 10
    for (i = NR - 19; i <= NR; i++) last += loss[i] / 20
    printf "loss: first 10 steps %.3f, last 20 steps %.3f\n", first, last
    exit !(last < first - 0.3)
  }' $run/metrics.jsonl
