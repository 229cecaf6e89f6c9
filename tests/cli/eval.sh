#!/usr/bin/env bash
# scfm eval: every metric of the embedding and of the PCA baseline equals
# scikit-learn's (iLISI: a numpy implementation of scib's definition) within
# the tolerances of docs/eval.md; bad inputs (missing label column, obsm key
# or X, NaN in the embedding, non-integer counts, an existing report) fail
# with a message that names the file and the field, and leave nothing behind.
# Skips (77) without python3, anndata or scikit-learn.
# usage: eval.sh SCFM SOURCE_DIR WORK_DIR
set -euo pipefail
scfm=$1 src=$2 work=$3
rm -rf "$work" && mkdir -p "$work" && cd "$work"
source "$src/tests/cli/lib/checks.sh"
if ! python3 -c 'import anndata, h5py, sklearn' 2>/dev/null; then
    echo "skipped: python3 with anndata, h5py and scikit-learn is needed (scripts/install-deps.sh)"
    exit 77
fi

"$scfm" simulate --cells 1500 --genes 2500 --types 5 --batches 3 --seed 3 -o atlas.h5ad --quiet
# The embedding: a noisy one-hot of the cell type with a batch offset (float64,
# read as float32); 60 cells lose their label; X_nan has one NaN; no_x.h5ad
# lacks X and lognorm.h5ad holds log-normalised values instead of counts.
python3 - <<'PY'
import anndata as ad, h5py, numpy as np
a = ad.read_h5ad("atlas.h5ad")
rng = np.random.default_rng(0)
t = a.obs["cell_type"].cat.codes.to_numpy()
b = a.obs["batch"].cat.codes.to_numpy()
x = np.zeros((a.n_obs, 10))
x[np.arange(a.n_obs), t] = 2.0
x[np.arange(a.n_obs), 5 + b] = 0.7
x += rng.normal(size=x.shape)
a.obsm["X_scfm"] = x
bad = x.astype(np.float32)
bad[777, 3] = np.nan
a.obsm["X_nan"] = bad
cell_type = a.obs["cell_type"].astype(object)
cell_type.iloc[rng.choice(a.n_obs, 60, replace=False)] = np.nan
a.obs["cell_type"] = cell_type.astype("category")
a.write_h5ad("emb.h5ad")
a.X = a.X.astype(np.float32).multiply(1.0 / a.X.sum(1)).tocsr().log1p()
a.write_h5ad("lognorm.h5ad")
a.write_h5ad("no_x.h5ad")
with h5py.File("no_x.h5ad", "a") as f:
    del f["X"]
PY

# 1440 labelled cells, a seeded sample of 1200 of them evaluated
args=(emb.h5ad --label cell_type --batch batch --max-cells 1200 --seed 5)
"$scfm" eval "${args[@]}" -o report >table.txt 2>err.txt || fail "eval exited $?: $(cat err.txt)"
cat table.txt
for f in report.json report.png cells.tsv pca_genes.tsv; do [[ -s report/$f ]] || fail "no report/$f"; done
[[ ! -e report.tmp ]] || fail "report.tmp was left behind"
grep -q "kNN accuracy" table.txt && grep -q "PCA" table.txt || fail "no side-by-side table on stdout"
python3 "$src/tests/reference/check_eval.py" emb.h5ad report X_scfm cell_type batch 1200

# An existing report is kept without --force; --force replaces it, and the
# same seed gives the same report.
before=$(cksum <report/report.json)
rc=0; "$scfm" eval "${args[@]}" -o report 2>err.txt || rc=$?
[[ $rc -eq 2 ]] || fail "an existing report: exit $rc, expected 2"
grep -q "report: already exists" err.txt || fail "no clear message for an existing report: $(cat err.txt)"
[[ $(cksum <report/report.json) == "$before" ]] || fail "the refused run changed the report"
"$scfm" eval "${args[@]}" -o report --force --quiet >/dev/null
[[ $(cksum <report/report.json) == "$before" ]] || fail "the same seed gave another report.json"
"$scfm" eval "${args[@]}" --seed 6 -o report --force --quiet >/dev/null
[[ $(cksum <report/report.json) != "$before" ]] || fail "--force did not replace the report"

# --no-pca: the embedding's column only
"$scfm" eval emb.h5ad --label cell_type -o nopca --no-pca --quiet >table.txt
python3 -c 'import json, sys; r = json.load(open("nopca/report.json")); sys.exit("pca" in r["results"] or r["results"]["embedding"]["ilisi"] is not None)' \
    || fail "--no-pca without --batch: a PCA result or an iLISI in the report"
[[ ! -e nopca/pca_genes.tsv ]] || fail "--no-pca wrote pca_genes.tsv"

# Bad input: exit code, a message naming file and field, no report left.
expect_error() {
    local code=$1 want=$2; shift 2
    local rc=0
    "$scfm" eval "$@" -o bad >out.txt 2>err.txt || rc=$?
    [[ $rc -eq $code ]] || fail "eval $*: exit $rc, expected $code: $(cat err.txt)"
    grep -qF -- "$want" err.txt || fail "eval $*: message lacks '$want': $(head -1 err.txt)"
    [[ ! -e bad && ! -e bad.tmp ]] || fail "eval $*: left a report behind"
}
expect_error 1 'emb.h5ad: --label: no categorical column obs/tissue (categorical obs columns: batch, cell_type)' \
    emb.h5ad --label tissue
expect_error 1 'emb.h5ad: --batch: no categorical column obs/donor' emb.h5ad --label cell_type --batch donor
expect_error 1 'emb.h5ad: no obsm/X_umap (obsm keys present: X_nan, X_scfm)' emb.h5ad --label cell_type --embedding X_umap
expect_error 1 'emb.h5ad: obsm/X_nan[777, 3] = nan is not finite' emb.h5ad --label cell_type --embedding X_nan
expect_error 1 'no_x.h5ad: no X' no_x.h5ad --label cell_type
expect_error 1 'lognorm.h5ad: X' lognorm.h5ad --label cell_type
grep -q "integer" err.txt || fail "non-integer counts: the message does not say why: $(cat err.txt)"
expect_error 1 'missing.h5ad' missing.h5ad --label cell_type
expect_error 2 '--label COLUMN is required' emb.h5ad
expect_error 2 '--k must be an integer in [1, 1000]' emb.h5ad --label cell_type --k 0
expect_error 2 "unexpected argument '--kk'" emb.h5ad --label cell_type --kk 3
"$scfm" eval --help | grep -q "usage: scfm eval" || fail "--help"
echo "eval: all checks passed"
