#!/usr/bin/env python3
"""Geneformer rank-value tokenizer in plain Python (anndata + numpy + h5py).

    python3 bench/python_rank_tokenizer.py INPUT.h5ad --vocab VOCAB_DIR -o OUT.h5
        [--max-length 2048] [--chunk-cells 8192] [--sort cell|chunk] [--use-raw]

The Python reference of bench/tokenize_vs_python.py: the same work as
`scfm tokenize --mode rank` (docs/formats.md), written as a competent user
would write it with the usual tools, vectorised with numpy wherever that is
straightforward:

1. the vocabulary is read from scfm's VOCAB_DIR/vocab.tsv (token ids, gene
   ids and the gene medians), so both sides do exactly the same arithmetic;
2. X is read in chunks of rows with anndata's backed mode
   (`anndata.read_h5ad(path, backed="r")`, `adata.X[lo:hi]` gives a scipy CSR
   chunk); genes are matched to tokens by gene id (var["gene_ids"] when the
   file has it, else var_names), as `--match id`;
3. per chunk, vectorised: each cell's total over all of its genes, then
   value = count / total x 10,000 / median of the gene's token, for every
   non-zero count of a vocabulary gene, in double precision and in that order
   (as scfm);
4. per cell (`--sort cell`, the default, like Geneformer's own tokenizer): the
   non-zero genes sorted by value, descending, ties by token id
   (`numpy.lexsort`), cut to --max-length less <cls>/<eos>, which are added
   when the vocabulary has them. `--sort chunk` does the sort of a whole
   chunk in one `numpy.lexsort` on (cell, -value, token) instead: a fully
   vectorised variant, there to check that the per-cell loop is not what
   makes Python slow;
5. cells without counts, or without counts in vocabulary genes, are skipped;
   the tokens are appended per chunk to an HDF5 file shaped like an scfm
   shard: `tokens` (uint16 when the vocabulary has at most 65,535 tokens),
   `offsets` (int64, n_cells + 1), `cell_id` (int64, the input row) and
   `obs/<column>/codes` (int32) for the categorical obs columns, uncompressed.

The output holds exactly the tokens of scfm's shard_00000.h5 for an input of
at most 1,000,000 cells (bench/tokenize_vs_python.py --verify compares them).
Prints one line of JSON on stdout: cells written, cells skipped, tokens,
seconds (from the start of the script, imports included, and for the encoding
loop alone).
"""
import time

T_START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import anndata  # noqa: E402
import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
import rank_encode_reference as reference  # noqa: E402

TARGET_SUM = 10000.0


def read_vocab(directory):
    """Special tokens {name: id} and, per gene row, (token, gene_id, median):
    the test suite's reader of scfm's vocab.tsv, reshaped."""
    special, rows = reference.read_vocab(directory)
    tokens = np.array([r[0] for r in rows])
    return special, tokens, [r[1] for r in rows], np.array([r[3] for r in rows])


class Writer:
    """Appends cells to resizable 1-D datasets of an HDF5 file."""

    def __init__(self, path, token_dtype, obs_columns):
        self.f = h5py.File(path, "w")
        self.tokens = self.f.create_dataset("tokens", (0,), token_dtype, maxshape=(None,), chunks=(65536,))
        self.offsets = self.f.create_dataset("offsets", (1,), np.int64, maxshape=(None,), chunks=(16384,))
        self.cell_id = self.f.create_dataset("cell_id", (0,), np.int64, maxshape=(None,), chunks=(16384,))
        self.obs = {}
        for name, categories in obs_columns.items():
            g = self.f.create_group(f"obs/{name}")
            g.create_dataset("categories", data=np.array([str(c).encode() for c in categories]))
            self.obs[name] = g.create_dataset("codes", (0,), np.int32, maxshape=(None,), chunks=(16384,))
        self.n_tokens = 0
        self.n_cells = 0

    @staticmethod
    def _append(ds, values):
        n = ds.shape[0]
        ds.resize((n + len(values),))
        ds[n:] = values

    def add(self, tokens, lengths, cell_ids, obs_codes):
        self._append(self.tokens, tokens)
        self._append(self.offsets, self.n_tokens + np.cumsum(lengths, dtype=np.int64))
        self._append(self.cell_id, cell_ids)
        for name, codes in obs_codes.items():
            self._append(self.obs[name], codes)
        self.n_tokens += int(np.sum(lengths))
        self.n_cells += len(lengths)

    def close(self):
        self.f.attrs["n_cells"] = self.n_cells
        self.f.attrs["n_tokens"] = self.n_tokens
        self.f.close()


def encode_chunk_per_cell(indptr, tok, values, keep):
    """Sorts every cell's (token, value) pairs on their own."""
    out, lengths = [], np.empty(len(indptr) - 1, dtype=np.int64)
    for i in range(len(indptr) - 1):
        t, v = tok[indptr[i]:indptr[i + 1]], values[indptr[i]:indptr[i + 1]]
        order = np.lexsort((t, -v))[:keep]  # value descending, ties by token id
        out.append(t[order])
        lengths[i] = len(order)
    return (np.concatenate(out) if out else np.empty(0, dtype=tok.dtype)), lengths


def encode_chunk_at_once(indptr, tok, values, keep):
    """One sort for the whole chunk: by cell, then value descending, then token."""
    counts = np.diff(indptr)
    row = np.repeat(np.arange(len(counts)), counts)
    order = np.lexsort((tok, -values, row))
    rank_in_cell = np.arange(len(order)) - np.repeat(indptr[:-1], counts)
    kept = rank_in_cell < keep
    return tok[order][kept], np.minimum(counts, keep)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("input")
    p.add_argument("--vocab", required=True, help="scfm vocabulary directory (vocab.tsv)")
    p.add_argument("-o", "--output", required=True, help="HDF5 file to write")
    p.add_argument("--max-length", type=int, default=2048)
    p.add_argument("--chunk-cells", type=int, default=8192)
    p.add_argument("--sort", choices=["cell", "chunk"], default="cell")
    p.add_argument("--use-raw", action="store_true")
    args = p.parse_args()

    special, vocab_tokens, vocab_genes, vocab_medians = read_vocab(args.vocab)
    vocab_size = len(special) + len(vocab_tokens)
    cls, eos = special.get("<cls>"), special.get("<eos>")
    keep = args.max_length - (cls is not None) - (eos is not None)
    median_of_token = np.full(vocab_size, np.nan)
    median_of_token[vocab_tokens] = vocab_medians

    adata = anndata.read_h5ad(args.input, backed="r")
    x, var = (adata.raw.X, adata.raw.var) if args.use_raw else (adata.X, adata.var)
    gene_ids = (var["gene_ids"] if "gene_ids" in var else var.index).astype(str)
    token_of_gene = pd.Index(vocab_genes).get_indexer(gene_ids)  # -1: not in the vocabulary
    token_of_gene = np.where(token_of_gene >= 0, vocab_tokens[token_of_gene], -1).astype(np.int64)
    obs_columns = {c: adata.obs[c] for c in adata.obs.columns if isinstance(adata.obs[c].dtype, pd.CategoricalDtype)}
    token_dtype = np.uint16 if vocab_size <= 65535 else np.uint32
    writer = Writer(args.output, token_dtype, {c: s.cat.categories for c, s in obs_columns.items()})

    t_encode = time.perf_counter()
    n_cells, skipped = adata.n_obs, 0
    for lo in range(0, n_cells, args.chunk_cells):
        hi = min(lo + args.chunk_cells, n_cells)
        chunk = x[lo:hi]  # scipy CSR of rows lo..hi-1, read from the file
        data = chunk.data.astype(np.float64)
        indptr = chunk.indptr.astype(np.int64)
        cum = np.concatenate(([0.0], np.cumsum(data)))  # exact: counts are integers
        totals = cum[indptr[1:]] - cum[indptr[:-1]]  # over all genes of the input
        tok = token_of_gene[chunk.indices]
        use = (tok >= 0) & (data > 0)
        row_nnz = np.diff(indptr)
        cell = np.repeat(np.arange(hi - lo), row_nnz)[use]
        tok, data = tok[use], data[use]
        values = data / totals[cell] * TARGET_SUM / median_of_token[tok]
        cell_nnz = np.bincount(cell, minlength=hi - lo)
        kept_cells = np.flatnonzero((cell_nnz > 0) & (totals > 0))
        skipped += (hi - lo) - len(kept_cells)
        sub_indptr = np.concatenate(([0], np.cumsum(cell_nnz[kept_cells])))
        if len(kept_cells) < hi - lo:  # drop the entries of skipped cells (none have any here)
            sel = np.isin(cell, kept_cells)
            tok, values = tok[sel], values[sel]
        encode = encode_chunk_per_cell if args.sort == "cell" else encode_chunk_at_once
        tokens, lengths = encode(sub_indptr, tok, values, keep)
        if cls is not None or eos is not None:  # add <cls> first and <eos> last
            parts, start = [], 0
            for n in lengths:
                parts += ([[cls]] if cls is not None else []) + [tokens[start:start + n]] + \
                         ([[eos]] if eos is not None else [])
                start += n
            tokens = np.concatenate(parts)
            lengths = lengths + (cls is not None) + (eos is not None)
        codes = {c: s.cat.codes.to_numpy()[lo:hi][kept_cells].astype(np.int32) for c, s in obs_columns.items()}
        writer.add(tokens.astype(token_dtype), lengths, lo + kept_cells, codes)
    writer.close()
    t_end = time.perf_counter()
    print(json.dumps({"cells": writer.n_cells, "skipped_cells": skipped, "tokens": writer.n_tokens,
                      "sort": args.sort, "chunk_cells": args.chunk_cells,
                      "encode_s": round(t_end - t_encode, 3), "total_s": round(t_end - T_START, 3)}))


if __name__ == "__main__":
    main()
