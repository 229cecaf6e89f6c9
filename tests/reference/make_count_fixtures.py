#!/usr/bin/env python3
"""Writes tests/fixtures/counts/: one small count matrix (40 cells x 30 genes)
in every layout the readers take (AnnData .h5ad, 10x Genomics .h5 v2 and v3,
Matrix Market directories), the expected values as text for
tests/unit/test_readers.c, and malformed variants that must be rejected.
Needs numpy, scipy, pandas, h5py, anndata and hdf5plugin (for the zstd file
only); deterministic (fixed seed). `--only compressed` adds the compressed
files to an existing directory and leaves the others as they are."""
import argparse
import gzip
import io
import pathlib
import shutil
import warnings

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

N_CELLS, N_GENES = 40, 30
EMPTY_CELLS = (0, 17, 39)
CELL_TYPES = ["B cell", "CD4 T cell", "monocyte", "γδ T cell"]
BATCHES = ["batch1", "batch2"]


def make_data(seed=20261125):
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 60, size=(N_CELLS, N_GENES)) * (rng.random((N_CELLS, N_GENES)) < 0.3)
    counts[5, 4] = 1000  # above int8 and float16 precision
    counts[list(EMPTY_CELLS)] = 0
    gene_ids = [f"ENSG{n:011d}" for n in rng.choice(10**6, N_GENES, replace=False)]
    symbols = [f"GENE{i}" for i in range(N_GENES)]
    symbols[7] = symbols[3]  # duplicate symbols are common and allowed
    barcodes = ["".join(rng.choice(list("ACGT"), 16)) + "-1" for _ in range(N_CELLS)]
    cell_type = rng.integers(0, len(CELL_TYPES), N_CELLS).astype(np.int8)
    cell_type[[2, 11, 30]] = -1  # missing
    batch = (np.arange(N_CELLS) >= N_CELLS // 2).astype(np.int8)
    return counts.astype(np.int64), gene_ids, symbols, barcodes, cell_type, batch


def obs_frame(barcodes, cell_type, batch):
    return pd.DataFrame(
        {
            "cell_type": pd.Categorical.from_codes(cell_type, CELL_TYPES),
            "batch": pd.Categorical.from_codes(batch, BATCHES),
            "n_counts": np.arange(N_CELLS, dtype=np.float64),  # not categorical: not listed
        },
        index=pd.Index(barcodes),
    )


def messy(counts, dtype, fmt):
    """scipy CSR/CSC that is valid but not canonical: explicit zeros in every
    tenth cell and the indices of each row or column in reverse order."""
    cells, genes = np.nonzero(counts)
    zero_cells = np.arange(1, N_CELLS, 10)
    rows = np.concatenate([cells, zero_cells])
    cols = np.concatenate([genes, [int(np.flatnonzero(counts[c] == 0)[0]) for c in zero_cells]])
    vals = np.concatenate([counts[cells, genes], np.zeros(len(zero_cells), np.int64)]).astype(dtype)
    m = sp.coo_matrix((vals, (rows, cols)), shape=counts.shape).asformat(fmt)
    for i in range(len(m.indptr) - 1):
        lo, hi = m.indptr[i], m.indptr[i + 1]
        m.indices[lo:hi] = m.indices[lo:hi][::-1].copy()
        m.data[lo:hi] = m.data[lo:hi][::-1].copy()
    m.has_sorted_indices = False
    return m


def write_h5ad(path, X, obs, var, raw=None):
    a = ad.AnnData(X=X, obs=obs, var=var)
    if raw is not None:
        a.raw = raw
    a.write_h5ad(path)


def write_expected(out, counts, gene_ids, symbols, barcodes, cell_type, batch):
    np.savetxt(out / "expected_counts.tsv", counts, fmt="%d", delimiter="\t")
    (out / "expected_genes.tsv").write_text("".join(f"{g}\t{s}\n" for g, s in zip(gene_ids, symbols)))
    (out / "expected_cells.tsv").write_text("".join(b + "\n" for b in barcodes))
    (out / "expected_categories.tsv").write_text(
        "".join(f"cell_type\t{c}\n" for c in CELL_TYPES) + "".join(f"batch\t{b}\n" for b in BATCHES)
    )
    (out / "expected_codes.tsv").write_text(
        "cell_type\tbatch\n" + "".join(f"{c}\t{b}\n" for c, b in zip(cell_type, batch))
    )


def write_legacy_h5ad(path, counts, gene_ids, symbols, barcodes, cell_type, batch):
    """anndata < 0.8: dataframe columns hold categorical codes and
    <frame>/__categories/<column> the categories (as anndata 0.7 wrote them);
    X carries the h5sparse_format/h5sparse_shape attributes of anndata 0.6."""
    csr = sp.csr_matrix(counts.astype(np.float32))
    strings = h5py.string_dtype("utf-8")
    with h5py.File(path, "w") as f:
        x = f.create_group("X")
        x.attrs["h5sparse_format"] = "csr"
        x.attrs["h5sparse_shape"] = np.array(csr.shape)
        x["data"], x["indices"], x["indptr"] = csr.data, csr.indices, csr.indptr

        def frame(name, index, columns):
            g = f.create_group(name)
            g.attrs["encoding-type"] = "dataframe"
            g.attrs["encoding-version"] = "0.1.0"
            g.attrs["_index"] = "_index"
            g.attrs["column-order"] = np.array(list(columns), dtype=object)
            g.create_dataset("_index", data=np.array(index, dtype=object), dtype=strings)
            for col, (codes, cats) in columns.items():
                c = g.create_dataset(f"__categories/{col}", data=np.array(cats, dtype=object), dtype=strings)
                c.attrs["ordered"] = False
                g[col] = codes
                g[col].attrs["categories"] = c.ref

        frame("obs", barcodes, {"cell_type": (cell_type, CELL_TYPES), "batch": (batch, BATCHES)})
        cats = sorted(set(symbols))
        frame("var", gene_ids, {"feature_name": (np.array([cats.index(s) for s in symbols], np.int8), cats)})
        f.create_group("uns")


def write_compound_h5ad(path, counts, barcodes):
    """anndata < 0.7 stored obs and var as compound datasets: not supported."""
    with h5py.File(path, "w") as f:
        f["X"] = counts.astype(np.float32)
        strings = h5py.string_dtype("utf-8")
        f["obs"] = np.array([(b,) for b in barcodes], dtype=[("index", strings)])
        f["var"] = np.array([(f"g{i}",) for i in range(N_GENES)], dtype=[("index", strings)])


def ascii_array(values):
    return np.array([v.encode() for v in values])  # fixed-length bytes, as 10x writes them


def write_tenx_v3(path, counts, gene_ids, symbols, barcodes):
    csc = sp.csc_matrix(counts.T)  # genes x cells, one column per cell
    with h5py.File(path, "w") as f:
        f.attrs["filetype"] = "matrix"
        f.attrs["version"] = 2
        f.attrs["library_ids"] = ascii_array(["lib0"])
        m = f.create_group("matrix")
        m["barcodes"] = ascii_array(barcodes)
        m["data"] = csc.data.astype(np.int32)
        m["indices"] = csc.indices.astype(np.int64)
        m["indptr"] = csc.indptr.astype(np.int64)
        m["shape"] = np.array(csc.shape, dtype=np.int32)
        feat = m.create_group("features")
        feat["_all_tag_keys"] = ascii_array(["genome"])
        feat["feature_type"] = ascii_array(["Gene Expression"] * N_GENES)
        feat["genome"] = ascii_array(["GRCh38"] * N_GENES)
        feat["id"] = ascii_array(gene_ids)
        feat["name"] = ascii_array(symbols)


def write_tenx_v2(path, counts, gene_ids, symbols, barcodes, genomes=("GRCh38",)):
    csc = sp.csc_matrix(counts.T)
    with h5py.File(path, "w") as f:
        for genome in genomes:
            g = f.create_group(genome)
            g["barcodes"] = ascii_array(barcodes)
            g["data"] = csc.data.astype(np.int32)
            g["gene_names"] = ascii_array(symbols)
            g["genes"] = ascii_array(gene_ids)
            g["indices"] = csc.indices.astype(np.int64)
            g["indptr"] = csc.indptr.astype(np.int64)
            g["shape"] = np.array(csc.shape, dtype=np.int32)


def mtx_text(counts, field="integer", shuffle=None, comment="% written by make_count_fixtures.py\n"):
    """genes x cells, as 10x writes it: 1-based (gene, cell) entries sorted by
    cell. Shuffled files also get explicit zeros (in cells 2, 12, 22, 32)."""
    cells, genes = np.nonzero(counts)  # row-major: sorted by cell, then gene
    if shuffle is not None:
        zero_cells = np.arange(2, N_CELLS, 10)
        cells = np.concatenate([cells, zero_cells])
        genes = np.concatenate([genes, [int(np.flatnonzero(counts[c] == 0)[0]) for c in zero_cells]])
    order = np.arange(len(cells))
    if shuffle is not None:
        shuffle.shuffle(order)
    lines = [f"%%MatrixMarket matrix coordinate {field} general\n", comment, f"{N_GENES} {N_CELLS} {len(cells)}\n"]
    for k in order:
        v = counts[cells[k], genes[k]]
        lines.append(f"{genes[k] + 1} {cells[k] + 1} {v if field == 'integer' else f'{v:.1f}'}\n")
    return "".join(lines)


def write_text(path, text):
    if path.suffix == ".gz":
        with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as z:
            z.write(text.encode())
    else:
        path.write_text(text)


def write_mtx_dirs(out, counts, gene_ids, symbols, barcodes, rng):
    v3 = out / "mtx_v3"
    v3.mkdir()
    write_text(v3 / "matrix.mtx.gz", mtx_text(counts))
    write_text(v3 / "features.tsv.gz", "".join(f"{g}\t{s}\tGene Expression\n" for g, s in zip(gene_ids, symbols)))
    write_text(v3 / "barcodes.tsv.gz", "".join(b + "\n" for b in barcodes))
    # Cell Ranger 2 names, plain text, entries in random order, real field.
    v2 = out / "mtx_v2"
    v2.mkdir()
    write_text(v2 / "matrix.mtx", mtx_text(counts, field="real", shuffle=rng))
    write_text(v2 / "genes.tsv", "".join(f"{g}\t{s}\n" for g, s in zip(gene_ids, symbols)))
    write_text(v2 / "barcodes.tsv", "".join(b + "\n" for b in barcodes))


def write_bad_mtx(out, counts, gene_ids, symbols, barcodes):
    """Malformed .mtx files sharing one genes.tsv and barcodes.tsv."""
    bad = out / "bad_mtx"
    bad.mkdir()
    write_text(bad / "genes.tsv", "".join(f"{g}\t{s}\n" for g, s in zip(gene_ids, symbols)))
    write_text(bad / "barcodes.tsv", "".join(b + "\n" for b in barcodes))
    good = mtx_text(counts).splitlines(keepends=True)
    write_text(bad / "bad_header.mtx", "".join(["%%MatrixMarket matrix array integer general\n"] + good[1:]))
    write_text(bad / "bad_size.mtx", "".join(good[:2] + [f"{N_GENES + 1} {N_CELLS} {len(good) - 3}\n"] + good[3:]))
    entry = good[3].split()
    write_text(bad / "bad_entry.mtx", "".join(good[:3] + [f"{N_GENES + 1} {entry[1]} {entry[2]}\n"] + good[4:]))
    write_text(bad / "short.mtx", "".join(good[:-1]))
    write_text(bad / "negative.mtx", "".join(good[:3] + [f"{entry[0]} {entry[1]} -2\n"] + good[4:]))
    dup = out / "bad_mtx_dup_genes"
    dup.mkdir()
    ids = list(gene_ids)
    ids[12] = ids[5]
    write_text(dup / "matrix.mtx", "".join(good))
    write_text(dup / "genes.tsv", "".join(f"{g}\t{s}\n" for g, s in zip(ids, symbols)))


def corrupt_h5ad(src, dst, edit):
    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as f:
        edit(f)


def replace(f, name, values):
    del f[name]
    f[name] = values


def write_bad_h5ad(out, counts, csr_path):
    """Variants of a valid CSR file, each with one fault."""
    data = open(csr_path, "rb").read()
    (out / "bad_truncated.h5ad").write_bytes(data[: len(data) * 6 // 10])

    def decreasing(f):
        p = f["X/indptr"][:]
        p[18] = p[17] - 1
        f["X/indptr"][:] = p

    def index_range(f):
        i = f["X/indices"][:]
        i[42] = N_GENES
        f["X/indices"][:] = i

    def set_value(k, v):
        def edit(f):
            d = f["X/data"][:].astype(np.float32)
            d[k] = v
            replace(f, "X/data", d)

        return edit

    def shape(f):
        f["X"].attrs["shape"] = np.array([N_CELLS, N_GENES + 1])

    def duplicate_ids(f):  # two duplicates: the one seen second first is reported
        ids = f["var/_index"][:]
        ids[12] = ids[5]
        ids[20] = ids[2]
        f["var/_index"][:] = ids

    corrupt_h5ad(csr_path, out / "bad_indptr.h5ad", decreasing)
    corrupt_h5ad(csr_path, out / "bad_index.h5ad", index_range)
    corrupt_h5ad(csr_path, out / "bad_shape.h5ad", shape)
    corrupt_h5ad(csr_path, out / "bad_negative.h5ad", set_value(20, -3.0))
    corrupt_h5ad(csr_path, out / "bad_nan.h5ad", set_value(21, np.nan))
    corrupt_h5ad(csr_path, out / "bad_fraction.h5ad", set_value(22, 2.5))
    corrupt_h5ad(csr_path, out / "bad_dup_gene_ids.h5ad", duplicate_ids)
    corrupt_h5ad(csr_path, out / "bad_no_x.h5ad", lambda f: f.__delitem__("X"))

    def code_range(f):
        c = f["obs/cell_type/codes"][:]
        c[3] = len(CELL_TYPES) + 5
        f["obs/cell_type/codes"][:] = c

    def cell_range(f):
        i = f["X/indices"][:]
        i[3] = N_CELLS
        f["X/indices"][:] = i

    corrupt_h5ad(csr_path, out / "bad_obs_code.h5ad", code_range)
    corrupt_h5ad(out / "csc_int32.h5ad", out / "bad_csc_index.h5ad", cell_range)


def write_compressed(out, counts, obs, var):
    """Every array compressed as anndata writes it: gzip (HDF5's own) and lzf
    (h5py's filter, which scfm decodes itself) must read as the plain files;
    zstd (hdf5plugin) must be refused by name, and an lzf chunk that is not
    an lzf stream must fail the read."""
    import hdf5plugin

    for kind, X in (("csr", sp.csr_matrix(counts.astype(np.int32))), ("dense", counts.astype(np.float32))):
        for compression in ("gzip", "lzf"):
            ad.AnnData(X=X, obs=obs, var=var).write_h5ad(out / f"{kind}_{compression}.h5ad", compression=compression)
    ad.AnnData(X=sp.csr_matrix(counts.astype(np.int32)), obs=obs, var=var).write_h5ad(
        out / "bad_zstd.h5ad", compression=hdf5plugin.Zstd())
    shutil.copyfile(out / "csr_lzf.h5ad", out / "bad_lzf.h5ad")
    with h5py.File(out / "bad_lzf.h5ad", "r+") as f:
        # a back reference before the start of the output
        f["X/data"].id.write_direct_chunk((0,), bytes([0xE0, 0x05, 0x00, 0x00]), filter_mask=0)


def main():
    default = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "counts"
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=pathlib.Path, default=default)
    parser.add_argument("--only", choices=["all", "compressed"], default="all")
    args = parser.parse_args()
    out = args.out
    counts, gene_ids, symbols, barcodes, cell_type, batch = make_data()
    obs = obs_frame(barcodes, cell_type, batch)
    var = pd.DataFrame({"feature_name": symbols}, index=pd.Index(gene_ids))
    if args.only == "compressed":
        write_compressed(out, counts, obs, var)
        return
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    warnings.simplefilter("ignore")  # anndata: non-unique var names (the duplicate symbol)

    write_expected(out, counts, gene_ids, symbols, barcodes, cell_type, batch)
    # scanpy's read_10x_h5 layout: symbols as the index, ids in gene_ids.
    var_by_symbol = pd.DataFrame({"gene_ids": gene_ids}, index=pd.Index(symbols))
    for dtype in (np.int32, np.int64, np.float32):
        name = np.dtype(dtype).name
        v = var_by_symbol if dtype == np.int64 else var
        if dtype == np.float32:  # the reader must drop explicit zeros and sort
            write_h5ad(out / f"csr_{name}.h5ad", messy(counts, dtype, "csr"), obs, v)
            write_h5ad(out / f"csc_{name}.h5ad", messy(counts, dtype, "csc"), obs, v)
        else:
            write_h5ad(out / f"csr_{name}.h5ad", sp.csr_matrix(counts.astype(dtype)), obs, v)
            write_h5ad(out / f"csc_{name}.h5ad", sp.csc_matrix(counts.astype(dtype)), obs, v)
    for dtype in (np.int32, np.int64, np.float32, np.float64):
        write_h5ad(out / f"dense_{np.dtype(dtype).name}.h5ad", counts.astype(dtype), obs, var)

    # X normalised (log1p of counts per 10k) over the first 20 genes; raw/X
    # holds the counts of all 30 genes, raw/var their names.
    norm = np.log1p(counts / np.maximum(counts.sum(1, keepdims=True), 1) * 1e4).astype(np.float32)
    raw = ad.AnnData(X=sp.csr_matrix(counts.astype(np.float32)), obs=obs, var=var)
    write_h5ad(out / "normalised_raw.h5ad", sp.csr_matrix(norm[:, :20]), obs, var.iloc[:20], raw=raw)

    write_legacy_h5ad(out / "legacy.h5ad", counts, gene_ids, symbols, barcodes, cell_type, batch)
    write_compound_h5ad(out / "bad_compound_obs.h5ad", counts, barcodes)
    write_tenx_v3(out / "tenx_v3.h5", counts, gene_ids, symbols, barcodes)
    write_tenx_v2(out / "tenx_v2.h5", counts, gene_ids, symbols, barcodes)
    write_tenx_v2(out / "bad_tenx_genomes.h5", counts, gene_ids, symbols, barcodes, genomes=("mm10", "GRCh38"))
    write_tenx_v3(out / "bad_tenx_index.h5", counts, gene_ids, symbols, barcodes)
    with h5py.File(out / "bad_tenx_index.h5", "r+") as f:
        f["matrix/indices"][7] = 30000

    rng = np.random.default_rng(7)
    write_mtx_dirs(out, counts, gene_ids, symbols, barcodes, rng)
    write_bad_mtx(out, counts, gene_ids, symbols, barcodes)
    write_bad_h5ad(out, counts, out / "csr_int32.h5ad")
    write_compressed(out, counts, obs, var)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({total} bytes)")


if __name__ == "__main__":
    main()
