#!/usr/bin/env python3
"""Checks what tests/tools/count_batches wrote against count shards, with numpy.

    check_count_batches.py OUT_DIR SHARD_DIR CELLS N_BINS

Epoch 0 of the loader in micro-batches of CELLS cells must hold every cell of
the shards once, CELLS to a batch but the last, with the shards' library
sizes, and the dense rows of scfm_counts_dense must equal, bit for bit:

- raw: the cell's counts at its columns, zeros elsewhere;
- log1p: log1p(count / library x 10,000) in float64, then float32;
- rank: with the cell's n genes ordered by count, descending, ties by column,
  the gene at place r gets (n - r) / n;
- bin: scGPT's binning of the log1p values into N_BINS bins, as
  rank_encode_reference.bin_encode computes it (ties on edges drawn with
  Philox, seed 0, keyed by the loader's cell id and the column).

Exits 0 when everything matches, 1 with the first differences otherwise.
"""
import argparse
import glob
import os
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rank_encode_reference import bin_encode  # noqa: E402

TARGET = 10000.0


def read_shards(directory):
    tokens, counts, library, genes = [], [], [], None
    for path in sorted(glob.glob(os.path.join(directory, "shard_*.h5"))):
        with h5py.File(path, "r") as f:
            off = f["offsets"][()]
            t, c = f["tokens"][()].astype(np.int64), f["counts"][()]
            tokens += [t[off[i]:off[i + 1]] for i in range(len(off) - 1)]
            counts += [c[off[i]:off[i + 1]] for i in range(len(off) - 1)]
            library.append(f["library"][()])
            genes = len(f["genes"])
    return tokens, counts, np.concatenate(library), genes


def expected_rows(tokens, counts, library, cell_id, n_genes, n_bins):
    rows = {name: np.zeros(n_genes, dtype=np.float32) for name in ("raw", "log1p", "rank", "bin")}
    c64 = counts.astype(np.float64)
    rows["raw"][tokens] = counts
    rows["log1p"][tokens] = np.log1p(c64 / float(library) * TARGET).astype(np.float32)
    n = len(tokens)
    order = np.lexsort((tokens, -c64))
    rows["rank"][tokens[order]] = ((n - np.arange(n)) / n).astype(np.float32)
    if n:
        args = argparse.Namespace(bin_input="log1p", bins=n_bins, max_length=n, seed=0)
        out_t, out_v = bin_encode(tokens, c64, float(library), args, cell_id, None, None)
        rows["bin"][np.array(out_t, dtype=np.int64)] = np.array(out_v, dtype=np.float32)
    return rows


def main():
    out, shards, cells, n_bins = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    tokens, counts, library, n_genes = read_shards(shards)
    n = len(tokens)
    sizes = np.fromfile(f"{out}/batch_cells.i32", dtype=np.int32)
    ids = np.fromfile(f"{out}/cell_id.i64", dtype=np.int64)
    lib = np.fromfile(f"{out}/library.f32", dtype=np.float32)
    dense = {name: np.fromfile(f"{out}/{name}.f32", dtype=np.float32).reshape(-1, n_genes)
             for name in ("raw", "log1p", "rank", "bin")}
    bad = []
    if not (np.all(sizes[:-1] == cells) and 0 < sizes[-1] <= cells):
        bad.append(f"batch sizes {sizes.tolist()[:8]}... are not {cells} but for a shorter last one")
    if sorted(ids.tolist()) != list(range(n)):
        bad.append(f"epoch 0 gave {len(ids)} cells, not each of the {n} once")
    elif not np.array_equal(lib, library[ids]):
        bad.append("library sizes differ from the shards'")
    differ = {name: 0 for name in dense}
    for row, cell in enumerate(ids[:n] if len(ids) == n else []):
        want = expected_rows(tokens[cell], counts[cell], library[cell], int(cell), n_genes, n_bins)
        for name in dense:
            if not np.array_equal(dense[name][row], want[name]):
                if differ[name] == 0:
                    j = np.flatnonzero(dense[name][row] != want[name])[:5]
                    bad.append(f"{name}, cell {cell}: columns {j.tolist()}: {dense[name][row][j].tolist()}, "
                               f"numpy {want[name][j].tolist()}")
                differ[name] += 1
    for name, k in differ.items():
        if k:
            bad.append(f"{name}: {k} cells differ")
    for line in bad:
        print(line)
    print(f"count batches: {n} cells in {len(sizes)} batches of {cells}, {n_genes} genes; "
          f"{'ok' if not bad else 'FAILED'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
