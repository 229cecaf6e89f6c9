#!/usr/bin/env python3
"""Checks an atlas from `scfm simulate` the way a user meets it: anndata reads
it with no warning, and the truth it carries shows in the counts.

usage: check_simulated.py PATH CELLS GENES TYPES BATCHES [PREFIX]

PREFIX: a smaller atlas from the same seed and sizes, whose cells must be the
first cells of PATH (a cell does not depend on how many are simulated).
Prints "skipped: anndata not installed" and exits 0 when anndata is missing;
exits 1 with the failed checks otherwise."""
import sys
import warnings


def main():
    path = sys.argv[1]
    cells, genes, types, batches = (int(a) for a in sys.argv[2:6])
    prefix_path = sys.argv[6] if len(sys.argv) > 6 else None
    try:
        import anndata as ad
    except ImportError:
        print("skipped: anndata not installed")
        return 0
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    failures = []

    def check(ok, what):
        if not ok:
            failures.append(what)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning on read is a failure
        a = ad.read_h5ad(path)

    check(a.shape == (cells, genes), f"shape {a.shape}, expected {(cells, genes)}")
    check(list(a.obs.columns) == ["cell_type", "batch"], f"obs columns {list(a.obs.columns)}")
    for column, prefix, n in (("cell_type", "type_", types), ("batch", "batch_", batches)):
        series = a.obs[column]
        check(isinstance(series.dtype, pd.CategoricalDtype), f"obs {column} is {series.dtype}, not categorical")
        check(list(series.cat.categories) == [f"{prefix}{i}" for i in range(n)],
              f"obs {column} categories {list(series.cat.categories)[:5]}...")
        check(not series.isna().any(), f"obs {column} has missing values")
    check(list(a.obs_names[:2]) == ["cell_0", "cell_1"][:cells], f"obs names start {list(a.obs_names[:2])}")
    check(a.obs_names.is_unique, "obs names repeat")
    ids = list(a.var_names)
    check(all(g.startswith("ENSG") for g in ids) and ids == sorted(ids) and a.var_names.is_unique,
          "var index is not unique, sorted ENSG ids")

    X = a.X
    check(sp.issparse(X) and X.format == "csr", f"X is {type(X).__name__}, not CSR")
    X = sp.csr_matrix(X)
    check(X.has_canonical_format, "X has unsorted or repeated indices")
    check(X.dtype == np.float32, f"X dtype {X.dtype}")
    values = X.data
    check(bool(np.all(values > 0) and np.all(values == np.round(values))), "counts are not positive integers")

    library = np.asarray(X.sum(axis=1)).ravel()
    cv = library.std() / library.mean()
    check(cv > 0.3, f"library sizes barely vary (coefficient of variation {cv:.2f})")

    # Markers: in its own cells, a type's marker genes take a larger share of
    # the counts than in the other cells.
    fold = np.asarray(a.varm["type_fold"])
    check(fold.shape == (genes, types), f"varm type_fold shape {fold.shape}")
    share = sp.diags(1.0 / np.maximum(library, 1.0)) @ X
    codes = a.obs["cell_type"].cat.codes.to_numpy()
    for t in range(types):
        markers = fold[:, t] > 1.0
        inside, outside = codes == t, codes != t
        if markers.sum() == 0 or inside.sum() < 5 or outside.sum() < 5:
            continue
        own = share[inside][:, markers].sum(axis=1).mean()
        other = share[outside][:, markers].sum(axis=1).mean()
        check(own > 1.3 * other, f"type_{t}: marker share {own:.4f} in its cells, {other:.4f} elsewhere")

    # Batches: the true gene-wise effect ratio shows in the mean expression.
    effect = np.asarray(a.varm["batch_effect"])
    check(effect.shape == (genes, batches), f"varm batch_effect shape {effect.shape}")
    batch = a.obs["batch"].cat.codes.to_numpy()
    if batches >= 2 and min((batch == 0).sum(), (batch == 1).sum()) >= 50:
        m0 = np.asarray(share[batch == 0].mean(axis=0)).ravel()
        m1 = np.asarray(share[batch == 1].mean(axis=0)).ravel()
        expressed = (m0 > 1e-4) & (m1 > 1e-4)
        r = np.corrcoef(np.log(m1[expressed] / m0[expressed]),
                        np.log(effect[expressed, 1] / effect[expressed, 0]))[0, 1]
        check(r > 0.5, f"batch effect does not show: correlation {r:.2f}")

    if prefix_path:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            p = ad.read_h5ad(prefix_path)
        n = p.n_obs
        head = a[:n]
        check(n <= cells and (sp.csr_matrix(p.X) != X[:n]).nnz == 0, f"{prefix_path}: counts differ from the first {n} cells")
        check(all((p.obs[c].to_numpy() == head.obs[c].to_numpy()).all() for c in ("cell_type", "batch"))
              and list(p.obs_names) == list(head.obs_names), f"{prefix_path}: obs differ from the first {n} cells")

    if failures:
        for f in failures:
            print(f"FAIL: {f}")
        return 1
    print(f"ok: {cells} cells x {genes} genes, {types} types, {batches} batches; "
          f"library CV {cv:.2f}, density {X.nnz / max(1, cells * genes):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
