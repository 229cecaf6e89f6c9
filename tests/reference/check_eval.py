"""Recomputes every metric of an `scfm eval` report with scikit-learn (and
iLISI with an independent numpy implementation of scib's definition) on the
cells, folds and k-means clusters the report lists, and fails when one
differs by more than its tolerance (docs/eval.md).

usage: check_eval.py INPUT.h5ad REPORT_DIR EMBEDDING LABEL BATCH EXPECT_CELLS
"""
import json
import sys

import anndata as ad
import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors

path, report_dir, embedding, label, batch, expect_cells = sys.argv[1:]
adata = ad.read_h5ad(path)
report = json.load(open(f"{report_dir}/report.json"))
table = np.loadtxt(f"{report_dir}/cells.tsv", skiprows=1, dtype=np.int64, ndmin=2)
cells, labels, batches, fold, km_emb, km_pca = table.T
failures = []


def check(name, got, want, tol):
    ok = abs(got - want) <= tol
    print(f"{'ok  ' if ok else 'FAIL'} {name}: scfm {got:.6f} reference {want:.6f} (tolerance {tol:g})")
    if not ok:
        failures.append(name)


# the evaluated cells: a sorted sample of the labelled ones, codes as in obs
codes = adata.obs[label].cat.codes.to_numpy()
batch_codes = adata.obs[batch].cat.codes.to_numpy()
assert len(cells) == int(expect_cells) == report["cells"]["evaluated"], (len(cells), expect_cells)
assert np.all(np.diff(cells) > 0), "cells.tsv is not ascending"
assert np.array_equal(labels, codes[cells]) and np.all(labels >= 0), "labels differ from obs"
assert np.array_equal(batches, batch_codes[cells]), "batches differ from obs"
assert report["cells"]["labelled"] == int(np.sum(codes >= 0))
for lab in np.unique(labels):  # stratified: each label's cells spread evenly over the folds
    per_fold = np.bincount(fold[labels == lab], minlength=5)
    assert per_fold.max() - per_fold.min() <= 1, f"label {lab} is not stratified: {per_fold}"


def lisi_scib(x, batch, k=90):
    """scib's LISI (Harmony's Simpson index) over the k nearest other cells."""
    k = min(k, len(x) - 1)
    perplexity = np.floor(k / 3)
    dist, idx = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    keep = idx != np.arange(len(x))[:, None]
    keep[keep.sum(1) > k, -1] = False  # a duplicate point took the cell's own place
    dist = dist[keep].reshape(len(x), k)
    idx = idx[keep].reshape(len(x), k)
    n_batches = batch.max() + 1
    lisi = np.empty(len(x))
    for i in range(len(x)):
        d = dist[i]

        def hbeta(beta):
            p = np.exp(-d * beta)
            s = p.sum()
            if s == 0:
                return 0.0, np.zeros_like(d)
            return np.log(s) + beta * np.sum(d * p) / s, p / s

        beta, lo, hi = 1.0, -np.inf, np.inf
        h, p = hbeta(beta)
        diff, tries = h - np.log(perplexity), 0
        while abs(diff) > 1e-5 and tries < 50:
            if diff > 0:
                lo = beta
                beta = beta * 2 if hi == np.inf else (beta + hi) / 2
            else:
                hi = beta
                beta = beta / 2 if lo == -np.inf else (beta + lo) / 2
            h, p = hbeta(beta)
            diff, tries = h - np.log(perplexity), tries + 1
        if h == 0:
            lisi[i] = -1.0
            continue
        share = np.bincount(batch[idx[i]], weights=p, minlength=n_batches)
        lisi[i] = 1.0 / np.dot(share, share)
    present = len(np.unique(batch))
    return (np.median(lisi) - 1) / (present - 1)


def reference_metrics(x, clusters, k):
    correct = 0
    for f in range(5):
        train, test = fold != f, fold == f
        clf = KNeighborsClassifier(n_neighbors=k).fit(x[train], labels[train])
        correct += int(np.sum(clf.predict(x[test]) == labels[test]))
    return {"knn_accuracy": correct / len(x),
            "kmeans_ari": adjusted_rand_score(labels, clusters),
            "kmeans_nmi": normalized_mutual_info_score(labels, clusters),
            "silhouette": silhouette_score(x, labels),
            "ilisi": lisi_scib(x, batches)}


k = report["settings"]["knn_k"]
got = report["results"]["embedding"]
x = np.asarray(adata.obsm[embedding], dtype=np.float32)[cells].astype(np.float64)
want = reference_metrics(x, km_emb, k)
# kNN: float32 distances may order a near-tie differently from sklearn's float64
tolerance = {"knn_accuracy": 2.0 / len(cells), "kmeans_ari": 1e-9, "kmeans_nmi": 1e-9, "silhouette": 1e-4,
             "ilisi": 1e-3}
for name, tol in tolerance.items():
    check(f"embedding {name}", got[name], want[name], tol)

# The PCA baseline: the same recipe in numpy and scikit-learn's exact PCA.
counts = adata.X[cells]
counts = counts.toarray() if sp.issparse(counts) else np.asarray(counts)
counts = counts.astype(np.float64)
logn = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)
mean, var = logn.mean(0), logn.var(0, ddof=1)
candidates = np.flatnonzero((var > 0) & (mean > 0))
order = np.lexsort((candidates, -(var[candidates] / mean[candidates])))
ours = np.loadtxt(f"{report_dir}/pca_genes.tsv", skiprows=1, usecols=0, dtype=np.int64, ndmin=1)
hvg = np.sort(candidates[order[:report["settings"]["pca_hvg"]]])
overlap = len(np.intersect1d(hvg, ours)) / len(hvg)
check("PCA gene overlap with the numpy selection", overlap, 1.0, 0.002)  # ties at the cut-off only
pca_genes = logn[:, ours]
n_comp = report["results"]["pca"]["dim"]
sk = PCA(n_components=n_comp, svd_solver="full").fit(pca_genes)
ratio = np.array(report["results"]["pca"]["explained_variance_ratio"])
rel = np.abs(ratio - sk.explained_variance_ratio_) / sk.explained_variance_ratio_
check("PCA explained variance ratio, components 1-10 (max relative error)", rel[:10].max(), 0.0, 1e-3)
check("PCA explained variance ratio, all components (max relative error)", rel.max(), 0.0, 0.01)
check("PCA total explained variance ratio (relative)", ratio.sum() / sk.explained_variance_ratio_.sum(), 1.0, 0.002)
got = report["results"]["pca"]
want = reference_metrics(sk.transform(pca_genes), km_pca, k)
# on sklearn's exact PCA rather than scfm's randomized one: the scores differ
# a little in the trailing components
tolerance = {"knn_accuracy": 0.01, "kmeans_ari": 1e-9, "kmeans_nmi": 1e-9, "silhouette": 0.002, "ilisi": 0.005}
for name, tol in tolerance.items():
    check(f"PCA {name}", got[name], want[name], tol)

if failures:
    sys.exit(f"{len(failures)} metric(s) differ: {', '.join(failures)}")
