#!/usr/bin/env bash
# scfm embed: a small pipeline's checkpoint embeds an atlas; anndata reads the
# output and its obs/var equal the input's; 1 and 2 ranks agree; bad input
# fails cleanly.  usage: embed.sh SCFM SOURCE_DIR WORK_DIR
set -euo pipefail
scfm=$1 src=$2 work=$3
rm -rf "$work" && mkdir -p "$work" && cd "$work"
source "$src/tests/cli/lib/checks.sh"
mpirun=(mpirun --oversubscribe -np 2)

"$scfm" simulate --cells 700 --genes 300 --types 4 --batches 2 --seed 3 -o atlas.h5ad >/dev/null 2>&1
"$scfm" vocab atlas.h5ad -o vocab --quiet
"$scfm" tokenize --mode rank --vocab vocab atlas.h5ad -o shards --max-length 64 --quiet
"$scfm" train "$src/configs/tiny.cfg" --set data.shards=shards --set data.vocab=vocab --set checkpoint.dir=ck \
    --set model.max_len=64 --set train.steps=20 --set train.warmup_steps=2 --quiet
[[ -s ck/tiny/step_0000020/vocab.tsv ]] || fail "the checkpoint holds no copy of the vocabulary"

"$scfm" embed ck/tiny atlas.h5ad -o one.h5ad --quiet
"${mpirun[@]}" "$scfm" embed ck/tiny/step_0000020 atlas.h5ad -o two.h5ad --quiet
"$scfm" embed ck/tiny atlas.h5ad -o layer0.h5ad --layer 0 --key X_layer0 --quiet

if python3 -c 'import anndata' 2>/dev/null; then
    python3 - <<'PY' || fail "anndata check"
import anndata as ad, numpy as np
a = ad.read_h5ad("atlas.h5ad")
for name in ("one.h5ad", "two.h5ad"):
    b = ad.read_h5ad(name)
    assert b.obs.equals(a.obs) and b.var.equals(a.var), name + ": obs/var differ from the input"
    assert (b.X != a.X).nnz == 0, name + ": X differs"
    e = b.obsm["X_scfm"]
    assert e.dtype == np.float32 and e.shape == (700, 64), (e.dtype, e.shape)
    assert np.isfinite(e).all()
one = ad.read_h5ad("one.h5ad").obsm["X_scfm"]; two = ad.read_h5ad("two.h5ad").obsm["X_scfm"]
diff = np.abs(one - two).max()
assert diff < 1e-4, f"np=1 and np=2 differ by {diff}"
l0 = ad.read_h5ad("layer0.h5ad").obsm["X_layer0"]
assert np.abs(l0 - one).max() > 1e-3, "layer 0 equals the last layer"
print(f"embed: 700 cells x 64, np=1 vs np=2 max difference {diff:.2e}")
PY
else
    echo "embed: anndata missing, output checks skipped"
fi
# scanpy is not installed by scripts/install-deps.sh (it is heavy); where it
# is, the output must serve its neighbour graph and UMAP.
if python3 -c 'import scanpy' 2>/dev/null; then
    python3 -c '
import scanpy as sc
a = sc.read_h5ad("two.h5ad")
sc.pp.neighbors(a, use_rep="X_scfm")
sc.tl.umap(a)
assert a.obsm["X_umap"].shape == (700, 2)
print("embed: scanpy neighbors and umap on X_scfm: ok")' || fail "scanpy check"
else
    echo "embed: scanpy not installed, its check skipped"
fi

# bad input: an existing output, a layer the model lacks, genes that do not
# match, a checkpoint without vocabulary, a missing file
expect_fail 2 "exists" "$scfm" embed ck/tiny atlas.h5ad -o one.h5ad --quiet
expect_fail 2 "layers 0 (embeddings) to 2" "$scfm" embed ck/tiny atlas.h5ad -o x.h5ad --layer 5 --quiet
expect_fail 2 "cls pooling needs a <cls> token" "$scfm" embed ck/tiny atlas.h5ad -o x.h5ad --pool cls --quiet
if python3 -c 'import anndata' 2>/dev/null; then
    python3 -c '
import anndata as ad
a = ad.read_h5ad("atlas.h5ad")[:50].copy()
a.var_names = ["MOUSE%d" % i if i % 4 else a.var_names[i] for i in range(a.n_vars)]
a.write_h5ad("other.h5ad")
b = ad.read_h5ad("atlas.h5ad")[:50].copy()
b.X = b.X.astype("float32") * 0.37
b.write_h5ad("normalised.h5ad")'
    expect_fail 1 "only 75 of its 300 genes" "$scfm" embed ck/tiny other.h5ad -o x.h5ad --quiet
    expect_fail 1 "is not an integer count" "$scfm" embed ck/tiny normalised.h5ad -o x.h5ad --quiet
fi
"$scfm" train "$src/configs/tiny.cfg" --set data.shards=shards --set data.vocab= --set checkpoint.dir=novocab \
    --set model.max_len=64 --set train.steps=2 --set train.warmup_steps=0 --quiet
expect_fail 1 "has no vocab.tsv" "$scfm" embed novocab/tiny atlas.h5ad -o x.h5ad --quiet
expect_fail 1 "missing.h5ad: No such file" "$scfm" embed ck/tiny missing.h5ad -o x.h5ad --quiet
[[ ! -e x.h5ad && ! -e x.h5ad.tmp ]] || fail "a failed embed left an output"
echo "embed: ok"
