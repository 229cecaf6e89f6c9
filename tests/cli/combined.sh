#!/usr/bin/env bash
# configs/combined.cfg (masked genes at weight 0.2 and masked values at 1 on
# bin shards) on a simulated atlas of 100 genes, whose expressed genes (about
# 80) fit in 128 tokens: 300 steps train (the loss falls by a third, both
# terms counted: the step's targets are masked genes plus masked values),
# `scfm embed` writes a 64-wide embedding of every cell, and its kNN accuracy
# of the cell type is above the same-shaped model at its random
# initialisation (tests/cli/lib/knn_vs_random.sh; measured 0.40-0.42 against 0.30).
# Skips (77) without python3.  usage: combined.sh SCFM SOURCE_DIR WORK_DIR
set -euo pipefail
scfm=$1 src=$2 work=$3
rm -rf "$work" && mkdir -p "$work" && cd "$work"
source "$src/tests/cli/lib/checks.sh"
command -v python3 >/dev/null || { echo "skipped: python3 is needed"; exit 77; }
source "$src/tests/cli/lib/knn_vs_random.sh"

small_bin_atlas "$scfm"
common=(--set data.shards=bins --set data.vocab=vocab --set model.max_len=128)
knn_vs_random "$scfm" "$src/configs/combined.cfg" atlas.h5ad combined "${common[@]}"
python3 - <<'PY' || fail "loss, targets or embedding"
import json
lines = [json.loads(l) for l in open("ck/combined/metrics.jsonl")]
first, last = lines[0]["loss"], sum(l["loss"] for l in lines[-5:]) / 5
assert last < 2 / 3 * first, f"the loss did not fall by a third: {first:.3f} -> {last:.3f}"
# 15% of the genes and 40% of the values, about 0.54 of the tokens (the
# values alone would be under 0.4)
targets, tokens = sum(l["targets"] for l in lines), sum(l["tokens"] for l in lines)
assert targets > 0.5 * tokens, f"{targets} targets of {tokens} tokens"
rep = {r: json.load(open(f"report_{r}/report.json")) for r in ("combined", "random")}
emb = rep["combined"]["results"]["embedding"]
assert rep["combined"]["cells"]["evaluated"] == 1200 and emb["dim"] == 64, (rep["combined"]["cells"], emb["dim"])
knn = {r: rep[r]["results"]["embedding"]["knn_accuracy"] for r in rep}
print(f"combined: loss {first:.3f} -> {last:.3f}; kNN accuracy of the cell type trained {knn['combined']:.3f}, "
      f"random init {knn['random']:.3f}")
assert knn["combined"] > knn["random"] + 0.05, "combined training does not beat random initialisation"
PY
