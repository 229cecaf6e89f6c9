#!/usr/bin/env python3
r"""PyTorch side of the training-throughput benchmark: the same work as
bench_train (bench/bench_train.c), with transformers.BertForMaskedLM.

    pytorch_train.py CONFIG --bench-train BUILD/bench/bench_train \
        --cells-per-batch B --cell-len L --vocab V --steps S --warmup W \
        [--set section.key=value]... [--attn default|eager|sdpa] \
        [--head masked|full] [--threads N] [--device cpu|cuda] [--bf16]

The model and optimiser settings are not parsed here: bench_train
--print-config resolves CONFIG (defaults, file, --set overrides, vocab,
max_len) with scfm's own loader and prints them as JSON, so both sides run
the very same configuration. A ready JSON can be given with --model-json.

Work per step, as in bench_train: zero grad, forward in training mode (the
configured dropout on), masked-LM loss (mean over masked positions), backward,
clip_grad_norm_, AdamW (torch.optim.AdamW with the configured lr, betas, eps,
weight decay; decay only on matrices, as scfm). The batch is B cells of L
random gene ids 2..V-1 (no padding); 15% of positions are selected and
corrupted 80/10/10 (<mask>=1 / random gene / unchanged).

With objective.contrastive > 0 (as bench_train): every cell becomes two views,
its L genes cut in two halves of L/2 by a random permutation (order kept;
scfm draws each gene's view, so its views are L/2 long on average), masked
when objective.mlm > 0; the loss adds objective.contrastive x the mean
symmetric InfoNCE over the 2B views of mean-pooled final hidden states through
Linear(C, P), activation, Linear(P, P) and L2 normalisation, temperature
fixed or a learned log-temperature; tokens are the views' tokens.

With model.value_bins = B > 0 (as bench_train; objective.mvc must be 0):
every token gets a random bin in [0, B), objective.value_mask_prob of them
the masked bin B; the input is the word embedding plus an Embedding(B + 1, C)
of the value, passed as inputs_embeds (BertEmbeddings adds positions and
applies its LayerNorm, as scfm); a Linear(C, B) value head on the masked
values' final hidden states adds a cross-entropy term per masked value, and
the loss is (mlm x MLM terms + value x value terms) / their number.

--head masked (the default) runs the MLM head (transform + tied decoder) only
at the masked positions, which is what scfm does; --head full runs the stock
BertForMaskedLM forward with labels (logits at every position, about
(T/N) = 6.7x more head work). Prints one line of JSON.

--device cuda runs on the GPU (model and batch moved there, fused AdamW,
torch.cuda.synchronize() before every clock reading); --bf16 runs forward
and loss under torch.autocast(dtype=torch.bfloat16) with fp32 master
weights, which is how today's PyTorch stacks train, and makes the
matrix-product reference a bf16 one.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("--bench-train", help="path of the bench_train executable (for --print-config)")
    p.add_argument("--model-json", help="resolved settings, as printed by bench_train --print-config")
    p.add_argument("--cells-per-batch", type=int, default=2)
    p.add_argument("--cell-len", type=int, default=2048)
    p.add_argument("--vocab", type=int, default=25426)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--attn", choices=["default", "eager", "sdpa"], default="default",
                   help="attention implementation (default: transformers' default)")
    p.add_argument("--head", choices=["masked", "full"], default="masked")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads; default OMP_NUM_THREADS or 2")
    p.add_argument("--data-seed", type=int, default=12345)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for forward and loss")
    p.add_argument("--no-mm-reference", dest="mm_reference", action="store_false",
                   help="skip the torch.mm GFLOP/s reference")
    return p.parse_args(argv)


def resolve_settings(a):
    if a.model_json:
        return json.loads(a.model_json)
    if not a.bench_train:
        sys.exit("pytorch_train.py: give --bench-train PATH or --model-json JSON")
    cmd = [a.bench_train, a.config, "--vocab", str(a.vocab), "--cell-len", str(a.cell_len), "--print-config"]
    for s in a.set:
        cmd += ["--set", s]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def model_flops(s, cells, cell_len, n_targets, head_rows, value_rows=0):
    """scfm_model_flops (src/model/model.c) with backward: 3 x forward, where
    forward counts the matrix products and attention; head_rows is the number
    of rows the MLM head runs on (the targets, or every token)."""
    C, F, V, NL = s["hidden"], s["ffn"], s["vocab_size"], s["layers"]
    T = cells * cell_len
    per_token = 2.0 * (4.0 * C * C + 2.0 * C * F) * NL
    attention = 4.0 * cell_len * cell_len * C * NL * cells
    head = 2.0 * (C * C + C * V) * head_rows + 2.0 * C * s.get("value_bins", 0) * value_rows
    return 3.0 * (per_token * T + attention + head)


def main(argv):
    a = parse_args(argv)
    s = resolve_settings(a)
    threads = a.threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or 2

    import numpy as np
    import torch
    import torch.nn.functional as F
    import transformers
    from transformers import BertConfig, BertForMaskedLM

    torch.set_num_threads(threads)
    if s["norm"] != "post":
        sys.exit("pytorch_train.py: BertForMaskedLM is post-norm only; model.norm is %s" % s["norm"])
    if s["position"] != "learned":
        sys.exit("pytorch_train.py: BertForMaskedLM always has learned positions; model.position is %s"
                 % s["position"])

    torch.manual_seed(s["seed"])
    kwargs = dict(
        vocab_size=s["vocab_size"], hidden_size=s["hidden"], num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"], intermediate_size=s["ffn"], hidden_act=s["activation"],
        hidden_dropout_prob=s["dropout"], attention_probs_dropout_prob=s["attention_dropout"],
        max_position_embeddings=max(s["max_len"], a.cell_len), type_vocab_size=1,
        layer_norm_eps=s["layer_norm_eps"], initializer_range=s["init_std"], pad_token_id=0)
    if a.attn != "default":
        kwargs["attn_implementation"] = a.attn
    cfg = BertConfig(**kwargs)
    dev = torch.device(a.device)
    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("pytorch_train.py: --device cuda, but torch sees no CUDA device")
    model = BertForMaskedLM(cfg).to(dev)
    model.train()
    attn_impl = getattr(model.config, "_attn_implementation", None) or "unknown"

    # The batch: B cells of L random genes, 15% selected, 80/10/10.
    rng = np.random.default_rng(a.data_seed)
    B, L, V = a.cells_per_batch, a.cell_len, s["vocab_size"]
    ids = rng.integers(2, V, size=(B, L), dtype=np.int64)
    contrastive = s.get("contrastive", 0.0) > 0
    bins = s.get("value_bins", 0)
    mlm_weight = s.get("mlm", 1.0) if contrastive or bins > 0 else 1.0
    if contrastive:  # rows 2k and 2k+1: the two views of cell k
        keep = np.sort(np.argsort(rng.random((B, L)), axis=1), axis=1)
        halves = [np.take_along_axis(ids, np.sort(keep[:, h * (L // 2):(h + 1) * (L // 2)], axis=1), 1)
                  for h in (0, 1)]
        ids = np.stack(halves, axis=1).reshape(2 * B, L // 2)
        B, L = 2 * B, L // 2
    labels = np.full((B, L), -100, dtype=np.int64)
    selected = rng.random((B, L)) < (s["mask_prob"] if mlm_weight > 0 else 0.0)
    labels[selected] = ids[selected]
    action = rng.random((B, L))
    to_mask = selected & (action < s["mask_token_prob"])
    to_random = selected & ~to_mask & (action < s["mask_token_prob"] + s["random_token_prob"])
    ids[to_mask] = 1
    ids[to_random] = rng.integers(2, V, size=int(to_random.sum()))
    if bins > 0:
        if s["mvc"] > 0 or contrastive:
            sys.exit("pytorch_train.py: the value case has no MVC and no contrastive loss")
        values = rng.integers(0, bins, size=(B, L), dtype=np.int64)
        value_masked = rng.random((B, L)) < s["value_mask_prob"]
        value_target = torch.from_numpy(values[value_masked]).to(dev)
        value_pos = torch.from_numpy(np.flatnonzero(value_masked)).to(dev)
        values[value_masked] = bins
        values_t = torch.from_numpy(values).to(dev)
        value_embeddings = torch.nn.Embedding(bins + 1, s["hidden"])
        torch.nn.init.normal_(value_embeddings.weight, std=s["init_std"])
        value_head = torch.nn.Linear(s["hidden"], bins)
        value_embeddings.to(dev)
        value_head.to(dev)
    input_ids = torch.from_numpy(ids).to(dev)
    labels_t = torch.from_numpy(labels).to(dev)
    flat_labels = labels_t.view(-1)
    target_pos = (flat_labels != -100).nonzero(as_tuple=True)[0]
    target_lab = flat_labels[target_pos]
    n_targets = int(target_pos.numel())
    if bins > 0:
        n_terms = (n_targets if mlm_weight > 0 else 0) + int(value_pos.numel())

    params = list(model.parameters())
    if bins > 0:
        params += list(value_embeddings.parameters()) + list(value_head.parameters())
    if contrastive:
        P = s["projection_dim"]
        act = torch.nn.GELU() if s["activation"] == "gelu" else torch.nn.ReLU()
        projection = torch.nn.Sequential(torch.nn.Linear(s["hidden"], P), act, torch.nn.Linear(P, P)).to(dev)
        log_tau = torch.nn.Parameter(torch.tensor(float(np.log(s["temperature"])), device=dev),
                                     requires_grad=bool(s["learn_temperature"]))
        params += list(projection.parameters()) + ([log_tau] if s["learn_temperature"] else [])
        pair = (torch.arange(B) ^ 1).to(dev)
        diagonal = torch.eye(B, dtype=torch.bool, device=dev)
    decay, no_decay = [], []
    for p in params:  # deduplicated: the decoder weight is the word embedding
        (decay if p.dim() >= 2 else no_decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": s["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=s["lr"], betas=(s["beta1"], s["beta2"]), eps=s["adam_eps"],
                            fused=a.device == "cuda")
    clip = s["clip_norm"] if s["clip_norm"] > 0 else float("inf")
    C = s["hidden"]

    def sync():
        if a.device == "cuda":
            torch.cuda.synchronize()

    def forward():
        with torch.autocast(device_type=a.device, dtype=torch.bfloat16, enabled=a.bf16):
            return forward_in_precision()

    def forward_in_precision():
        if a.head == "full":
            return model(input_ids=input_ids, labels=labels_t).loss
        if bins > 0:
            embeds = model.bert.embeddings.word_embeddings(input_ids) + value_embeddings(values_t)
            hidden = model.bert(inputs_embeds=embeds).last_hidden_state.reshape(-1, C)
            loss = s["value"] * F.cross_entropy(value_head(hidden.index_select(0, value_pos)), value_target,
                                                reduction="sum")
            if n_targets > 0 and mlm_weight > 0:
                loss = loss + mlm_weight * F.cross_entropy(model.cls(hidden.index_select(0, target_pos)),
                                                           target_lab, reduction="sum")
            return loss / n_terms
        states = model.bert(input_ids=input_ids).last_hidden_state
        hidden = states.reshape(-1, C)
        loss = 0.0
        if n_targets > 0:
            logits = model.cls(hidden.index_select(0, target_pos))
            loss = mlm_weight * F.cross_entropy(logits, target_lab)
        if contrastive:
            z = F.normalize(projection(states.mean(1)), dim=1)
            sim = (z @ z.T / torch.exp(log_tau)).masked_fill(diagonal, float("-inf"))
            loss = loss + s["contrastive"] * F.cross_entropy(sim, pair)
        return loss

    total = a.warmup + a.steps
    step_s, fwd_s, bwd_s, opt_s, losses = [], [], [], [], []
    for i in range(total):
        sync()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = forward()
        sync()
        t1 = time.perf_counter()
        loss.backward()
        sync()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        sync()
        t3 = time.perf_counter()
        step_s.append(t3 - t0)
        fwd_s.append(t1 - t0)
        bwd_s.append(t2 - t1)
        opt_s.append(t3 - t2)
        losses.append(float(loss.detach()))
        print("pytorch_train: step %d/%d%s: %.4f s, loss %.4f"
              % (i + 1, total, " (warm-up)" if i < a.warmup else "", step_s[-1], losses[-1]),
              file=sys.stderr, flush=True)

    # PyTorch's own matrix-product rate in the same process (its BLAS, not
    # OpenBLAS; cuBLAS on the GPU, in bf16 with --bf16): C[M,N] = A[M,K]
    # B[N,K]^T, median of 5 after one untimed call.
    mm_dtype = torch.bfloat16 if a.bf16 else torch.float32

    def mm_gflops(m, n, k):
        x, w = torch.randn(m, k, device=dev, dtype=mm_dtype), torch.randn(n, k, device=dev, dtype=mm_dtype)
        torch.mm(x, w.t())
        ts = []
        for _ in range(5):
            sync()
            t = time.perf_counter()
            torch.mm(x, w.t())
            sync()
            ts.append(time.perf_counter() - t)
        return 2.0 * m * n * k / statistics.median(ts) / 1e9

    with torch.no_grad():
        square = 8192 if a.device == "cuda" else 2048
        mm_square = mm_gflops(square, square, square) if a.mm_reference else None
        mm_linear = mm_gflops(B * L, s["hidden"], s["hidden"]) if a.mm_reference else None

    timed = step_s[a.warmup:]
    med = statistics.median(timed)
    T = B * L
    value_rows = int(value_pos.numel()) if bins > 0 else 0
    mlm_rows = (n_targets if a.head == "masked" else T) if mlm_weight > 0 else 0
    flops = model_flops(s, B, L, n_targets, mlm_rows, value_rows)
    result = {
        "impl": "pytorch", "config": a.config, "cells_per_batch": B, "cell_len": L, "vocab": V,
        "tokens_per_step": T, "targets_per_step": n_targets if mlm_weight > 0 else 0,
        "value_targets_per_step": value_rows,
        "params": sum(p.numel() for p in params), "threads": threads,
        "torch_version": torch.__version__, "transformers_version": transformers.__version__,
        "device": torch.cuda.get_device_name() if a.device == "cuda" else "cpu", "bf16": a.bf16,
        "mm_square_size": square if a.mm_reference else None,
        "attn_implementation": attn_impl, "head": a.head,
        "warmup": a.warmup, "steps": a.steps,
        "tokens_per_s": T / med, "step_s": med, "step_s_min": min(timed),
        "forward_s": statistics.median(fwd_s[a.warmup:]),
        "backward_s": statistics.median(bwd_s[a.warmup:]),
        "optimizer_s": statistics.median(opt_s[a.warmup:]),
        "step_s_all": timed, "flops_per_step": flops, "model_gflops": flops / med / 1e9,
        "torch_mm_gflops": mm_square, "torch_mm_linear_gflops": mm_linear,
        "loss_first": losses[0], "loss_last": losses[-1],
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
