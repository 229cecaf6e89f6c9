#!/usr/bin/env bash
# The count encoders end to end (docs/encoders.md): simulate -> vocab ->
# tokenize --mode counts -> train -> embed -> eval.
#  1. every shipped count config (scvi-like, scmae-like, clear-like, linear)
#     trains 60 steps with its loss falling, and embeds every cell with a
#     model.latent-wide embedding; with the batch into the encoder,
#     `embed --condition` changes the embedding;
#  2. scvi-like and clear-like (negatives from every rank) at np=2 take the
#     same steps as np=1 on the same global batch (dropout, latent noise,
#     augmentations and the KL warm-up keyed by cell and step), and
#     a run resumed from its step-10 checkpoint ends bit for bit as the
#     uninterrupted one;
#  3. wrong pairings fail clearly: a transformer on count shards, a count
#     encoder on rank shards, --layer on a count encoder;
#  4. the issue's criterion: scvi-like (the batch conditioning the decoder)
#     mixes the two batches far better (iLISI) than the same model without
#     the condition, and its kNN accuracy of the cell type is at least PCA's
#     (2,000 steps on 2,000 cells x 500 genes; measured 0.9985 against PCA's
#     0.997, iLISI 0.91 against 0.01). The sanitizer build skips 4 (77 at the
#     end, after 1-3 ran): 4,000 training steps there take many minutes.
# Skips (77) without python3.  usage: encoders.sh SCFM SOURCE_DIR WORK_DIR
set -euo pipefail
scfm=$1 src=$2 work=$3
rm -rf "$work" && mkdir -p "$work" && cd "$work"
source "$src/tests/cli/lib/checks.sh"
command -v python3 >/dev/null || { echo "skipped: python3 is needed"; exit 77; }
tools=$(dirname "$scfm")/tests

"$scfm" simulate --cells 2000 --genes 500 --types 6 --batches 2 --seed 5 -o atlas.h5ad --quiet
"$scfm" vocab atlas.h5ad -o vocab --quiet
"$scfm" tokenize --mode counts --vocab vocab atlas.h5ad -o counts --quiet
data=(--set data.shards=counts --set data.vocab=vocab --quiet)

# 1. every count config
for c in scvi-like scmae-like clear-like linear; do
    "$scfm" train "$src/configs/$c.cfg" "${data[@]}" --set checkpoint.dir=smoke --set train.steps=60 \
        --set train.warmup_steps=0 --set train.log_every_seconds=0
    "$scfm" embed "smoke/$c" atlas.h5ad -o "$c.h5ad" --quiet
    python3 - "$c" <<'PY' || fail "$c: loss or embedding"
import json, sys, h5py, numpy as np
c = sys.argv[1]
lines = [json.loads(l) for l in open(f"smoke/{c}/metrics.jsonl")]
first, last = sum(l["loss"] for l in lines[:5]) / 5, sum(l["loss"] for l in lines[-5:]) / 5
assert last < first, f"the loss did not fall: {first:.3f} -> {last:.3f}"
full = 128 * (2 if c == "clear-like" else 1)  # the views are two cells each
# 2,000 cells are 15 micro-batches of 128 and an epoch's short last one
assert all(l["cells"] <= full for l in lines) and sum(l["cells"] == full for l in lines) >= 56, \
    "micro-batches are not of 128 cells"
latent = int(next(l for l in open(f"smoke/{c}/config.cfg") if l.strip().startswith("latent")).split("=")[1].strip(" ;\n"))
x = h5py.File(f"{c}.h5ad", "r")["obsm/X_scfm"][:]
assert x.shape == (2000, latent) and np.isfinite(x).all() and x.std(0).min() > 0, (x.shape, latent)
print(f"{c}: loss {first:.2f} -> {last:.2f}, embedding {x.shape}")
PY
done
[[ $(wc -l <smoke/scvi-like/step_0000060/genes.tsv) -eq 500 ]] || fail "genes.tsv does not list the 500 genes"
# the batch into the encoder too: embedding with a reference batch differs
# from leaving it out (with the default, the decoder only, it cannot)
"$scfm" train "$src/configs/scvi-like.cfg" "${data[@]}" --set checkpoint.dir=smoke --set checkpoint.run=both \
    --set model.condition_into=both --set train.steps=20 --set train.warmup_steps=0
"$scfm" embed smoke/both atlas.h5ad -o left_out.h5ad --quiet
"$scfm" embed smoke/both atlas.h5ad -o reference.h5ad --condition batch_0 --quiet
expect_fail 2 "not a category of obs column 'batch'" "$scfm" embed smoke/both atlas.h5ad -o bad.h5ad --condition x
python3 - <<'PY' || fail "--condition had no effect on an encoder-conditioned model"
import h5py, numpy as np
a, b = (h5py.File(f, "r")["obsm/X_scfm"][:] for f in ("left_out.h5ad", "reference.h5ad"))
assert a.shape == b.shape == (2000, 10) and np.abs(a - b).max() > 1e-4, np.abs(a - b).max()
PY

# 2. np=2 against np=1 with the same global batch, and resume
base=(--set train.steps=20 --set train.log_every_seconds=0 --set checkpoint.every=10)
OMP_NUM_THREADS=1 "$scfm" train "$src/configs/scvi-like.cfg" "${data[@]}" "${base[@]}" --set checkpoint.dir=one \
    --set train.micro_batch_cells=64
OMP_NUM_THREADS=1 mpirun --oversubscribe -np 2 "$scfm" train "$src/configs/scvi-like.cfg" "${data[@]}" "${base[@]}" \
    --set checkpoint.dir=two --set train.micro_batch_cells=32
same_steps "scvi-like np=2 against np=1" one/scvi-like/metrics.jsonl two/scvi-like/metrics.jsonl 20 1e-4 \
    loss grad_norm || fail "np=2 differs from one process with the same global batch"
"$tools/compare_weights" one/scvi-like/step_0000020/model.safetensors two/scvi-like/step_0000020/model.safetensors \
    1e-4 || fail "np=2 weights differ from np=1"
# CLEAR's InfoNCE takes its negatives from every rank's views: the same holds
OMP_NUM_THREADS=1 "$scfm" train "$src/configs/clear-like.cfg" "${data[@]}" "${base[@]}" --set checkpoint.dir=one \
    --set train.micro_batch_cells=64 --set train.steps=10 --set train.warmup_steps=2
OMP_NUM_THREADS=1 mpirun --oversubscribe -np 2 "$scfm" train "$src/configs/clear-like.cfg" "${data[@]}" "${base[@]}" \
    --set checkpoint.dir=two --set train.micro_batch_cells=32 --set train.steps=10 --set train.warmup_steps=2
same_steps "clear-like np=2 against np=1" one/clear-like/metrics.jsonl two/clear-like/metrics.jsonl 10 1e-4 \
    loss grad_norm || fail "clear-like np=2 differs from np=1 with the same global batch"
cp -r one resumed
rm -r resumed/scvi-like/step_0000020
printf step_0000010 >resumed/scvi-like/latest
head -10 one/scvi-like/metrics.jsonl >resumed/scvi-like/metrics.jsonl
OMP_NUM_THREADS=1 "$scfm" train "$src/configs/scvi-like.cfg" "${data[@]}" "${base[@]}" --set checkpoint.dir=resumed \
    --set train.micro_batch_cells=64 --resume
cmp one/scvi-like/step_0000020/model.safetensors resumed/scvi-like/step_0000020/model.safetensors ||
    fail "a resumed scvi-like run differs from the uninterrupted one"
echo "resumed from step 10: identical weights at step 20"

# 3. wrong pairings
"$scfm" tokenize --mode rank --vocab vocab atlas.h5ad -o ranks --max-length 64 --quiet
expect_fail 2 'model.encoder "transformer" needs token shards' \
    "$scfm" train "$src/configs/tiny.cfg" "${data[@]}" --set checkpoint.dir=bad
expect_fail 2 'model.encoder "mlp" needs count shards' \
    "$scfm" train "$src/configs/scvi-like.cfg" --set data.shards=ranks --set data.vocab=vocab --set checkpoint.dir=bad
expect_fail 2 "latent mean" "$scfm" embed smoke/scvi-like atlas.h5ad -o bad.h5ad --layer 1
[[ ! -e bad.h5ad && ! -e bad ]] || fail "a refused run left an output"

# 4. batch mixing and kNN against PCA
[[ -z "${SCFM_TEST_SANITIZED:-}" ]] || { echo "skipped part 4: 4,000 training steps in the sanitizer build"; exit 77; }
"$scfm" train "$src/configs/scvi-like.cfg" "${data[@]}" --set checkpoint.dir=ck --set checkpoint.run=conditioned \
    --set train.steps=2000
"$scfm" train "$src/configs/scvi-like.cfg" "${data[@]}" --set checkpoint.dir=ck --set checkpoint.run=plain \
    --set train.steps=2000 --set model.condition_column=
for r in conditioned plain; do
    "$scfm" embed "ck/$r" atlas.h5ad -o "$r.h5ad" --quiet
    "$scfm" eval "$r.h5ad" --label cell_type --batch batch -o "report_$r" --quiet >/dev/null
done
python3 - <<'PY' || fail "batch mixing or kNN accuracy"
import json
rep = {r: json.load(open(f"report_{r}/report.json"))["results"] for r in ("conditioned", "plain")}
knn, pca = rep["conditioned"]["embedding"]["knn_accuracy"], rep["conditioned"]["pca"]["knn_accuracy"]
ilisi = {r: rep[r]["embedding"]["ilisi"] for r in rep}
print(f"scvi-like: kNN accuracy {knn:.4f} (PCA {pca:.4f}); iLISI conditioned {ilisi['conditioned']:.3f}, "
      f"without the condition {ilisi['plain']:.3f}")
assert ilisi["conditioned"] > ilisi["plain"] + 0.3, "the condition does not mix the batches"
assert knn >= pca, "kNN accuracy below PCA's"
PY
