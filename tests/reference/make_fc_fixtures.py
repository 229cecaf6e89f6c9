#!/usr/bin/env python3
"""Writes the count encoders' fixtures for tests/unit/test_fc_reference.c:

fc_likelihoods.safetensors: log-likelihoods from scipy.stats of counts x
under NB(mu, theta) (scipy's nbinom with n = theta, p = theta / (theta + mu)),
the zero-inflated NB with dropout probability sigmoid(pi), and Poisson(mu),
one value per element (float64 stored as float32 inputs, float64 outputs).

fc_vae_nb.safetensors, fc_vae_zinb.safetensors: a small scVI-style mlp VAE
in PyTorch float64 with scfm's tensor names and the float32 weights stored,
evaluated with z = mean (scfm's evaluation forward): input log1p(x / library
* 1e4) with the condition one-hot, two layers (h = act(W0 in + b0), then h +
act(W1 h + b1)), mean and log-variance heads, a mirror decoder, rho =
softmax, mu = library * rho, theta = exp(px_r), scVI's log_nb_positive /
log_zinb_positive (eps 1e-8). Stored: every parameter, `input.counts` [n,G],
`input.library` [n], `input.conditions` I32 [n] (-1: none), `loss` [1] =
sum over cells of (-log-likelihood summed over genes + KL), and `grad.<name>`
= d loss / d parameter. Needs torch, scipy and safetensors."""
import argparse
import pathlib

import numpy as np
import scipy.special
import scipy.stats
import torch
import torch.nn.functional as F
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import save_file

G, H, D, NC, N = 12, 8, 3, 2, 5
EPS = 1e-8


def log_nb_positive(x, mu, theta):
    """scvi.distributions._negative_binomial.log_nb_positive."""
    log_theta_mu_eps = torch.log(theta + mu + EPS)
    return (theta * (torch.log(theta + EPS) - log_theta_mu_eps) + x * (torch.log(mu + EPS) - log_theta_mu_eps)
            + torch.lgamma(x + theta) - torch.lgamma(theta) - torch.lgamma(x + 1))


def log_zinb_positive(x, mu, theta, pi):
    """scvi.distributions._negative_binomial.log_zinb_positive."""
    softplus_pi = F.softplus(-pi)
    log_theta_eps = torch.log(theta + EPS)
    log_theta_mu_eps = torch.log(theta + mu + EPS)
    pi_theta_log = -pi + theta * (log_theta_eps - log_theta_mu_eps)
    case_zero = F.softplus(pi_theta_log) - softplus_pi
    mul_case_zero = torch.mul((x < EPS).type(torch.float64), case_zero)
    case_non_zero = (-softplus_pi + pi_theta_log + x * (torch.log(mu + EPS) - log_theta_mu_eps)
                     + torch.lgamma(x + theta) - torch.lgamma(theta) - torch.lgamma(x + 1))
    mul_case_non_zero = torch.mul((x > EPS).type(torch.float64), case_non_zero)
    return mul_case_zero + mul_case_non_zero


def likelihoods(out):
    rng = np.random.default_rng(3)
    K = 60
    mu = rng.uniform(0.05, 40.0, K).astype(np.float32)
    theta = np.exp(rng.uniform(-2.5, 3.0, K)).astype(np.float32)
    pi = rng.normal(0.0, 1.5, K).astype(np.float32)
    x = rng.negative_binomial(theta, theta / (theta + mu)).astype(np.float32)
    x[::7] = 0.0
    m, t, p, k = (v.astype(np.float64) for v in (mu, theta, pi, x))
    nb = scipy.stats.nbinom.logpmf(k, t, t / (t + m))
    drop = scipy.special.expit(p)
    zinb = np.where(k == 0, np.log(drop + (1 - drop) * np.exp(nb)), np.log1p(-drop) + nb)
    poisson = scipy.stats.poisson.logpmf(k, m)
    save_numpy({"x": x, "mu": mu, "log_theta": np.log(theta).astype(np.float32), "pi": pi,
                "nb": nb, "zinb": zinb, "poisson": poisson}, out,
               metadata={"reference": "scipy " + scipy.__version__})
    print(f"{out}: {K} values")


def vae(out, likelihood, activation, condition_into, seed):
    torch.manual_seed(seed)  # Poisson.sample draws from the global generator
    gen = torch.Generator().manual_seed(seed)
    enc_in = G + (NC if condition_into in ("encoder", "both") else 0)
    dec_in = D + (NC if condition_into in ("decoder", "both") else 0)
    shapes = {"encoder.fc.0": (H, enc_in), "encoder.fc.1": (H, H), "encoder.mean": (D, H), "encoder.logvar": (D, H),
              "decoder.fc.0": (H, dec_in), "decoder.fc.1": (H, H), "decoder.scale": (G, H)}
    if likelihood == "zinb":
        shapes["decoder.dropout"] = (G, H)
    params = {}
    for name, (o, i) in shapes.items():
        params[name + ".weight"] = torch.randn(o, i, generator=gen) * 0.15
        params[name + ".bias"] = torch.randn(o, generator=gen) * 0.1
    params["px_r"] = torch.randn(G, generator=gen) * 0.5
    # the float64 run uses exactly the float32 values stored
    params = {k: v.float().double().requires_grad_() for k, v in params.items()}

    counts = torch.distributions.Poisson(torch.rand(N, G, generator=gen) * 6.0).sample().double()
    library = counts.sum(1) * 1.4 + 2.0
    conditions = torch.tensor([1, 0, -1, 1, 0], dtype=torch.int32)
    onehot = torch.zeros(N, NC, dtype=torch.float64)
    for c, k in enumerate(conditions.tolist()):
        if k >= 0:
            onehot[c, k] = 1.0

    act = torch.relu if activation == "relu" else F.gelu
    lin = lambda name, x: x @ params[name + ".weight"].T + params[name + ".bias"]
    x = torch.log1p(counts / library[:, None] * 1e4)
    if enc_in > G:
        x = torch.cat([x, onehot], 1)
    h = act(lin("encoder.fc.0", x))
    h = h + act(lin("encoder.fc.1", h))
    mean, logvar = lin("encoder.mean", h), lin("encoder.logvar", h)
    z = torch.cat([mean, onehot], 1) if dec_in > D else mean
    d = act(lin("decoder.fc.0", z))
    d = d + act(lin("decoder.fc.1", d))
    mu = library[:, None] * torch.softmax(lin("decoder.scale", d), 1)
    theta = torch.exp(params["px_r"])
    if likelihood == "zinb":
        ll = log_zinb_positive(counts, mu, theta, lin("decoder.dropout", d))
    else:
        ll = log_nb_positive(counts, mu, theta)
    kl = 0.5 * (mean ** 2 + torch.exp(logvar) - 1.0 - logvar)
    loss = -ll.sum() + kl.sum()
    print(f"  reconstruction {-ll.sum().item():.4f}, KL {kl.sum().item():.4f}")
    loss.backward()
    tensors = {k: v.detach().float().contiguous() for k, v in params.items()}
    tensors.update({f"grad.{k}": v.grad.float().contiguous() for k, v in params.items()})
    tensors["input.counts"] = counts.float()
    tensors["input.library"] = library.float()
    tensors["input.conditions"] = conditions
    tensors["loss"] = loss.detach().float().reshape(1)
    meta = {"genes": str(G), "fc_hidden": str(H), "fc_layers": "2", "latent": str(D), "num_conditions": str(NC),
            "condition_into": condition_into, "likelihood": likelihood, "activation": activation,
            "torch": torch.__version__}
    save_file(tensors, out, metadata=meta)
    print(f"{out}: loss {loss.item():.6f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out-dir", default=str(pathlib.Path(__file__).parents[1] / "fixtures"))
    args = ap.parse_args()
    out = pathlib.Path(args.out_dir)
    likelihoods(str(out / "fc_likelihoods.safetensors"))
    vae(str(out / "fc_vae_nb.safetensors"), "nb", "relu", "both", 11)
    vae(str(out / "fc_vae_zinb.safetensors"), "zinb", "gelu", "decoder", 12)


if __name__ == "__main__":
    main()
