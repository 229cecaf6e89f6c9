#!/usr/bin/env python3
r"""Training cells/s and embedding quality of scfm's count-vector VAE against
scvi-tools' SCVI, the real peer, on the same simulated atlas (issue 9, item 7).

    OPENBLAS_CORETYPE=Haswell python3 bench/scvi_vs_scfm.py --build build \
        --workdir /tmp/scvib [--cells 10000 --genes 2000] [--epochs 10] \
        [--likelihood nb|zinb] [--rounds 3] [--threads 2] [--scvi-only] [--json out.json]

Steps:

1. scvi-tools: imported if present, else installed with pip (ensure_scvi:
   `pip install scvi-tools==SCVI_VERSION torch==<the installed torch>`, so
   pip keeps the torch that is there; nothing happens when the pinned
   version is already installed; --no-install refuses instead);
2. data: `scfm simulate --cells C --genes G --types 8 --batches 2 --seed 1`
   into WORKDIR (reused when it exists); for scfm also `scfm vocab` and
   `scfm tokenize --mode counts` (not timed);
3. --rounds rounds, the order of the two sides flipping every round:
   - scfm: `scfm train CONFIG` (configs/scvi-like.cfg: mlp encoder,
     variational, NB/ZINB likelihood, latent 10, one hidden layer of 128,
     conditioned on obs `batch`, 128 cells a micro-batch) with
     train.steps = ceil(epochs x cells / 128), OMP_NUM_THREADS=--threads; the
     whole command is timed (start-up, reading shards, the steps, the final
     checkpoint);
   - scvi: a fresh Python process (this script with --scvi-worker) that
     reads the atlas, `SCVI.setup_anndata(adata, batch_key="batch")` on the
     counts in X, `SCVI(adata, n_hidden=128, n_latent=10, n_layers=1,
     gene_likelihood=...)`, torch.set_num_threads(--threads), and times only
     `model.train(max_epochs=epochs, batch_size=128, train_size=1.0,
     accelerator="cpu")`; the process's whole wall time is reported too;
   cells/s = epochs x cells / train seconds;
4. once more (not in the ratio): SCVI without batch_key, to show what the
   batch conditioning does to batch mixing;
5. quality: the first round's embeddings (scfm embed -> obsm['X_scfm'];
   get_latent_representation() -> obsm['X_scvi'] of a copy of the atlas)
   through `scfm eval --label cell_type --batch batch`: kNN accuracy,
   k-means ARI/NMI, silhouette, iLISI, next to the PCA baseline.

Prints a Markdown table (median train seconds and cells/s of each side, the
ratio scfm / scvi, every round), the quality table and the environment (CPU,
threads, versions, OPENBLAS_CORETYPE, load average). --scvi-only skips scfm
(steps 2's tokenize, 3's scfm runs and scfm's row of 5).
"""
import argparse
import importlib
import importlib.metadata
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

from benchutil import cpu_model

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SCVI_VERSION = "1.4.2"  # the newest scvi-tools on PyPI for Python 3.11 (1.4.3+ need 3.12)
MICRO_BATCH_CELLS = 128


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- install

def installed_version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def ensure_scvi(python=sys.executable, allow_install=True):
    """Idempotent: returns scvi-tools' version, installing SCVI_VERSION with
    pip only when no scvi-tools is there. torch is pinned to the installed
    version so pip cannot replace it (the system one is CPU-only)."""
    have = installed_version("scvi-tools")
    if have:
        if have != SCVI_VERSION:
            log("scvi_vs_scfm.py: scvi-tools %s installed (the benchmark was written against %s); using it"
                % (have, SCVI_VERSION))
        return have
    if not allow_install:
        sys.exit("scvi_vs_scfm.py: scvi-tools is not installed; run\n  %s -m pip install scvi-tools==%s "
                 "torch==<installed torch>\n(or drop --no-install)" % (python, SCVI_VERSION))
    torch = installed_version("torch")
    cmd = [python, "-m", "pip", "install", "scvi-tools==" + SCVI_VERSION]
    if torch:
        cmd.append("torch==" + torch)
    log("scvi_vs_scfm.py: installing: " + " ".join(cmd))
    subprocess.run(cmd, check=True)
    importlib.invalidate_caches()
    after = installed_version("torch")
    if torch and after != torch:
        sys.exit("scvi_vs_scfm.py: pip replaced torch %s by %s" % (torch, after))
    return installed_version("scvi-tools")


# ---------------------------------------------------------------- scvi worker

def scvi_worker(a):
    """One SCVI training in this process; prints one line of JSON."""
    t_start = time.perf_counter()
    import warnings
    warnings.filterwarnings("ignore")
    import logging
    import anndata
    import numpy as np
    import torch
    import scvi
    for name in ("lightning", "lightning.pytorch", "pytorch_lightning", "scvi"):
        logging.getLogger(name).setLevel(logging.ERROR)
    torch.set_num_threads(a.threads)
    scvi.settings.seed = a.seed
    scvi.settings.dl_num_workers = 0
    t_import = time.perf_counter()

    adata = anndata.read_h5ad(a.atlas)
    t_read = time.perf_counter()
    scvi.model.SCVI.setup_anndata(adata, batch_key="batch" if a.batch else None)
    model = scvi.model.SCVI(adata, n_hidden=128, n_latent=10, n_layers=1, gene_likelihood=a.likelihood)
    t_setup = time.perf_counter()
    plan = {} if a.scvi_kl_warmup_epochs is None else {"n_epochs_kl_warmup": a.scvi_kl_warmup_epochs}
    model.train(max_epochs=a.epochs, batch_size=MICRO_BATCH_CELLS, train_size=1.0, accelerator="cpu",
                plan_kwargs=plan, devices=1, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    t_train = time.perf_counter()
    latent = model.get_latent_representation()
    t_latent = time.perf_counter()
    hist = model.history.get("elbo_train")
    elbo = [float(x) for x in np.asarray(hist).ravel()] if hist is not None else []
    if a.out:
        fresh = anndata.read_h5ad(a.atlas)  # without setup_anndata's additions
        fresh.obsm[a.key] = np.ascontiguousarray(latent, dtype=np.float32)
        fresh.write_h5ad(a.out + ".tmp")
        os.replace(a.out + ".tmp", a.out)
    t_end = time.perf_counter()
    print(json.dumps({
        "cells": int(adata.n_obs), "genes": int(adata.n_vars), "epochs": a.epochs, "batch": a.batch,
        "likelihood": a.likelihood, "threads": torch.get_num_threads(),
        "import_s": t_import - t_start, "read_s": t_read - t_import, "setup_s": t_setup - t_read,
        "train_s": t_train - t_setup, "latent_s": t_latent - t_train, "write_s": t_end - t_latent,
        "cells_per_s": a.epochs * adata.n_obs / (t_train - t_setup),
        "elbo_train_first": elbo[0] if elbo else None, "elbo_train_last": elbo[-1] if elbo else None,
        "scvi": scvi.__version__, "torch": torch.__version__,
    }), flush=True)


def run_scvi(a, atlas, batch, out, env):
    cmd = [a.python, os.path.abspath(__file__), "--scvi-worker", "--atlas", atlas, "--epochs", str(a.epochs),
           "--likelihood", a.likelihood, "--threads", str(a.threads), "--seed", str(a.scvi_seed)]
    if batch:
        cmd.append("--batch")
    if a.scvi_kl_warmup_epochs is not None:
        cmd += ["--scvi-kl-warmup-epochs", str(a.scvi_kl_warmup_epochs)]
    if out:
        cmd += ["--out", out, "--key", "X_scvi"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        sys.exit("scvi_vs_scfm.py: the scvi-tools run failed (exit %d): %s" % (proc.returncode, " ".join(cmd)))
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if not lines:
        sys.stderr.write(proc.stderr[-4000:])
        sys.exit("scvi_vs_scfm.py: the scvi-tools run printed no JSON")
    r = json.loads(lines[-1])
    r["wall_s"] = wall
    return r


# ---------------------------------------------------------------- scfm side

def run(cmd, env, quiet=True):
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE if quiet else None, stderr=subprocess.PIPE,
                          text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        sys.exit("scvi_vs_scfm.py: failed (exit %d): %s" % (proc.returncode, " ".join(cmd)))
    return proc


def scfm_prepare(scfm, work, atlas, env, extra=()):
    """Vocabulary and count shards for scfm train (not timed)."""
    vocab, shards = os.path.join(work, "vocab"), os.path.join(work, "count_shards")
    run([scfm, "vocab", atlas, "-o", vocab, "--force", "--quiet"], env)
    run([scfm, "tokenize", "--mode", "counts", "--vocab", vocab, atlas, "-o", shards, "--force", "--quiet"]
        + list(extra), env)
    return vocab, shards


def scfm_steps(epochs, cells):
    return math.ceil(epochs * cells / MICRO_BATCH_CELLS)


def scfm_train(a, scfm, work, vocab, shards, steps, run_name, env):
    """scfm train of the scvi-like config for `steps` micro-batches of 128
    cells; times the whole command. Returns the timing and the run dir."""
    ckdir = os.path.join(work, "ck")
    sets = ["data.shards=" + shards, "data.vocab=" + vocab, "checkpoint.dir=" + ckdir,
            "checkpoint.run=" + run_name, "checkpoint.every=0", "checkpoint.keep=1",
            "train.steps=%d" % steps, "train.micro_batch_cells=%d" % MICRO_BATCH_CELLS,
            "model.likelihood=" + a.likelihood,
            # scvi-tools trains with a constant learning rate and no warm-up
            "train.warmup_steps=0", "train.schedule=constant"] + a.scfm_set
    cmd = [scfm, "train", a.config]
    for kv in sets:
        cmd += ["--set", kv]
    cmd.append("--quiet")
    t0 = time.perf_counter()
    run(cmd, env)
    wall = time.perf_counter() - t0
    rundir = os.path.join(ckdir, run_name)
    r = {"train_s": wall, "steps": steps, "command": cmd, "cells_per_s": a.epochs * a.cells / wall}
    # the training loop's own clock, from the last metrics line (no start-up, no final checkpoint)
    try:
        with open(os.path.join(rundir, "metrics.jsonl")) as f:
            last = [json.loads(l) for l in f if l.strip()][-1]
        r["loop_s"] = float(last["elapsed_s"])
        r["loss_last"] = last.get("loss")
    except (OSError, IndexError, KeyError, ValueError):
        r["loop_s"] = None
    return r, rundir


def scfm_embed(scfm, rundir, atlas, out, env):
    run([scfm, "embed", rundir, atlas, "-o", out, "--force", "--quiet"], env)


# ---------------------------------------------------------------- eval

def scfm_eval(scfm, path, key, outdir, env):
    run([scfm, "eval", path, "--label", "cell_type", "--batch", "batch", "--embedding", key, "-o", outdir,
         "--force", "--quiet"], env)
    with open(os.path.join(outdir, "report.json")) as f:
        return json.load(f)["results"]


# ---------------------------------------------------------------- main

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default=os.path.join(ROOT, "build"), help="scfm build directory")
    p.add_argument("--workdir", default="/tmp/scfm_scvi_bench")
    p.add_argument("--cells", type=int, default=10000)
    p.add_argument("--genes", type=int, default=2000)
    p.add_argument("--types", type=int, default=8)
    p.add_argument("--batches", type=int, default=2)
    p.add_argument("--seed", type=int, default=1, help="scfm simulate's seed")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--likelihood", choices=["nb", "zinb"], default="nb",
                   help="SCVI gene_likelihood and scfm model.likelihood")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2,
                   help="torch.set_num_threads for scvi-tools, OMP_NUM_THREADS for scfm")
    p.add_argument("--config", default=os.path.join(ROOT, "configs", "scvi-like.cfg"))
    p.add_argument("--scfm-set", action="append", default=[], metavar="KEY=V",
                   help="extra --set override for scfm train (repeatable; after the benchmark's own)")
    p.add_argument("--scfm-tokenize-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for scfm tokenize --mode counts (repeatable)")
    p.add_argument("--scvi-only", action="store_true", help="skip scfm (only scvi-tools and the baseline)")
    p.add_argument("--no-unbatched", action="store_true", help="skip the SCVI run without batch_key")
    p.add_argument("--no-eval", action="store_true", help="timings only")
    p.add_argument("--no-install", action="store_true", help="fail instead of pip-installing scvi-tools")
    p.add_argument("--install-only", action="store_true", help="ensure scvi-tools is installed, then exit")
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--json", help="write all results to this file")
    # the worker: one SCVI training in a process of its own
    p.add_argument("--scvi-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--atlas", help=argparse.SUPPRESS)
    p.add_argument("--batch", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--key", default="X_scvi", help=argparse.SUPPRESS)
    p.add_argument("--scvi-seed", type=int, default=0, help="scvi.settings.seed")
    p.add_argument("--scvi-kl-warmup-epochs", type=int, metavar="N",
                   help="SCVI's n_epochs_kl_warmup (default: scvi-tools' own, 400)")
    a = p.parse_args(argv)
    if a.rounds < 1 or a.epochs < 1 or a.cells < 2 or a.threads < 1:
        p.error("--rounds, --epochs, --threads must be >= 1 and --cells >= 2")
    return a


def fmt(x, spec="%.4f"):
    return "-" if x is None else spec % x


def main(argv):
    a = parse_args(argv)
    if a.scvi_worker:
        a.seed = a.scvi_seed
        return scvi_worker(a)
    scvi_version = ensure_scvi(a.python, not a.no_install)
    if a.install_only:
        print("scvi-tools %s, torch %s" % (scvi_version, installed_version("torch")))
        return
    scfm = os.path.join(os.path.abspath(a.build), "scfm")
    if not os.access(scfm, os.X_OK):
        sys.exit("scvi_vs_scfm.py: %s not found; build first:\n"
                 "  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build -j2" % scfm)
    if not a.scvi_only and not os.path.exists(a.config):
        sys.exit("scvi_vs_scfm.py: %s not found (use --scvi-only, or --config)" % a.config)
    a.config = os.path.abspath(a.config)
    work = os.path.abspath(a.workdir)
    os.makedirs(work, exist_ok=True)
    env = os.environ.copy()
    env["OMP_NUM_THREADS"] = str(a.threads)
    if not env.get("OPENBLAS_CORETYPE"):
        env["OPENBLAS_CORETYPE"] = "Haswell"
    t_all = time.perf_counter()

    atlas = os.path.join(work, "atlas_%dx%d_t%d_b%d_s%d.h5ad" % (a.cells, a.genes, a.types, a.batches, a.seed))
    if not os.path.exists(atlas):
        run([scfm, "simulate", "--cells", str(a.cells), "--genes", str(a.genes), "--types", str(a.types),
             "--batches", str(a.batches), "--seed", str(a.seed), "-o", atlas], env)
    steps = scfm_steps(a.epochs, a.cells)
    if not a.scvi_only:
        vocab, shards = scfm_prepare(scfm, work, atlas, env, a.scfm_tokenize_arg)

    environment = {
        "cpu": cpu_model(), "logical_cpus": os.cpu_count(), "threads": a.threads,
        "OMP_NUM_THREADS": env["OMP_NUM_THREADS"], "OPENBLAS_CORETYPE": env["OPENBLAS_CORETYPE"],
        "python": platform.python_version(), "scvi-tools": scvi_version,
        "torch": installed_version("torch"), "lightning": installed_version("lightning"),
        "anndata": installed_version("anndata"), "load_average_start": list(os.getloadavg()),
    }
    try:
        environment["git_commit"] = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                                   capture_output=True, text=True).stdout.strip()
    except OSError:
        pass
    log("environment: " + ", ".join("%s=%s" % kv for kv in environment.items()))
    log("atlas %s: %d cells x %d genes; %d epochs = %d scfm steps of %d cells; likelihood %s"
        % (atlas, a.cells, a.genes, a.epochs, steps, MICRO_BATCH_CELLS, a.likelihood))

    sides = ["scvi"] if a.scvi_only else ["scfm", "scvi"]
    runs = {s: [] for s in sides}
    scvi_out = os.path.join(work, "scvi_embedded.h5ad")
    scfm_out = os.path.join(work, "scfm_embedded.h5ad")
    scfm_rundir = None
    for r in range(a.rounds):
        order = sides if r % 2 == 0 else sides[::-1]
        for side in order:
            if side == "scvi":
                res = run_scvi(a, atlas, True, scvi_out if r == 0 else None, env)
                log("  round %d scvi: train %.2f s, %.0f cells/s (process %.1f s)"
                    % (r + 1, res["train_s"], res["cells_per_s"], res["wall_s"]))
            else:
                res, rundir = scfm_train(a, scfm, work, vocab, shards, steps, "scfm_r%d" % (r + 1), env)
                if r == 0:
                    scfm_rundir = rundir
                log("  round %d scfm: train %.2f s, %.0f cells/s" % (r + 1, res["train_s"], res["cells_per_s"]))
            res["load_average"] = os.getloadavg()[0]
            runs[side].append(res)

    unbatched = None
    unbatched_out = os.path.join(work, "scvi_nobatch_embedded.h5ad")
    if not a.no_unbatched:
        unbatched = run_scvi(a, atlas, False, unbatched_out, env)
        log("  scvi without batch_key: train %.2f s, %.0f cells/s" % (unbatched["train_s"], unbatched["cells_per_s"]))

    quality = {}
    if not a.no_eval:
        if scfm_rundir:
            scfm_embed(scfm, scfm_rundir, atlas, scfm_out, env)
            quality["scfm"] = scfm_eval(scfm, scfm_out, "X_scfm", os.path.join(work, "eval_scfm"), env)
        quality["scvi"] = scfm_eval(scfm, scvi_out, "X_scvi", os.path.join(work, "eval_scvi"), env)
        if unbatched:
            quality["scvi_nobatch"] = scfm_eval(scfm, unbatched_out, "X_scvi",
                                                os.path.join(work, "eval_scvi_nobatch"), env)
    total = time.perf_counter() - t_all
    environment["load_average_end"] = list(os.getloadavg())

    # ---- report
    med = {s: statistics.median(x["train_s"] for x in runs[s]) for s in sides}
    cps = {s: a.epochs * a.cells / med[s] for s in sides}
    print("\n%d cells x %d genes (%d types, %d batches, seed %d), %d epochs (%d micro-batches of %d cells), "
          "likelihood %s, latent 10, 1 hidden layer of 128, %d threads each, %d rounds\n"
          % (a.cells, a.genes, a.types, a.batches, a.seed, a.epochs, steps, MICRO_BATCH_CELLS, a.likelihood,
             a.threads, a.rounds))
    print("| side | what is timed | median train s | cells/s | whole run s (median) | rounds (train s) |")
    print("|---|---|---|---|---|---|")
    if "scfm" in sides:
        loop = [x["loop_s"] for x in runs["scfm"] if x.get("loop_s")]
        print("| scfm train (configs/scvi-like.cfg) | the whole command%s | %.2f | %.0f | %.2f | %s |"
              % (" (loop alone: %.2f s median)" % statistics.median(loop) if loop else "", med["scfm"],
                 cps["scfm"], med["scfm"], " ".join("%.2f" % x["train_s"] for x in runs["scfm"])))
    print("| scvi-tools SCVI (batch_key=batch) | model.train() | %.2f | %.0f | %.2f | %s |"
          % (med["scvi"], cps["scvi"], statistics.median(x["wall_s"] for x in runs["scvi"]),
             " ".join("%.2f" % x["train_s"] for x in runs["scvi"])))
    if unbatched:
        print("| scvi-tools SCVI (no batch_key), once | model.train() | %.2f | %.0f | %.2f | %.2f |"
              % (unbatched["train_s"], unbatched["cells_per_s"], unbatched["wall_s"], unbatched["train_s"]))
    ratio = per_round = None
    if "scfm" in sides:
        ratio = cps["scfm"] / cps["scvi"]
        per_round = [y["train_s"] / x["train_s"] for x, y in zip(runs["scfm"], runs["scvi"])]
        print("\nscfm / scvi-tools training cells/s: **%.2fx** (rounds: %s; bar: 2x)"
              % (ratio, " ".join("%.2f" % x for x in per_round)))
    print("\ncells/s = epochs x cells / train seconds. scvi-tools' whole run: a fresh Python process "
          "(imports, reading the .h5ad, setup_anndata, model.train(), get_latent_representation(), "
          "writing the copy in round 1).")
    if quality:
        print("\nEmbeddings of round 1, `scfm eval --label cell_type --batch batch` (%d cells):\n" % a.cells)
        print("| embedding | dim | kNN accuracy (cell_type) | k-means ARI | k-means NMI | silhouette | "
              "iLISI (batch; 0 none, 1 perfect) |")
        print("|---|---|---|---|---|---|---|")
        rows = [(k, label) for k, label in (("scfm", "scfm X_scfm"), ("scvi", "scvi-tools X_scvi, batch_key=batch"),
                                            ("scvi_nobatch", "scvi-tools X_scvi, no batch_key")) if k in quality]
        for k, label in rows:
            e = quality[k]["embedding"]
            print("| %s | %d | %s | %s | %s | %s | %s |" % (label, e["dim"], fmt(e["knn_accuracy"]),
                  fmt(e["kmeans_ari"]), fmt(e["kmeans_nmi"]), fmt(e["silhouette"]), fmt(e["ilisi"])))
        p = quality[rows[0][0]]["pca"]
        print("| PCA baseline (log1p, 2000 HVG) | %d | %s | %s | %s | %s | %s |" % (p["dim"], fmt(p["knn_accuracy"]),
              fmt(p["kmeans_ari"]), fmt(p["kmeans_nmi"]), fmt(p["silhouette"]), fmt(p["ilisi"])))
    print("\nCPU: %s (%s logical CPUs); threads %d (OMP_NUM_THREADS=%s for scfm, torch.set_num_threads(%d) for "
          "scvi-tools); OPENBLAS_CORETYPE=%s; scvi-tools %s, torch %s, lightning %s, anndata %s, Python %s; "
          "load average %.1f at the start, %.1f at the end; %.0f s in all"
          % (environment["cpu"], environment["logical_cpus"], a.threads, env["OMP_NUM_THREADS"], a.threads,
             env["OPENBLAS_CORETYPE"], scvi_version, environment["torch"], environment["lightning"],
             environment["anndata"], environment["python"], environment["load_average_start"][0],
             environment["load_average_end"][0], total))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"environment": environment, "settings": {k: v for k, v in vars(a).items()
                                                                if not k.startswith("scvi_worker")},
                       "atlas": atlas, "scfm_steps": steps, "runs": runs, "scvi_nobatch": unbatched,
                       "median_train_s": med, "cells_per_s": cps, "ratio": ratio, "ratio_per_round": per_round,
                       "quality": quality, "total_s": total}, f, indent=1)
        print("\nwrote %s" % a.json)


if __name__ == "__main__":
    main(sys.argv[1:])
