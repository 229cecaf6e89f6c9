#!/usr/bin/env bash
# The scGPT-style value objective end to end: simulate -> vocab -> tokenize
# --mode bin -> train configs/scgpt-like.cfg briefly (value CE + MVC, batch
# condition): the resolved config records the shards' bins and conditions and
# the loss falls. Then the issue's criterion for the value objective: the
# value head alone (objective.mvc = 0, no condition), 300 steps, gives `scfm
# eval` kNN accuracies of the cell type clearly above the same-shaped model at
# its random initialisation (tests/cli/lib/knn_vs_random.sh). The atlas has 100 genes so that all of a cell's expressed
# genes (about 80) fit in 128 tokens: with more genes than tokens, binning
# samples the genes and the sample says little about the type
# (docs/objectives.md, "Measured so far", also for why MVC and the condition
# are left out of the kNN run). A value objective on rank shards is a
# configuration error naming data.shards.
# Skips (77) without python3.  usage: value.sh SCFM SOURCE_DIR WORK_DIR
set -euo pipefail
scfm=$1 src=$2 work=$3
rm -rf "$work" && mkdir -p "$work" && cd "$work"
source "$src/tests/cli/lib/checks.sh"
command -v python3 >/dev/null || { echo "skipped: python3 is needed"; exit 77; }
source "$src/tests/cli/lib/knn_vs_random.sh"

small_bin_atlas "$scfm"
"$scfm" tokenize --mode rank --vocab vocab atlas.h5ad -o ranks --max-length 128 --quiet
common=(--set data.vocab=vocab --set checkpoint.dir=ck --set model.max_len=128 --quiet)

set +e
"$scfm" train "$src/configs/scgpt-like.cfg" --set data.shards=ranks "${common[@]}" >out.txt 2>&1
code=$?
set -e
[[ $code -eq 2 ]] || { cat out.txt; fail "a value objective on rank shards exited $code, expected 2"; }
grep -q "data.shards" out.txt && grep -q "objective.value" out.txt || { cat out.txt; fail "the error names neither key"; }

"$scfm" train "$src/configs/scgpt-like.cfg" --set data.shards=bins "${common[@]}" \
    --set train.steps=30 --set train.warmup_steps=5
grep -q "value_bins = 11;" ck/scgpt-like/config.cfg || fail "the resolved config does not record the shards' 11 bins"
grep -q "num_conditions = 2;" ck/scgpt-like/config.cfg || fail "the resolved config does not record 2 batches"
# the condition at embedding time: left out, or a reference category of the
# checkpoint's conditions.tsv for every cell; an unknown one is refused
[[ "$(cat ck/scgpt-like/step_*/conditions.tsv)" == $'batch_0\nbatch_1' ]] || fail "conditions.tsv does not list the batches"
"$scfm" embed ck/scgpt-like atlas.h5ad -o left_out.h5ad --quiet
"$scfm" embed ck/scgpt-like atlas.h5ad -o reference.h5ad --condition batch_1 --quiet
expect_fail 2 "not a category of obs column 'batch'.*'batch_0', 'batch_1'" \
    "$scfm" embed ck/scgpt-like atlas.h5ad -o bad.h5ad --condition batch_9 --quiet
[[ ! -e bad.h5ad ]] || fail "a refused --condition left an output"
python3 - <<'PY' || fail "--condition had no effect"
import h5py, numpy as np
a, b = (h5py.File(f, "r")["obsm/X_scfm"][:] for f in ("left_out.h5ad", "reference.h5ad"))
assert a.shape == b.shape == (1200, 64) and np.abs(a - b).max() > 1e-3, np.abs(a - b).max()
PY

# the value head alone, without the condition: scfm embed leaves the
# condition out, so a model trained with it sees an input unlike training's
knn_vs_random "$scfm" "$src/configs/scgpt-like.cfg" atlas.h5ad value "${common[@]}" --set data.shards=bins \
    --set objective.mvc=0 --set model.condition_column= --set train.lr=5e-3 --set train.micro_batch_tokens=1024 \
    --set train.steps=300 --set train.warmup_steps=20
python3 - <<'PY' || fail "loss or kNN accuracy"
import json
lines = [json.loads(l) for l in open("ck/scgpt-like/metrics.jsonl")]
first, last = lines[0]["loss"], sum(l["loss"] for l in lines[-5:]) / 5
assert last < 0.5 * first, f"the value loss did not fall: {first:.3f} -> {last:.3f}"
knn = {r: json.load(open(f"report_{r}/report.json"))["results"]["embedding"]["knn_accuracy"] for r in ("value", "random")}
print(f"scgpt-like: loss {first:.3f} -> {last:.3f}; value head alone: kNN accuracy of the cell type "
      f"trained {knn['value']:.3f}, random init {knn['random']:.3f}")
assert knn["value"] > knn["random"] + 0.15, "value training does not beat random initialisation clearly"
PY
