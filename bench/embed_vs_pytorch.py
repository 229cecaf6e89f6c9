#!/usr/bin/env python3
r"""Embedding throughput: `scfm embed` against PyTorch `BertModel` on the same
exported weights and the same cells.

    OPENBLAS_CORETYPE=Haswell python3 bench/embed_vs_pytorch.py --build build \
        --workdir /tmp/eb [--cells 2000 --genes 2000] [--rounds 3] [--threads 2] [--json out.json]

Steps (nothing is built):

1. data: `scfm simulate` (CELLS x GENES, 8 types, seed 1), `scfm vocab`,
   `scfm tokenize --mode rank --max-length 2048` (the shards give PyTorch the
   very tokens scfm embed makes: same vocabulary, medians and rule);
2. a model of configs/geneformer-v1-6L.cfg's shape (6 layers, hidden 256, 4
   heads, ffn 512, ReLU, post-LN, 2,048 positions), trained for 2 steps so its
   checkpoint holds the vocabulary; `scfm export` writes it for transformers;
3. --rounds rounds, alternating which side goes first:
   - scfm: `scfm embed CHECKPOINT atlas.h5ad -o out.h5ad --force --quiet`
     (OMP_NUM_THREADS=--threads, one process): the whole command, i.e. reading
     the counts, tokenizing, encoding, mean pooling and writing a copy of the
     .h5ad;
   - PyTorch: `BertModel.from_pretrained(EXPORT, add_pooling_layer=False)`,
     fp32, SDPA attention, torch.set_num_threads(--threads),
     torch.inference_mode; the token lists read from the shards beforehand
     (not timed), cells sorted by length and batched 16 at a time padded to the
     longest (attention mask), mean over each cell's tokens; only the forward
     passes and the pooling are timed;
4. correctness: the PyTorch embeddings of all cells must equal scfm's
   obsm['X_scfm'] within 1e-3 (max abs).

Prints a Markdown table (median cells/s, ratio, each round) and the
environment.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import h5py
import numpy as np


def run(cmd, env=None):
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)


def prepare(scfm, src, work, cells, genes):
    atlas = os.path.join(work, "atlas.h5ad")
    if not os.path.exists(atlas):
        run([scfm, "simulate", "--cells", str(cells), "--genes", str(genes), "--types", "8", "--seed", "1",
             "-o", atlas])
    run([scfm, "vocab", atlas, "-o", os.path.join(work, "vocab"), "--force", "--quiet"])
    run([scfm, "tokenize", "--mode", "rank", "--vocab", os.path.join(work, "vocab"), atlas, "-o",
         os.path.join(work, "shards"), "--max-length", "2048", "--force", "--quiet"])
    run([scfm, "train", os.path.join(src, "configs", "geneformer-v1-6L.cfg"),
         "--set", "data.shards=" + os.path.join(work, "shards"), "--set", "data.vocab=" + os.path.join(work, "vocab"),
         "--set", "checkpoint.dir=" + os.path.join(work, "ck"), "--set", "checkpoint.run=model",
         "--set", "train.steps=2", "--set", "train.warmup_steps=1", "--set", "train.micro_batch_tokens=4096",
         "--quiet"])
    export = os.path.join(work, "hf")
    run([scfm, "export", os.path.join(work, "ck", "model"), "--format", "hf", "-o", export, "--force"])
    return atlas, os.path.join(work, "ck", "model"), export


def shard_cells(shards):
    """Token lists in global cell order."""
    cells = {}
    for name in sorted(os.listdir(shards)):
        with h5py.File(os.path.join(shards, name), "r") as f:
            tokens, offsets, ids = f["tokens"][:], f["offsets"][:], f["cell_id"][:]
            for i, cell in enumerate(ids):
                cells[int(cell)] = tokens[offsets[i]:offsets[i + 1]].astype(np.int64)
    return cells


def pytorch_embed(model, cells, threads, batch=16):
    import torch
    torch.set_num_threads(threads)
    order = sorted(cells, key=lambda c: len(cells[c]))
    out = {}
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(order), batch):
            ids = order[i:i + batch]
            longest = max(len(cells[c]) for c in ids)
            x = torch.zeros((len(ids), longest), dtype=torch.long)
            mask = torch.zeros((len(ids), longest), dtype=torch.long)
            for j, c in enumerate(ids):
                x[j, :len(cells[c])] = torch.from_numpy(cells[c])
                mask[j, :len(cells[c])] = 1
            hidden = model(input_ids=x, attention_mask=mask).last_hidden_state
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
            for j, c in enumerate(ids):
                out[c] = pooled[j].numpy()
    return time.perf_counter() - start, out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("--workdir", default="/tmp/scfm_embed_bench")
    ap.add_argument("--cells", type=int, default=2000)
    ap.add_argument("--genes", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    a = ap.parse_args()
    src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    scfm = os.path.abspath(os.path.join(a.build, "scfm"))
    os.makedirs(a.workdir, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    env.setdefault("OPENBLAS_CORETYPE", "Haswell")
    atlas, checkpoint, export = prepare(scfm, src, a.workdir, a.cells, a.genes)

    import torch
    from transformers import BertModel
    model = BertModel.from_pretrained(export, add_pooling_layer=False, attn_implementation="sdpa").eval()
    cells = shard_cells(os.path.join(a.workdir, "shards"))
    tokens = sum(len(t) for t in cells.values())
    out = os.path.join(a.workdir, "embedded.h5ad")
    runs = {"scfm": [], "pytorch": []}
    reference = None
    for r in range(a.rounds):
        for side in (["scfm", "pytorch"] if r % 2 == 0 else ["pytorch", "scfm"]):
            if side == "scfm":
                t0 = time.perf_counter()
                run([scfm, "embed", checkpoint, atlas, "-o", out, "--force", "--quiet"], env=env)
                runs["scfm"].append(time.perf_counter() - t0)
            else:
                seconds, reference = pytorch_embed(model, cells, a.threads)
                runs["pytorch"].append(seconds)
    import anndata
    ours = anndata.read_h5ad(out).obsm["X_scfm"]
    ids = sorted(reference)
    diff = float(np.abs(ours[ids] - np.stack([reference[c] for c in ids])).max())
    if diff > 1e-3:
        sys.exit(f"embeddings differ: max abs {diff}")
    n = a.cells
    med = {k: statistics.median(v) for k, v in runs.items()}
    ratio = med["pytorch"] / med["scfm"]
    per_round = [p / s for s, p in zip(runs["scfm"], runs["pytorch"])]
    print(f"{n} cells, {tokens} tokens ({tokens / len(cells):.0f} per cell), geneformer-v1-6L shape, "
          f"{a.threads} threads each; embeddings equal within {diff:.1e}\n")
    print("| side | median s | cells/s | tokens/s | rounds (s) |")
    print("|---|---|---|---|---|")
    for k, label in (("scfm", "scfm embed (whole command)"), ("pytorch", "PyTorch BertModel (forward + pooling)")):
        print(f"| {label} | {med[k]:.2f} | {n / med[k]:.0f} | {tokens / med[k]:.0f} | "
              f"{' '.join(f'{x:.2f}' for x in runs[k])} |")
    print(f"\nscfm / PyTorch cells/s: **{ratio:.2f}x** (rounds: {' '.join(f'{x:.2f}' for x in per_round)})")
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"OPENBLAS_CORETYPE={env.get('OPENBLAS_CORETYPE')}, load average {os.getloadavg()[0]:.1f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"runs": runs, "cells": n, "tokens": tokens, "ratio": ratio, "max_abs_diff": diff,
                       "threads": a.threads}, f, indent=1)


if __name__ == "__main__":
    main()
