#!/usr/bin/env bash
# scfm finetune and scfm predict: a pretrained checkpoint fine-tuned on the
# simulated atlas's cell types (2 ranks) classifies held-out cells well;
# frozen layers stay unchanged; predict writes labels anndata reads; bad input
# fails cleanly.  usage: finetune.sh SCFM SOURCE_DIR WORK_DIR
set -euo pipefail
scfm=$1 src=$2 work=$3
rm -rf "$work" && mkdir -p "$work" && cd "$work"
source "$src/tests/cli/lib/checks.sh"
mpirun=(mpirun --oversubscribe -np 2)

"$scfm" simulate --cells 1200 --genes 400 --types 4 --batches 2 --seed 5 -o atlas.h5ad >/dev/null 2>&1
"$scfm" vocab atlas.h5ad -o vocab --quiet
"$scfm" tokenize --mode rank --vocab vocab atlas.h5ad -o shards --max-length 64 --quiet
"$scfm" train "$src/configs/tiny.cfg" --set data.shards=shards --set data.vocab=vocab --set checkpoint.dir=ck \
    --set model.max_len=64 --set train.steps=30 --set train.warmup_steps=3 --quiet

common=(--set data.shards=shards --set checkpoint.dir=ck --set train.steps=120 --set train.warmup_steps=10
        --set train.micro_batch_tokens=1024 --set checkpoint.every=60)
"${mpirun[@]}" "$scfm" finetune "$src/configs/finetune.cfg" --from ck/tiny "${common[@]}" --label cell_type --quiet
run=ck/finetune
for f in labels.tsv step_0000120/labels.tsv step_0000120/vocab.tsv step_0000120/model.safetensors; do
    [[ -s $run/$f ]] || fail "$run/$f missing"
done
[[ $(wc -l <$run/labels.tsv) -eq 4 ]] || fail "labels.tsv should list the 4 cell types"
grep -q 'num_labels = 4' $run/config.cfg || fail "the resolved config does not record num_labels = 4"
# the last validation line: high accuracy and macro-F1 on the held-out cells
grep '"val_accuracy"' $run/metrics.jsonl | tail -1 | awk -F'"val_accuracy": ' '{
    split($2, a, ","); acc = a[1]; split($0, b, "\"val_macro_f1\": "); split(b[2], c, "}"); f1 = c[1]
    printf "finetune: held-out accuracy %.4f, macro-F1 %.4f\n", acc, f1
    exit !(acc > 0.9 && f1 > 0.9) }' || fail "held-out accuracy or macro-F1 not above 0.9"

# frozen embeddings and first layer: identical to the pretrained weights
"$scfm" finetune "$src/configs/finetune.cfg" --from ck/tiny "${common[@]}" --set train.steps=10 \
    --set checkpoint.run=frozen --freeze 1 --quiet
if python3 -c 'import numpy' 2>/dev/null; then
    python3 - "$src/tests/reference" <<'PY' || fail "frozen weights"
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
from bert_numpy import read_safetensors
before = read_safetensors("ck/tiny/step_0000030/model.safetensors")
after = read_safetensors("ck/frozen/step_0000010/model.safetensors")
frozen = [k for k in before if k.startswith("bert.embeddings.") or k.startswith("bert.encoder.layer.0.")]
moved = [k for k in before if k.startswith("bert.encoder.layer.1.") and not np.array_equal(before[k], after[k])]
assert frozen and all(np.array_equal(before[k], after[k]) for k in frozen), "a frozen tensor changed"
assert moved, "layer 1 did not train"
assert "classifier.weight" in after and after["classifier.weight"].shape == (4, 64)
print(f"finetune: {len(frozen)} frozen tensors unchanged, {len(moved)} tensors of layer 1 trained")
PY
fi

# resuming a fine-tuning run continues it exactly: 20 steps, then 20 more with
# --resume, equal the 40 steps of one run (a constant rate after warm-up, so
# the first 20 steps do not depend on train.steps)
compare_weights=$(dirname "$scfm")/tests/compare_weights
short=(--set train.warmup_steps=4 --set train.schedule=constant --set checkpoint.every=20)
"$scfm" finetune "$src/configs/finetune.cfg" --from ck/tiny "${common[@]}" "${short[@]}" --set train.steps=40 \
    --set checkpoint.run=whole --quiet
"$scfm" finetune "$src/configs/finetune.cfg" --from ck/tiny "${common[@]}" "${short[@]}" --set train.steps=20 \
    --set checkpoint.run=halves --quiet
"$scfm" finetune "$src/configs/finetune.cfg" --from ck/tiny "${common[@]}" "${short[@]}" --set train.steps=40 \
    --set checkpoint.run=halves --resume --quiet
"$compare_weights" ck/whole/step_0000040/model.safetensors ck/halves/step_0000040/model.safetensors 0 ||
    fail "a resumed fine-tuning run differs from the uninterrupted one"

"${mpirun[@]}" "$scfm" predict $run atlas.h5ad -o predicted.h5ad --quiet
if python3 -c 'import anndata' 2>/dev/null; then
    python3 - <<'PY' || fail "predict output"
import anndata as ad, numpy as np
a = ad.read_h5ad("atlas.h5ad"); b = ad.read_h5ad("predicted.h5ad")
assert b.var.equals(a.var) and b.obs[["cell_type", "batch"]].equals(a.obs[["cell_type", "batch"]])
p = b.obsm["scfm_probabilities"]
assert p.shape == (1200, 4) and np.allclose(p.sum(1), 1, atol=1e-5)
pred = b.obs["scfm_prediction"]
assert list(pred.cat.categories) == [l.strip() for l in open("ck/finetune/labels.tsv")]
acc = (pred.astype(str) == a.obs["cell_type"].astype(str)).mean()
assert (np.array(pred.cat.codes) == p.argmax(1)).all()
print(f"predict: accuracy on all cells {acc:.4f}")
assert acc > 0.9
PY
fi

expect_fail 2 "no categorical obs column 'tissue'" "$scfm" finetune "$src/configs/finetune.cfg" --from ck/tiny \
    "${common[@]}" --set checkpoint.run=bad --label tissue --quiet
expect_fail 1 "no valid checkpoint\|not a checkpoint" "$scfm" finetune "$src/configs/finetune.cfg" --from nowhere \
    "${common[@]}" --set checkpoint.run=bad --quiet
expect_fail 2 "freeze_layers (5) must be <=" "$scfm" finetune "$src/configs/finetune.cfg" --from ck/tiny \
    "${common[@]}" --set checkpoint.run=bad --freeze 5 --quiet
expect_fail 1 "has no labels.tsv" "$scfm" predict ck/tiny atlas.h5ad -o x.h5ad --quiet
expect_fail 2 "exists" "$scfm" predict $run atlas.h5ad -o predicted.h5ad --quiet
[[ ! -e x.h5ad ]] || fail "a failed predict left an output"
echo "finetune: ok"
