#!/usr/bin/env python3
"""Writes tests/fixtures/contrastive_infonce.safetensors for
tests/unit/test_contrastive.c: PyTorch's projection head and symmetric InfoNCE
(SimCLR's NT-Xent, views 2k and 2k+1 a positive pair, every other view a
negative) on random pooled embeddings, in float64 and stored as float32.

Inputs: x [N,C], contrastive.projection.{0,2}.{weight,bias}, log_temperature [1].
Outputs: loss [1] (the sum over all N anchors) and the gradient of that sum
with respect to each input (prefix "grad."). Needs torch and safetensors."""
import argparse
import pathlib

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

N, C, P = 10, 12, 6


def infonce_sum(z, log_tau):
    """Sum over anchors of -log softmax_{j != i}(z_i . z_j / tau)[pair(i)]."""
    sim = z @ z.T / torch.exp(log_tau)
    sim = sim.masked_fill(torch.eye(len(z), dtype=torch.bool), float("-inf"))
    pair = torch.arange(len(z)) ^ 1
    return F.cross_entropy(sim, pair, reduction="sum")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=str(pathlib.Path(__file__).parents[1] / "fixtures/contrastive_infonce.safetensors"))
    args = ap.parse_args()
    torch.manual_seed(7)
    head = torch.nn.Sequential(torch.nn.Linear(C, P), torch.nn.GELU(), torch.nn.Linear(P, P)).double()
    x = torch.randn(N, C, dtype=torch.float64, requires_grad=True)
    log_tau = torch.tensor([-0.7], dtype=torch.float64, requires_grad=True)  # tau ~ 0.5
    z = F.normalize(head(x), dim=1)
    loss = infonce_sum(z, log_tau[0])
    loss.backward()
    out = {"x": x, "log_temperature": log_tau, "loss": loss.reshape(1)}
    for name, p in head.named_parameters():
        out[f"contrastive.projection.{name}"] = p
    grads = {f"grad.{k}": v.grad for k, v in out.items() if k != "loss"}
    tensors = {k: v.detach().float().contiguous() for k, v in {**out, **grads}.items()}
    save_file(tensors, args.out, metadata={"N": str(N), "C": str(C), "P": str(P)})
    print(f"{args.out}: loss {loss.item():.6f}")


if __name__ == "__main__":
    main()
