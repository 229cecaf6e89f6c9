#!/usr/bin/env python3
r"""Tokenizer cells/s and peak memory of `scfm tokenize --mode rank` against a
plain Python (anndata + numpy) rank encoder, on the same file and vocabulary.

    python3 bench/tokenize_vs_python.py --build build-bench --workdir /tmp/tb \
        [--cells 100000 --genes 20000 --seed 1 | --input FILE.h5ad] \
        [--rounds 3] [--sides scfm1,scfm1x2,scfm2,python] [--baseline OLD_BUILD] \
        [--verify] [--json out.json]

Builds nothing. Steps:

1. the input: --input, or WORKDIR/atlas_<cells>x<genes>_s<seed>.h5ad written
   by `scfm simulate --cells C --genes G --types 8 --batches 2 --seed S` when
   it does not exist yet (kept for later runs; --cleanup removes it at the
   end); then it is read once (`cat > /dev/null`) so that every timed run
   finds it in the page cache;
2. the vocabulary: `scfm vocab INPUT -o WORKDIR/vocab` (Geneformer V1: no
   <cls>/<eos>);
3. --rounds rounds; in each, every side of --sides runs once, in an order that
   rotates and flips from round to round, so that a burst of load on a shared
   machine does not hit one side only:
   - scfmN: `mpirun --oversubscribe -np N scfm tokenize --mode rank --vocab
     WORKDIR/vocab INPUT -o WORKDIR/shards_npN --force` with
     OMP_NUM_THREADS=1 (one thread per rank, each rank bound to a core by
     Open MPI's default; mpirun is used for N = 1 too, so its start-up is
     counted);
   - scfmNxT: the same with T OpenMP threads per rank (OMP_NUM_THREADS=T,
     `mpirun --bind-to none`, so that the threads may use other cores);
   - baseN, baseNxT: the same with the scfm of --baseline (another build, e.g.
     of an older commit), to compare two builds in the same rounds;
   - python: `python3 bench/python_rank_tokenizer.py INPUT --vocab
     WORKDIR/vocab -o WORKDIR/python_tokens.h5` (one process);
   every process (each MPI rank on its own) runs under `/usr/bin/time -v`,
   which gives its peak resident set size; the wall clock is the driver's,
   around the whole command (interpreter start, imports and MPI start-up
   included);
4. --verify: after the first round, the tokens, offsets, cell ids and obs
   codes of the Python output must equal those of scfm's shard_00000.h5
   (every cell; inputs of at most 1,000,000 cells, one shard), and the shards
   of every scfm (and base) side must be identical to each other.

Prints Markdown tables (median wall seconds, cells/s, ratios to Python, each
round's ratio, peak RSS per process) and the environment; --json writes every
run. Options: --python-sort cell|chunk (bench/python_rank_tokenizer.py
--sort), --chunk-cells N (its chunk, default 8192, scfm's round), --keep
(keep the shards and the Python output).
"""
import argparse
import glob
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time

from benchutil import cpu_model

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TIME = "/usr/bin/time"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default=os.path.join(ROOT, "build-bench"), help="scfm build directory")
    p.add_argument("--workdir", default="/tmp/scfm-tokbench")
    p.add_argument("--input", help="an existing .h5ad (otherwise one is simulated)")
    p.add_argument("--cells", type=int, default=100000)
    p.add_argument("--genes", type=int, default=20000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--sides", default="scfm1,scfm2,python",
                   help="comma-separated: scfmN (N MPI ranks, one thread each), scfmNxT (T OpenMP threads "
                        "per rank), baseN / baseNxT (the --baseline build) and/or python")
    p.add_argument("--baseline", help="build directory of another scfm, for the base sides")
    p.add_argument("--python-sort", choices=["cell", "chunk"], default="cell")
    p.add_argument("--chunk-cells", type=int, default=8192)
    p.add_argument("--verify", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the shards and the Python output")
    p.add_argument("--cleanup", action="store_true", help="delete the simulated input at the end")
    p.add_argument("--json")
    return p.parse_args(argv)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def time_v(path):
    """Peak RSS (kB), user and system seconds from a `/usr/bin/time -v -o` file."""
    out = {}
    with open(path) as f:
        for line in f:
            key, _, value = line.strip().rpartition(": ")
            if key == "Maximum resident set size (kbytes)":
                out["max_rss_kb"] = int(value)
            elif key == "User time (seconds)":
                out["user_s"] = float(value)
            elif key == "System time (seconds)":
                out["sys_s"] = float(value)
            elif key == "Exit status":
                out["exit"] = int(value)
    return out


def run_side(side, args, scfm, vocab, inp):
    """Runs one side once; returns its record."""
    rss_dir = os.path.join(args.workdir, "rss")
    shutil.rmtree(rss_dir, ignore_errors=True)
    os.makedirs(rss_dir)
    if side == "python":
        out = os.path.join(args.workdir, "python_tokens.h5")
        cmd = [TIME, "-v", "-o", os.path.join(rss_dir, "rss.0"), sys.executable,
               os.path.join(HERE, "python_rank_tokenizer.py"), inp, "--vocab", vocab, "-o", out,
               "--sort", args.python_sort, "--chunk-cells", str(args.chunk_cells)]
        ranks = 1
    else:
        kind, ranks, threads = parse_side(side)
        binary = scfm if kind == "scfm" else os.path.abspath(os.path.join(args.baseline, "scfm"))
        out = os.path.join(args.workdir, f"shards_{side}")
        wrapped = f'exec {TIME} -v -o {rss_dir}/rss.$OMPI_COMM_WORLD_RANK "$0" "$@"'
        bind = ["--bind-to", "none"] if threads > 1 else []
        cmd = ["env", f"OMP_NUM_THREADS={threads}", "mpirun", "--oversubscribe", "-x", "OMP_NUM_THREADS", *bind,
               "-np", str(ranks), "sh", "-c", wrapped, binary, "tokenize",
               "--mode", "rank", "--vocab", vocab, inp, "-o", out, "--force"]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        log(r.stdout + r.stderr)
        raise SystemExit(f"{side} failed ({r.returncode}): {' '.join(cmd)}")
    procs = [time_v(os.path.join(rss_dir, f"rss.{k}")) for k in range(ranks)]
    rec = {"side": side, "ranks": ranks, "wall_s": wall, "load_before": load, "load_after": os.getloadavg()[0],
           "max_rss_kb": [p.get("max_rss_kb") for p in procs], "user_s": [p.get("user_s") for p in procs],
           "sys_s": [p.get("sys_s") for p in procs], "output": out, "command": cmd}
    m = re.search(r"in ([0-9.]+) s \(([0-9]+) cells/s\)", r.stderr)
    if m:
        rec["scfm_reported_s"] = float(m.group(1))
    if side == "python":
        rec["python_report"] = json.loads(r.stdout.strip().splitlines()[-1])
    return rec


def parse_side(side):
    """("scfm" or "base", ranks, threads per rank) of scfmN, scfmNxT, baseN, baseNxT."""
    m = re.fullmatch(r"(scfm|base)([1-9][0-9]*)(?:x([1-9][0-9]*))?", side)
    if not m:
        raise SystemExit(f"unknown side {side}")
    return m.group(1), int(m.group(2)), int(m.group(3) or 1)


def verify(records, inp):
    import h5py
    import numpy as np

    keys = ["tokens", "offsets", "cell_id"]
    scfm_sides = [r for r in records if r["side"] != "python"]
    py = [r for r in records if r["side"] == "python"]
    shard_sets = {r["side"]: sorted(glob.glob(os.path.join(r["output"], "shard_*.h5"))) for r in scfm_sides}
    ok = True
    for side, files in shard_sets.items():
        if len(files) != 1:
            log(f"verify: {side} wrote {len(files)} shards; --verify needs one (at most 1,000,000 cells)")
            return False
    first = scfm_sides[0]["side"] if scfm_sides else None
    if first is None:
        return True
    with h5py.File(shard_sets[first][0], "r") as a:
        ref = {k: a[k][()] for k in keys}
        for name in a.get("obs", {}):
            ref[f"obs/{name}/codes"] = a[f"obs/{name}/codes"][()]
        n_cells, n_tokens = len(ref["cell_id"]), len(ref["tokens"])
        for side, files in shard_sets.items():
            if side == first:
                continue
            with h5py.File(files[0], "r") as b:
                same = all(np.array_equal(ref[k], b[k][()]) for k in ref)
                log(f"verify: {side} shards {'==' if same else '!='} {first} shards")
                ok &= same
        for r in py:
            with h5py.File(r["output"], "r") as b:
                for k in ref:
                    same = k in b and ref[k].dtype == b[k].dtype and np.array_equal(ref[k], b[k][()])
                    ok &= same
                    if not same:
                        log(f"verify: python {k} differs from {first}")
                log(f"verify: python output vs {first}: {n_cells} cells, {n_tokens} tokens, "
                    f"{'identical' if ok else 'DIFFERENT'}")
    return ok


def environment(args, scfm):
    env = {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "python": platform.python_version(),
           "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")}
    try:
        with open("/proc/meminfo") as f:
            env["mem_total_kb"] = int(f.readline().split()[1])
    except OSError:
        pass
    for mod in ("numpy", "anndata", "h5py", "scipy", "pandas"):
        try:
            from importlib.metadata import version
            env[mod] = version(mod)
        except Exception:  # noqa: BLE001
            env[mod] = None
    try:
        env["mpirun"] = subprocess.run(["mpirun", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
        env["git"] = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True).stdout.strip()
        env["git_dirty"] = bool(subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                                               capture_output=True, text=True).stdout.strip())
    except (OSError, IndexError):
        pass
    return env


def fmt_rss(kb_list):
    return " / ".join(f"{kb / 1024:.0f}" for kb in kb_list)


def main(argv):
    args = parse_args(argv)
    os.environ.setdefault("OPENBLAS_CORETYPE", "Haswell")  # not used by tokenize; recorded
    os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    if not os.path.exists(TIME):
        raise SystemExit(f"{TIME} is missing (GNU time: apt-get install time)")
    scfm = os.path.abspath(os.path.join(args.build, "scfm"))
    os.makedirs(args.workdir, exist_ok=True)
    sides = args.sides.split(",")
    for s in sides:
        if s != "python" and parse_side(s)[0] == "base" and not args.baseline:
            raise SystemExit(f"side {s} needs --baseline")

    inp = args.input or os.path.join(args.workdir, f"atlas_{args.cells}x{args.genes}_s{args.seed}.h5ad")
    sim_s = None
    if not os.path.exists(inp):
        cmd = [scfm, "simulate", "--cells", str(args.cells), "--genes", str(args.genes), "--types", "8",
               "--batches", "2", "--seed", str(args.seed), "-o", inp, "--quiet"]
        log("simulating: " + " ".join(cmd))
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        sim_s = time.perf_counter() - t0
    import h5py

    with h5py.File(inp, "r") as f:
        n_cells = int(f["X"].attrs["shape"][0]) if "shape" in f["X"].attrs else len(f["obs/_index"])
        n_genes = int(f["X"].attrs["shape"][1]) if "shape" in f["X"].attrs else len(f["var/_index"])
        nnz = int(f["X/data"].shape[0])
    size = os.path.getsize(inp)
    log(f"input {inp}: {n_cells} cells x {n_genes} genes, {nnz} non-zeros, {size / 1e9:.2f} GB")
    subprocess.run(f"cat '{inp}' > /dev/null", shell=True, check=True)  # into the page cache

    vocab = os.path.join(args.workdir, "vocab")
    t0 = time.perf_counter()
    subprocess.run([scfm, "vocab", inp, "-o", vocab, "--force", "--quiet"], check=True)
    vocab_s = time.perf_counter() - t0

    records, verified = [], None
    for rnd in range(args.rounds):
        order = sides[rnd % len(sides):] + sides[:rnd % len(sides)]
        if rnd % 2:
            order = order[::-1]
        for side in order:
            rec = run_side(side, args, scfm, vocab, inp)
            rec["round"] = rnd + 1
            records.append(rec)
            log(f"round {rnd + 1} {side}: {rec['wall_s']:.2f} s, {n_cells / rec['wall_s']:.0f} cells/s, "
                f"peak RSS {fmt_rss(rec['max_rss_kb'])} MiB (load {rec['load_before']:.2f})")
        if rnd == 0 and args.verify:
            verified = verify([r for r in records if r["round"] == 1], inp)
            if not verified:
                raise SystemExit("verify: outputs differ")

    by_side = {s: [r for r in records if r["side"] == s] for s in sides}
    med = {s: statistics.median(r["wall_s"] for r in rs) for s, rs in by_side.items()}
    print(f"Input: {n_cells} cells x {n_genes} genes, {nnz} non-zeros ({nnz / n_cells:.0f} per cell), "
          f"{size / 1e9:.2f} GB; {args.rounds} rounds\n")
    print("| side | median wall s | cells/s | vs Python | per-round ratios | per-round wall s | "
          "CPU s (user + sys; busiest process), median | vs Python (CPU) | CPU s, all processes, median | "
          "peak RSS per process, MiB (median over rounds) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    py = by_side.get("python")
    cpu = {s: [[u + y for u, y in zip(r["user_s"], r["sys_s"])] for r in rs] for s, rs in by_side.items()}
    cpu_busiest = {s: statistics.median(max(c) for c in cs) for s, cs in cpu.items()}
    for s, rs in by_side.items():
        ratio = per_round = cpu_ratio = "-"
        if py and s != "python":
            ratio = f"**{med['python'] / med[s]:.1f}x**"
            per_round = " ".join(f"{p['wall_s'] / r['wall_s']:.1f}" for r, p in zip(rs, py))
            cpu_ratio = f"{cpu_busiest['python'] / cpu_busiest[s]:.1f}x"
        ranks = rs[0]["ranks"]
        rss = [statistics.median(r["max_rss_kb"][k] for r in rs) for k in range(ranks)]
        if s == "python":
            name = "Python (anndata + numpy)"
        else:
            kind, n, threads = parse_side(s)
            name = (f"{'scfm' if kind == 'scfm' else 'baseline scfm'}, {n} rank{'s' if n > 1 else ''}, "
                    f"{threads} thread{'s' if threads > 1 else ''}{' each' if n > 1 else ''}")
        walls = " ".join(f"{r['wall_s']:.2f}" for r in rs)
        print(f"| {name} | {med[s]:.2f} | {n_cells / med[s]:.0f} | {ratio} | {per_round} | {walls} | "
              f"{cpu_busiest[s]:.2f} | {cpu_ratio} | {statistics.median(sum(c) for c in cpu[s]):.2f} | "
              f"{fmt_rss(rss)} |")
    env = environment(args, scfm)
    print("\nEnvironment: " + json.dumps(env))
    if verified is not None:
        print(f"Verified: {'identical tokens, offsets, cell ids and obs codes' if verified else 'DIFFERENT'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"input": inp, "cells": n_cells, "genes": n_genes, "nnz": nnz, "bytes": size,
                       "simulate_s": sim_s, "vocab_s": vocab_s, "verified": verified, "environment": env,
                       "runs": records}, f, indent=1)
    if not args.keep:
        for s in sides:
            rec = by_side[s][0]
            if os.path.isdir(rec["output"]):
                shutil.rmtree(rec["output"])
            elif os.path.exists(rec["output"]):
                os.remove(rec["output"])
    if args.cleanup and not args.input:
        os.remove(inp)


if __name__ == "__main__":
    main(sys.argv[1:])
