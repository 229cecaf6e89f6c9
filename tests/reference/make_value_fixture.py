#!/usr/bin/env python3
"""Writes the value-objective reference fixtures for tests/unit/test_value_reference.c:

  tests/fixtures/value_ce.safetensors   value head as cross-entropy over the bins, plus MVC
  tests/fixtures/value_mse.safetensors  value head as squared error of the bin, plus MVC

A tiny post-LN GELU BERT with scfm's value embedding (bin ids, row B = masked)
and condition embedding, written in torch.nn.functional one cell at a time
(no padding, as scfm's packed cells), in float64. Each file holds the random
weights under scfm's names, one batch (packed tokens, cell offsets, input
values, masked values and their bins, condition codes), the loss
(w_value * sum of value terms + w_mvc * sum of MVC terms) / masked values,
and every parameter gradient (zero for the unused masked-LM head), stored as
float32. Needs torch and safetensors; see README.md."""
import argparse
import pathlib

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

VOCAB, HIDDEN, HEADS, LAYERS, FFN, MAX_LEN = 30, 16, 4, 2, 32, 16
BINS, CONDITIONS = 6, 3
EPS = 1e-12
LENGTHS = (9, 5, 12)
CELL_CONDITIONS = (2, -1, 0)  # the middle cell has none
FIRST_GENE = 2
VALUE_MASK_PROB = 0.35
W_VALUE, W_MVC = 1.0, 0.5
WEIGHT_STD = 0.2


def shapes(value_out):
    C = HIDDEN
    s = {"bert.embeddings.word_embeddings.weight": (VOCAB, C),
         "bert.embeddings.position_embeddings.weight": (MAX_LEN, C),
         "bert.embeddings.LayerNorm.weight": (C,), "bert.embeddings.LayerNorm.bias": (C,),
         "bert.embeddings.value_embeddings.weight": (BINS + 1, C),
         "bert.embeddings.condition_embeddings.weight": (CONDITIONS, C)}
    for l in range(LAYERS):
        p = f"bert.encoder.layer.{l}."
        for part in ("query", "key", "value"):
            s[p + f"attention.self.{part}.weight"] = (C, C)
            s[p + f"attention.self.{part}.bias"] = (C,)
        s[p + "attention.output.dense.weight"] = (C, C)
        s[p + "attention.output.dense.bias"] = (C,)
        s[p + "attention.output.LayerNorm.weight"] = (C,)
        s[p + "attention.output.LayerNorm.bias"] = (C,)
        s[p + "intermediate.dense.weight"] = (FFN, C)
        s[p + "intermediate.dense.bias"] = (FFN,)
        s[p + "output.dense.weight"] = (C, FFN)
        s[p + "output.dense.bias"] = (C,)
        s[p + "output.LayerNorm.weight"] = (C,)
        s[p + "output.LayerNorm.bias"] = (C,)
    s.update({"cls.predictions.transform.dense.weight": (C, C), "cls.predictions.transform.dense.bias": (C,),
              "cls.predictions.transform.LayerNorm.weight": (C,), "cls.predictions.transform.LayerNorm.bias": (C,),
              "cls.predictions.bias": (VOCAB,),
              "cls.value.weight": (value_out, C), "cls.value.bias": (value_out,),
              "cls.mvc.gene2query.weight": (C, C), "cls.mvc.gene2query.bias": (C,), "cls.mvc.W.weight": (C, C)})
    return s


def make_params(value_out, g):
    params = {}
    for name, shape in shapes(value_out).items():
        if len(shape) == 2:
            t = torch.randn(shape, generator=g, dtype=torch.float64) * WEIGHT_STD
        elif "LayerNorm.weight" in name:
            t = 1.0 + 0.1 * torch.randn(shape, generator=g, dtype=torch.float64)
        else:
            t = 0.1 * torch.randn(shape, generator=g, dtype=torch.float64)
        params[name] = t.requires_grad_()
    return params


def make_batch(g):
    tokens, offsets, values, index, target = [], [0], [], [], []
    for length in LENGTHS:
        genes = FIRST_GENE + torch.randperm(VOCAB - FIRST_GENE, generator=g)[:length]
        bins = torch.randint(0, BINS, (length,), generator=g)
        masked = torch.rand(length, generator=g) < VALUE_MASK_PROB
        masked[0] = True  # at least one per cell
        for p in range(length):
            t = len(tokens)
            tokens.append(int(genes[p]))
            if masked[p]:
                index.append(t)
                target.append(int(bins[p]))
                values.append(BINS)
            else:
                values.append(int(bins[p]))
        offsets.append(len(tokens))
    return [torch.tensor(x, dtype=torch.int64) for x in (tokens, offsets, values, index, target)]


def layer_norm(x, w, b):
    return F.layer_norm(x, (x.shape[-1],), w, b, EPS)


def encode(P, x, v, cond):
    L, C, D = len(x), HIDDEN, HIDDEN // HEADS
    h = P["bert.embeddings.word_embeddings.weight"][x] + P["bert.embeddings.position_embeddings.weight"][:L]
    h = h + P["bert.embeddings.value_embeddings.weight"][v]
    if cond >= 0:
        h = h + P["bert.embeddings.condition_embeddings.weight"][cond]
    h = layer_norm(h, P["bert.embeddings.LayerNorm.weight"], P["bert.embeddings.LayerNorm.bias"])
    for l in range(LAYERS):
        p = f"bert.encoder.layer.{l}."
        q, k, vv = (F.linear(h, P[p + f"attention.self.{n}.weight"], P[p + f"attention.self.{n}.bias"])
                    .view(L, HEADS, D).transpose(0, 1) for n in ("query", "key", "value"))
        att = torch.softmax(q @ k.transpose(1, 2) / D ** 0.5, dim=-1)
        ctx = (att @ vv).transpose(0, 1).reshape(L, C)
        a = F.linear(ctx, P[p + "attention.output.dense.weight"], P[p + "attention.output.dense.bias"])
        h = layer_norm(h + a, P[p + "attention.output.LayerNorm.weight"], P[p + "attention.output.LayerNorm.bias"])
        f = F.gelu(F.linear(h, P[p + "intermediate.dense.weight"], P[p + "intermediate.dense.bias"]))
        f = F.linear(f, P[p + "output.dense.weight"], P[p + "output.dense.bias"])
        h = layer_norm(h + f, P[p + "output.LayerNorm.weight"], P[p + "output.LayerNorm.bias"])
    return h


def loss_fn(P, batch, mse):
    tokens, offsets, values, index, target = batch
    hidden, cells, cell_of = [], [], torch.empty(len(tokens), dtype=torch.int64)
    for c in range(len(LENGTHS)):
        lo, hi = int(offsets[c]), int(offsets[c + 1])
        h = encode(P, tokens[lo:hi], values[lo:hi], CELL_CONDITIONS[c])
        hidden.append(h)
        cells.append(h.mean(0))  # every token here is a gene: the mean pool
        cell_of[lo:hi] = c
    hidden, cells = torch.cat(hidden), torch.stack(cells)
    out = F.linear(hidden[index], P["cls.value.weight"], P["cls.value.bias"])
    if mse:
        value = ((out[:, 0] - target.double()) ** 2).sum()
    else:
        value = F.cross_entropy(out, target, reduction="sum")
    q = torch.sigmoid(F.linear(P["bert.embeddings.word_embeddings.weight"][tokens[index]],
                               P["cls.mvc.gene2query.weight"], P["cls.mvc.gene2query.bias"]))
    pred = (F.linear(q, P["cls.mvc.W.weight"]) * cells[cell_of[index]]).sum(1)
    mvc = ((pred - target.double()) ** 2).sum()
    return (W_VALUE * value + W_MVC * mvc) / len(index)


def write(path, mse, seed):
    g = torch.Generator().manual_seed(seed)
    P = make_params(1 if mse else BINS, g)
    batch = make_batch(g)
    loss = loss_fn(P, batch, mse)
    loss.backward()
    tensors = {name: t.detach().float().contiguous() for name, t in P.items()}
    tensors.update({"grad." + name: (t.grad if t.grad is not None else torch.zeros_like(t)).float().contiguous()
                    for name, t in P.items()})
    names = ("tokens", "cell_offsets", "values", "value_index", "value_target")
    tensors.update({"input." + n: t.to(torch.int32).contiguous() for n, t in zip(names, batch)})
    tensors["input.conditions"] = torch.tensor(CELL_CONDITIONS, dtype=torch.int32)
    tensors["output.loss"] = loss.detach().float().reshape(1)
    meta = {"vocab_size": str(VOCAB), "hidden": str(HIDDEN), "heads": str(HEADS), "layers": str(LAYERS),
            "ffn": str(FFN), "max_len": str(MAX_LEN), "value_bins": str(BINS), "num_conditions": str(CONDITIONS),
            "value_loss": "mse" if mse else "ce", "w_value": repr(W_VALUE), "w_mvc": repr(W_MVC),
            "layer_norm_eps": repr(EPS), "activation": "gelu", "norm": "post"}
    save_file(tensors, str(path), metadata=meta)
    print(f"{path}: loss {loss.item():.6f}, {len(batch[3])} masked values")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(pathlib.Path(__file__).resolve().parents[1] / "fixtures"))
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    write(out / "value_ce.safetensors", mse=False, seed=20240601)
    write(out / "value_mse.safetensors", mse=True, seed=20240602)


if __name__ == "__main__":
    main()
