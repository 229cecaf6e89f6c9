#!/usr/bin/env python3
"""Data-parallel training on this machine: weak scaling from 1 to 2 ranks,
the share of the gradient all-reduce hidden behind backward, and the
all-reduce bandwidth against a plain MPI_Allreduce of the same size.

    OPENBLAS_CORETYPE=Haswell python3 bench/dist_scaling.py --build build [--rounds 3]

Weak scaling: `scfm train` at np=1 and np=2, one OpenMP thread per rank, the
same micro-batch per rank (geneformer-v1-6L shapes, cells of --cell-len
tokens), alternating np=1 and np=2 in every round; a run's step time is the
median of its per-step wall times (from metrics.jsonl, warm-up steps
dropped); efficiency = (tokens/s per rank at np=2) / (tokens/s at np=1).
Hidden share: 1 - (median wait for the gradient reduction after backward,
reduce_wait_s of the np=2 run) / (median time of a blocking MPI_Allreduce of all gradients,
from bench_allreduce in the same round). Bandwidth: bench_allreduce's plain
MPI_Allreduce and bucketed scfm_comm_isum_f32 (training's path) of the same
buffer. Medians over the rounds."""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile


def run(cmd, env):
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{out.stdout}\n{out.stderr}")
    return out.stdout


def train(args, env, work, np_, tag):
    ck = os.path.join(work, f"ck_{tag}")
    shutil.rmtree(ck, ignore_errors=True)
    cmd = ([] if np_ == 1 else ["mpirun", "--oversubscribe", "--bind-to", "core", "-np", str(np_)]) + [
        os.path.join(args.build, "scfm"), "train", os.path.join(args.source, "configs/geneformer-v1-6L.cfg"),
        "--set", f"data.shards={work}/tokens", "--set", "model.vocab_size=25426",
        "--set", f"model.max_len={args.cell_len}", "--set", f"train.micro_batch_tokens={args.cells * args.cell_len}",
        "--set", f"train.steps={args.steps}", "--set", "train.warmup_steps=1", "--set", f"checkpoint.dir={ck}",
        "--set", "checkpoint.every=0", "--set", "train.log_every_seconds=0", "--quiet"]
    run(cmd, env)
    rows = [json.loads(l) for l in open(os.path.join(ck, "geneformer-v1-6L", "metrics.jsonl"))]
    times = [b["elapsed_s"] - a["elapsed_s"] for a, b in zip(rows, rows[1:])][args.warmup:]
    step_s = statistics.median(times)
    tokens = statistics.median(r["tokens"] for r in rows)
    comm_s = statistics.median(r["reduce_wait_s"] for r in rows[args.warmup + 1:])
    shutil.rmtree(ck, ignore_errors=True)
    return {"step_s": step_s, "tokens_per_s_per_rank": tokens / step_s / np_, "comm_s": comm_s}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("--source", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--cells", type=int, default=2, help="cells per micro-batch per rank")
    ap.add_argument("--cell-len", type=int, default=512)
    ap.add_argument("--json")
    args = ap.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    env.setdefault("OPENBLAS_CORETYPE", "Haswell")
    work = tempfile.mkdtemp(prefix="scfm-dist-")
    run([os.path.join(args.build, "tests", "make_tokens"), f"{work}/tokens", "4000", str(2 * args.cell_len), "6", "1",
         str(args.cell_len), str(args.cell_len)], env)
    rounds = []
    for r in range(args.rounds):
        one = train(args, env, work, 1, "np1")
        two = train(args, env, work, 2, "np2")
        ar = json.loads(run(["mpirun", "--oversubscribe", "--bind-to", "core", "-np", "2",
                             os.path.join(args.build, "bench", "bench_allreduce"),
                             os.path.join(args.source, "configs/geneformer-v1-6L.cfg"),
                             "--set", "model.vocab_size=25426", "--set", f"model.max_len={args.cell_len}",
                             "--reps", "10"], env).strip().splitlines()[-1])
        row = {"np1": one, "np2": two, "allreduce": ar,
               "efficiency": two["tokens_per_s_per_rank"] / one["tokens_per_s_per_rank"],
               "hidden_share": max(0.0, 1.0 - two["comm_s"] / ar["plain_s"])}
        rounds.append(row)
        print(f"round {r + 1}: np1 {one['tokens_per_s_per_rank']:.0f} tok/s, np2 {two['tokens_per_s_per_rank']:.0f} "
              f"tok/s/rank (efficiency {row['efficiency']:.3f}), wait {two['comm_s'] * 1e3:.1f} ms vs all-reduce "
              f"{ar['plain_s'] * 1e3:.1f} ms (hidden {row['hidden_share']:.2f}), bandwidth plain "
              f"{ar['plain_GBps']:.2f} GB/s, buckets {ar['buckets_GBps']:.2f} GB/s", flush=True)
    med = lambda f: statistics.median(f(x) for x in rounds)
    summary = {
        "cells_per_rank_step": args.cells, "cell_len": args.cell_len, "rounds": args.rounds,
        "np1_tokens_per_s": med(lambda x: x["np1"]["tokens_per_s_per_rank"]),
        "np2_tokens_per_s_per_rank": med(lambda x: x["np2"]["tokens_per_s_per_rank"]),
        "weak_scaling_efficiency": med(lambda x: x["efficiency"]),
        "np2_comm_wait_s": med(lambda x: x["np2"]["comm_s"]),
        "allreduce_plain_s": med(lambda x: x["allreduce"]["plain_s"]),
        "hidden_share": med(lambda x: x["hidden_share"]),
        "allreduce_plain_GBps": med(lambda x: x["allreduce"]["plain_GBps"]),
        "allreduce_buckets_GBps": med(lambda x: x["allreduce"]["buckets_GBps"]),
        "buckets_over_plain": med(lambda x: x["allreduce"]["buckets_over_plain_bandwidth"]),
        "params": rounds[0]["allreduce"]["params"],
    }
    print(json.dumps(summary, indent=1))
    if args.json:
        json.dump({"summary": summary, "rounds": rounds}, open(args.json, "w"), indent=1)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
