#!/usr/bin/env python3
"""Plain numpy/anndata references for `scfm vocab` and `scfm tokenize`.

    rank_encode_reference.py vocab  --vocab DIR [--min-cells N] INPUT.h5ad...
    rank_encode_reference.py shards --vocab DIR --shards DIR --mode rank|bin|counts [options] INPUT.h5ad...

`vocab` recomputes the vocabulary with exact numpy medians: the same genes
(sorted by id), the same non-zero cell counts, and medians within the
histogram's bound (docs/formats.md). `shards` re-encodes every cell of the
inputs and requires the shard set to hold exactly those tokens (and values),
cell ids and obs codes:

- rank: Geneformer's tokenizer (count / cell total x 10,000 / median from
  vocab.tsv, sorted descending, ties by token id, cut, <cls>/<eos>);
- bin: scGPT's binning as in scgpt.preprocess (numpy.quantile edges at
  linspace(0, 1, B - 1) of the non-zero values, numpy.digitize), with scGPT's
  random choice between the left and right digitisation drawn from Philox
  keyed by (seed, cell id, token), and the down-sampling by Philox keys;
  --hvg as scanpy's highly_variable_genes(flavor="seurat") on
  normalize_total(1e4) data, written here with numpy and pandas;
- counts: the gene set (every vocabulary gene, or the --hvg set as in bin
  mode) in /genes and /gene_ids, and per cell with counts the columns of
  its genes in the set with a count (ascending), their raw counts and the
  cell's total over all its genes in /library, all exactly (float32).

Exits 0 when everything matches, 1 with the first differences otherwise.
Needs numpy, pandas, h5py, anndata.
"""
import argparse
import glob
import os
import sys

import anndata
import h5py
import numpy as np
import pandas as pd

TARGET = 10000.0
MEDIAN_BOUND = 10 ** (7 / 1024) - 1  # one log-histogram bin, relative
STREAM_TOKENIZE = 16
MASK32 = 0xFFFFFFFF


def philox(key, counter):
    """Philox-4x32-10, as src/core/philox.c."""
    c0, c1, c2, c3 = counter
    k0, k1 = key & MASK32, (key >> 32) & MASK32
    for _ in range(10):
        p0 = 0xD2511F53 * c0
        p1 = 0xCD9E8D57 * c2
        c0, c1, c2, c3 = ((p1 >> 32) ^ c1 ^ k0) & MASK32, p1 & MASK32, ((p0 >> 32) ^ c3 ^ k1) & MASK32, p0 & MASK32
        k0 = (k0 + 0x9E3779B9) & MASK32
        k1 = (k1 + 0xBB67AE85) & MASK32
    return c0, c1, c2, c3


def draw(seed, cell_id, token):
    return philox(seed, (cell_id & MASK32, (cell_id >> 32) & MASK32, int(token), STREAM_TOKENIZE))


def read_vocab(directory):
    special, rows = {}, []
    with open(os.path.join(directory, "vocab.tsv")) as f:
        for line in f:
            if line.startswith("# special "):
                for item in line.split()[2:]:
                    name, token = item.split("=")
                    special[name] = int(token)
            elif not line.startswith("#"):
                token, gene_id, symbol, median, n = line.rstrip("\n").split("\t")
                rows.append((int(token), gene_id, symbol, float(median), int(n)))
    return special, rows


def read_input(path, use_raw):
    """The cells x genes counts (CSR float64), gene ids and symbols, obs."""
    a = anndata.read_h5ad(path)
    x, var = (a.raw.X, a.raw.var) if use_raw else (a.X, a.var)
    import scipy.sparse as sp

    x = sp.csr_matrix(x, dtype=np.float64)
    x.eliminate_zeros()
    x.sort_indices()
    ids = var["gene_ids"].astype(str).to_numpy() if "gene_ids" in var else var.index.astype(str).to_numpy()
    symbols = var["feature_name"].astype(str).to_numpy() if "feature_name" in var else var.index.astype(str).to_numpy()
    return x, ids, symbols, a.obs


def check_vocab(args):
    special, rows = read_vocab(args.vocab)
    values = {}
    for path in args.inputs:
        x, ids, _, _ = read_input(path, args.use_raw)
        totals = np.asarray(x.sum(axis=1)).ravel()
        for i in range(x.shape[0]):
            lo, hi = x.indptr[i], x.indptr[i + 1]
            if totals[i] <= 0:
                continue
            norm = x.data[lo:hi] / totals[i] * TARGET
            for g, v in zip(x.indices[lo:hi], norm):
                values.setdefault(ids[g], []).append(v)
    expected = sorted(g for g, v in values.items() if len(v) >= args.min_cells)
    got = [r[1] for r in rows]
    if got != expected:
        print(f"vocab genes differ: {len(got)} in vocab.tsv, {len(expected)} expected")
        return 1
    worst = 0.0
    for token, gene, _, median, n in rows:
        exact = float(np.median(values[gene]))
        if n != len(values[gene]):
            print(f"{gene}: n_cells_nonzero {n}, expected {len(values[gene])}")
            return 1
        worst = max(worst, abs(median - exact) / exact)
    first = len(special)
    if [r[0] for r in rows] != list(range(first, first + len(rows))):
        print("token ids are not consecutive after the special tokens")
        return 1
    print(f"vocab: {len(rows)} genes match; largest median error {100 * worst:.3f}% "
          f"(bound {100 * MEDIAN_BOUND:.3f}%)")
    return 0 if worst <= MEDIAN_BOUND else 1


def rank_encode(tokens, counts, total, medians, first, max_length, cls, eos):
    values = counts / total * TARGET / medians[tokens - first]
    order = np.lexsort((tokens, -values))
    keep = max_length - (cls is not None) - (eos is not None)
    out = list(tokens[order][:keep])
    return ([cls] if cls is not None else []) + out + ([eos] if eos is not None else [])


def bin_encode(tokens, counts, total, args, cell_id, cls, eos):
    """scgpt.preprocess.binning of one cell, tokens in token order."""
    row = np.log1p(counts / total * TARGET) if args.bin_input == "log1p" else counts.astype(np.float64)
    row = np.where(counts > 0, row, 0.0)
    nonzero = row > 0
    bins = np.quantile(row[nonzero], np.linspace(0, 1, args.bins - 1))
    left = np.digitize(row[nonzero], bins)
    right = np.digitize(row[nonzero], bins, right=True)
    digits = left.copy()
    nz_tokens = tokens[nonzero]
    for j in np.flatnonzero(left - right >= 2):
        r0 = draw(args.seed, cell_id, nz_tokens[j])[0]
        digits[j] = right[j] + 1 + r0 % (left[j] - right[j])
    binned = np.zeros(len(row), dtype=np.int64)
    binned[nonzero] = digits
    keep = args.max_length - (cls is not None) - (eos is not None)
    chosen = np.arange(len(tokens))
    if len(tokens) > keep:
        keys = []
        for t in tokens:
            r = draw(args.seed, cell_id, t)
            keys.append((r[1] << 32) | r[2])
        chosen = np.array(sorted(range(len(tokens)), key=lambda k: (keys[k], tokens[k]))[:keep])
    chosen = chosen[np.argsort(tokens[chosen], kind="stable")]
    out_t = ([cls] if cls is not None else []) + list(tokens[chosen]) + ([eos] if eos is not None else [])
    out_v = ([0] if cls is not None else []) + list(binned[chosen]) + ([0] if eos is not None else [])
    return out_t, out_v


def hvg_set(cells, vocab_size, first, n_top):
    """scanpy highly_variable_genes(flavor="seurat", n_top_genes) on the
    normalised counts of the cells with counts, over the vocabulary genes."""
    import scipy.sparse as sp

    rows, cols, vals = [], [], []
    n = 0
    for tokens, counts, total in cells:
        if total <= 0:
            continue
        rows += [n] * len(tokens)
        cols += list(tokens)
        vals += list(counts / total * TARGET)
        n += 1
    x = sp.csr_matrix((vals, (rows, cols)), shape=(n, vocab_size))[:, first:]
    mean = np.asarray(x.mean(axis=0)).ravel()
    mean_sq = np.asarray(x.multiply(x).mean(axis=0)).ravel()
    var = (mean_sq - mean**2) * (n / (n - 1))
    mean[mean == 0] = 1e-12
    dispersion = var / mean
    dispersion[dispersion == 0] = np.nan
    dispersion = np.log(dispersion)
    mean = np.log1p(mean)
    df = pd.DataFrame({"means": mean, "dispersions": dispersion})
    df["mean_bin"] = pd.cut(df["means"], bins=20)
    stats = df.groupby("mean_bin", observed=True)["dispersions"].agg(avg="mean", dev="std")
    one = stats["dev"].isnull()
    stats.loc[one, "dev"] = stats.loc[one, "avg"]
    stats.loc[one, "avg"] = 0
    avg = stats["avg"].reindex(df["mean_bin"]).to_numpy()
    dev = stats["dev"].reindex(df["mean_bin"]).to_numpy()
    norm = (df["dispersions"].to_numpy() - avg) / dev
    valid = norm[~np.isnan(norm)]
    cut = np.sort(valid)[::-1][min(n_top, len(valid)) - 1]
    keep = np.zeros(vocab_size, dtype=bool)
    keep[first:] = np.nan_to_num(norm, nan=-np.inf) >= cut
    return keep


def read_shards(directory):
    """Cells as (id, tokens, values or counts), obs, libraries, gene sets."""
    out = {"tokens": [], "values": [], "offsets": [], "cell_id": [], "obs": {}, "library": [], "genes": []}
    for path in sorted(glob.glob(os.path.join(directory, "shard_*.h5"))):
        with h5py.File(path, "r") as f:
            out["tokens"].append(f["tokens"][()].astype(np.int64))
            if "values" in f:
                out["values"].append(f["values"][()].astype(np.int64))
            if "counts" in f:
                assert f["counts"].dtype == np.float32 and f["library"].dtype == np.float32
                out["values"].append(f["counts"][()])
                out["library"].append(f["library"][()])
                out["genes"].append(([int(g) for g in f["genes"][()]], [g.decode() for g in f["gene_ids"][()]]))
            out["offsets"].append(f["offsets"][()])
            out["cell_id"].append(f["cell_id"][()])
            for name in f.get("obs", {}):
                cats = [c.decode() for c in f["obs"][name]["categories"][()]]
                codes = f["obs"][name]["codes"][()]
                out["obs"].setdefault(name, []).append([cats[c] if c >= 0 else None for c in codes])
    cells = []
    for s in range(len(out["tokens"])):
        off = out["offsets"][s]
        for i in range(len(off) - 1):
            t = out["tokens"][s][off[i]:off[i + 1]]
            v = out["values"][s][off[i]:off[i + 1]] if out["values"] else None
            cells.append((int(out["cell_id"][s][i]), list(t), None if v is None else list(v)))
    obs = {k: sum(v, []) for k, v in out["obs"].items()}
    library = np.concatenate(out["library"]) if out["library"] else None
    return cells, obs, library, out["genes"]


def check_shards(args):
    special, rows = read_vocab(args.vocab)
    first = len(special)
    cls, eos = special.get("<cls>"), special.get("<eos>")
    medians = np.array([r[3] for r in rows])
    by_id = {r[1]: r[0] for r in rows}
    symbol_count = pd.Series([r[2] for r in rows]).value_counts()
    by_symbol = {r[2]: r[0] for r in rows if symbol_count[r[2]] == 1}
    vocab_size = first + len(rows)
    cells, obs_expected = [], {}
    for path in args.inputs:
        x, ids, symbols, obs = read_input(path, args.use_raw)
        if args.match == "symbol":
            repeated = pd.Series(symbols).duplicated(keep=False).to_numpy()
            token_of = np.array([-1 if repeated[j] else by_symbol.get(symbols[j], -1) for j in range(len(symbols))])
        else:
            token_of = np.array([by_id.get(g, -1) for g in ids])
        for i in range(x.shape[0]):
            lo, hi = x.indptr[i], x.indptr[i + 1]
            counts, genes = x.data[lo:hi], x.indices[lo:hi]
            inside = token_of[genes] >= 0
            cells.append((token_of[genes][inside], counts[inside], counts.sum()))
        for name in obs.columns:
            if isinstance(obs[name].dtype, pd.CategoricalDtype):
                obs_expected.setdefault(name, []).extend(obs[name].astype(object).where(obs[name].notna(), None))
    keep = hvg_set(cells, vocab_size, first, args.hvg) if args.hvg else None
    gene_set = np.flatnonzero(keep) if keep is not None else np.arange(first, vocab_size)
    column = np.full(vocab_size, -1)
    column[gene_set] = np.arange(len(gene_set))
    expected, library = [], []
    for cell_id, (tokens, counts, total) in enumerate(cells):
        if keep is not None:
            inside = keep[tokens]
            tokens, counts = tokens[inside], counts[inside]
        if args.mode == "counts" and total > 0:
            order = np.argsort(column[tokens])
            expected.append((cell_id, list(column[tokens][order]), list(counts[order].astype(np.float32))))
            library.append(np.float32(total))
            continue
        if total <= 0 or len(tokens) == 0:
            continue
        if args.include_zeros:
            full = np.zeros(vocab_size)
            full[tokens] = counts
            tokens = np.flatnonzero(keep)
            counts = full[tokens]
        if args.mode == "rank":
            expected.append((cell_id, rank_encode(tokens, counts, total, medians, first, args.max_length, cls, eos), None))
        else:
            expected.append((cell_id, *bin_encode(tokens, counts, total, args, cell_id, cls, eos)))
    got, obs_got, library_got, genes_got = read_shards(args.shards)
    if len(got) != len(expected):
        print(f"{len(got)} cells in the shards, {len(expected)} expected")
        return 1
    bad = 0
    if args.mode == "counts":
        want = ([int(t) for t in gene_set], [rows[t - first][1] for t in gene_set])
        if not genes_got or any(g != want for g in genes_got):
            print(f"gene set: shards have {genes_got[0][0][:12] if genes_got else None}..., expected {want[0][:12]}...")
            bad += 1
        if not np.array_equal(library_got, np.array(library, dtype=np.float32)):
            print("library sizes differ")
            bad += 1
    for (gid, gt, gv), (eid, et, ev) in zip(got, expected):
        if gid != eid or [int(t) for t in gt] != [int(t) for t in et] or (
                ev is not None and [float(v) for v in gv] != [float(v) for v in ev]):
            if bad < 3:
                print(f"cell {eid}: shards have id {gid}, tokens {gt[:12]}..., values {gv and gv[:12]}; "
                      f"expected tokens {et[:12]}..., values {ev and ev[:12]}")
            bad += 1
    kept_ids = [e[0] for e in expected]
    for name, codes in obs_got.items():
        want = [obs_expected[name][i] for i in kept_ids]
        if codes != want:
            print(f"obs column {name} differs")
            bad += 1
    if set(obs_got) != set(obs_expected):
        print(f"obs columns {sorted(obs_got)}, expected {sorted(obs_expected)}")
        bad += 1
    print(f"shards ({args.mode}): {len(expected)} cells, {sum(len(e[1]) for e in expected)} tokens; "
          f"{bad} differences")
    return 1 if bad else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["vocab", "shards"])
    p.add_argument("inputs", nargs="+")
    p.add_argument("--vocab", required=True)
    p.add_argument("--shards")
    p.add_argument("--mode", choices=["rank", "bin", "counts"], default="rank")
    p.add_argument("--min-cells", type=int, default=1)
    p.add_argument("--max-length", type=int, default=2048)
    p.add_argument("--match", choices=["id", "symbol"], default="id")
    p.add_argument("--bins", type=int, default=51)
    p.add_argument("--bin-input", choices=["log1p", "raw"], default="log1p")
    p.add_argument("--hvg", type=int, default=0)
    p.add_argument("--include-zeros", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--use-raw", action="store_true")
    args = p.parse_args()
    sys.exit(check_vocab(args) if args.what == "vocab" else check_shards(args))


if __name__ == "__main__":
    main()
