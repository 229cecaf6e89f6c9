#!/usr/bin/env python3
r"""Training tokens/s of scfm against PyTorch doing the same work, side by side.

    OPENBLAS_CORETYPE=Haswell python3 bench/train_vs_pytorch.py \
        --build build-bench [--rounds 3] [--threads 2] [--json out.json]
    python3 bench/train_vs_pytorch.py --build build --cuda [--rounds 3]

Builds nothing: runs BUILD/bench/bench_train (scfm) and bench/pytorch_train.py
(transformers.BertForMaskedLM, same configuration, threads, cells and batch)
for each benchmark case, in --rounds rounds. Inside a round the two
alternate, and the order flips every round, so a burst of noise on a shared
machine hits both. Each run reports the median step time of its timed steps;
the table shows the median over rounds, their ratio (and the median of the
per-round ratios), scfm's model GFLOP/s and the OpenBLAS sgemm GFLOP/s that
bench_train measured in the same process (square 2048^3, and the T x C x C
shape of the attention projections).

Cases (--cases): tiny (8 cells x 256 tokens; tiny's max_len is 256),
contrastive (configs/contrastive.cfg, 32 cells x 128 tokens as two views each),
6L = geneformer-v1-6L (2 cells x 2048 tokens) and 6L-noattndrop (the same
with model.attention_dropout=0, see CASES), vocabulary 25426 (Geneformer V1).
OMP_NUM_THREADS is set to --threads for both; OPENBLAS_CORETYPE is kept from
the environment, or set to Haswell when unset (these machines need it).

--cuda compares on the GPU (docs/cuda.md): bench_train --cuda (bf16 Linear
layers, fp32 master weights) against pytorch_train.py --device cuda --bf16
(BertForMaskedLM under bf16 autocast, SDPA attention, fused AdamW), cases
6L-gpu (geneformer-v1-6L, 12 cells x 2048 tokens, its configured batch) and
12L-512-gpu (12 layers, hidden 512, 8 heads, FFN 2048, same batch). The
table adds model FLOP utilisation against torch.mm's bf16 rate measured in
the PyTorch process (8192^3) and against the GPU's nominal dense bf16 peak
(NOMINAL_BF16_TFLOPS, by device name).
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

from benchutil import cpu_model

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# name, config, cells per batch, cell length, warm-up steps, timed steps,
# --set overrides. The last case is the Geneformer configuration without
# attention-probability dropout: PyTorch's scaled_dot_product_attention
# takes its fused CPU kernel only then (with dropout it falls back to the
# unfused math path), so this row compares fused attention with fused
# attention.
CASES = [
    ("tiny", "configs/tiny.cfg", 8, 256, 5, 20, []),
    ("geneformer-v1-6L", "configs/geneformer-v1-6L.cfg", 2, 2048, 1, 3, []),
    ("geneformer-v1-6L, attention_dropout=0", "configs/geneformer-v1-6L.cfg", 2, 2048, 1, 3,
     ["model.attention_dropout=0"]),
    # masked genes + contrastive (configs/contrastive.cfg): 32 cells of 128
    # genes become 64 views of about 64 tokens
    ("contrastive", "configs/contrastive.cfg", 32, 128, 5, 20, []),
    ("geneformer-v1-6L (GPU)", "configs/geneformer-v1-6L.cfg", 12, 2048, 2, 5, []),
    ("12 layers, hidden 512 (GPU)", "configs/geneformer-v1-6L.cfg", 12, 2048, 2, 5,
     ["model.layers=12", "model.hidden=512", "model.heads=8", "model.ffn=2048"]),
]
CASE_KEYS = {"tiny": 0, "6L": 1, "6L-noattndrop": 2, "contrastive": 3, "6L-gpu": 4, "12L-512-gpu": 5}
CPU_CASES, GPU_CASES = "tiny,6L,6L-noattndrop,contrastive", "6L-gpu,12L-512-gpu"
# Dense bf16 tensor-core peaks from the vendor's data sheets, TFLOP/s.
NOMINAL_BF16_TFLOPS = [("H100 PCIe", 756.0), ("H100", 989.4), ("H200", 989.4), ("A100", 312.0)]


def nominal_peak(device):
    for name, tflops in NOMINAL_BF16_TFLOPS:
        if name in device:
            return tflops
    return None


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default=os.path.join(ROOT, "build-bench"), help="scfm build directory")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--vocab", type=int, default=25426)
    p.add_argument("--cases", help="comma-separated subset of: %s (default: %s; with --cuda: %s)"
                   % (", ".join(CASE_KEYS), CPU_CASES, GPU_CASES))
    p.add_argument("--cuda", action="store_true", help="compare on the GPU (bf16)")
    p.add_argument("--steps", type=int, help="timed steps of every case (default: per case)")
    p.add_argument("--warmup", type=int, help="warm-up steps of every case (default: per case)")
    p.add_argument("--attn", choices=["default", "eager", "sdpa"], default="default",
                   help="PyTorch attention implementation")
    p.add_argument("--also-full-head", action="store_true",
                   help="also time stock BertForMaskedLM (MLM logits at every position)")
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--json", help="write all results to this file")
    a = p.parse_args(argv)
    if a.rounds < 1:
        p.error("--rounds must be >= 1")
    if a.cases is None:
        a.cases = GPU_CASES if a.cuda else CPU_CASES
    if a.cuda and a.attn == "default":
        a.attn = "sdpa"
    return a


def run_json(cmd, env, label):
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        sys.exit("train_vs_pytorch.py: %s failed (exit %d): %s" % (label, proc.returncode, " ".join(cmd)))
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if not lines:
        sys.exit("train_vs_pytorch.py: %s printed no JSON" % label)
    r = json.loads(lines[-1])
    print("  %-26s %10.1f tok/s  step %.3f s  (%.0f s wall)"
          % (label, r["tokens_per_s"], r["step_s"], time.time() - t0), file=sys.stderr, flush=True)
    return r


def main(argv):
    a = parse_args(argv)
    bench = os.path.join(os.path.abspath(a.build), "bench", "bench_train")
    if not os.access(bench, os.X_OK):
        sys.exit("train_vs_pytorch.py: %s not found; build first:\n"
                 "  cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release && cmake --build build-bench -j2"
                 % bench)
    env = os.environ.copy()
    env["OMP_NUM_THREADS"] = str(a.threads)
    if not env.get("OPENBLAS_CORETYPE"):
        env["OPENBLAS_CORETYPE"] = "Haswell"
    wanted = [c.strip() for c in a.cases.split(",") if c.strip()]
    if any(c not in CASE_KEYS for c in wanted):
        sys.exit("train_vs_pytorch.py: unknown case in --cases %s (known: %s)"
                 % (a.cases, ", ".join(CASE_KEYS)))
    cases = [CASES[CASE_KEYS[c]] for c in wanted]

    torch_info = subprocess.run(
        [a.python, "-c", "import torch, transformers; print(torch.__version__, transformers.__version__)"],
        capture_output=True, text=True, env=env).stdout.split()
    environment = {
        "cpu": cpu_model(), "logical_cpus": os.cpu_count(), "threads": a.threads,
        "OMP_NUM_THREADS": env["OMP_NUM_THREADS"], "OPENBLAS_CORETYPE": env["OPENBLAS_CORETYPE"],
        "torch": torch_info[0] if torch_info else "?",
        "transformers": torch_info[1] if len(torch_info) > 1 else "?",
        "python": platform.python_version(), "rounds": a.rounds,
    }
    print("environment: " + ", ".join("%s=%s" % kv for kv in environment.items()), file=sys.stderr)

    results = []
    for case, config, cells, length, warmup, steps, sets in cases:
        warmup = a.warmup if a.warmup is not None else warmup
        steps = a.steps if a.steps is not None else steps
        common = [config, "--cells-per-batch", str(cells), "--cell-len", str(length),
                  "--vocab", str(a.vocab), "--steps", str(steps), "--warmup", str(warmup)]
        for kv in sets:
            common += ["--set", kv]
        settings = subprocess.run([bench] + common + ["--print-config"], env=env, check=True,
                                  capture_output=True, text=True, cwd=ROOT).stdout.strip()
        scfm_cmd = [bench] + common + (["--cuda"] if a.cuda else [])
        torch_cmd = [a.python, os.path.join(HERE, "pytorch_train.py")] + common + [
            "--model-json", settings, "--attn", a.attn, "--threads", str(a.threads)] + (
            ["--device", "cuda", "--bf16"] if a.cuda else [])
        runs = {"scfm": [], "pytorch": [], "pytorch_full_head": []}
        print("%s: %d cells x %d tokens, %d warm-up + %d timed steps, %d rounds"
              % (case, cells, length, warmup, steps, a.rounds), file=sys.stderr, flush=True)
        for r in range(a.rounds):
            order = [("scfm", scfm_cmd), ("pytorch", torch_cmd)]
            if a.also_full_head:
                order.append(("pytorch_full_head", torch_cmd + ["--head", "full"]))
            if r % 2:
                order.reverse()
            for name, cmd in order:
                runs[name].append(run_json(cmd, env, "round %d %s" % (r + 1, name)))
        s_tps = statistics.median(x["tokens_per_s"] for x in runs["scfm"])
        p_tps = statistics.median(x["tokens_per_s"] for x in runs["pytorch"])
        row = {
            "case": case, "config": config, "overrides": sets, "cells_per_batch": cells, "cell_len": length,
            "warmup": warmup, "steps": steps, "settings": json.loads(settings),
            "scfm_tokens_per_s": s_tps, "pytorch_tokens_per_s": p_tps, "ratio": s_tps / p_tps,
            "ratio_per_round": [x["tokens_per_s"] / y["tokens_per_s"]
                                for x, y in zip(runs["scfm"], runs["pytorch"])],
            "scfm_gflops": statistics.median(x["model_gflops"] for x in runs["scfm"]),
            "pytorch_gflops": statistics.median(x["model_gflops"] for x in runs["pytorch"]),
            "runs": runs,
        }
        row["median_round_ratio"] = statistics.median(row["ratio_per_round"])
        if not a.cuda:
            row["sgemm_gflops"] = statistics.median(x["sgemm"]["square"]["gflops"] for x in runs["scfm"])
            row["sgemm_linear_gflops"] = statistics.median(x["sgemm"]["linear"]["gflops"] for x in runs["scfm"])
            row["sgemm_linear_shape"] = [runs["scfm"][0]["sgemm"]["linear"][k] for k in "mnk"]
            row["pct_of_sgemm"] = 100.0 * row["scfm_gflops"] / row["sgemm_gflops"]
        for impl in ("scfm", "pytorch"):
            for phase in ("forward_s", "backward_s", "optimizer_s", "step_s"):
                row["%s_%s" % (impl, phase)] = statistics.median(x[phase] for x in runs[impl])
        mm = [x["torch_mm_gflops"] for x in runs["pytorch"] if x.get("torch_mm_gflops")]
        row["torch_mm_gflops"] = statistics.median(mm) if mm else None
        if a.also_full_head:
            row["pytorch_full_head_tokens_per_s"] = statistics.median(
                x["tokens_per_s"] for x in runs["pytorch_full_head"])
        if a.cuda:
            row["device"] = runs["scfm"][0]["device"]
            row["nominal_bf16_tflops"] = nominal_peak(runs["pytorch"][0]["device"])
        results.append(row)

    if a.cuda:
        print_gpu_table(a, environment, results)
    else:
        print_cpu_table(a, env, environment, results)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"environment": environment, "results": results}, f, indent=1)
        print("\nwrote %s" % a.json)


def percent(x, of):
    return "%.1f%%" % (100.0 * x / of) if x and of else "-"


def print_gpu_table(a, environment, results):
    print()
    print("GPU: %s; torch %s, transformers %s (attention %s, bf16 autocast, fused AdamW); %d rounds, median"
          % (results[0]["device"] if results else "?", environment["torch"], environment["transformers"],
             a.attn, a.rounds))
    print()
    header = ["config", "cells x len", "scfm tok/s", "PyTorch tok/s", "ratio", "per-round ratios",
              "scfm TFLOP/s", "PyTorch TFLOP/s", "torch.mm bf16 TFLOP/s", "scfm MFU (of mm / of nominal)",
              "PyTorch MFU (of mm / of nominal)"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for r in results:
        mm = r["torch_mm_gflops"] / 1e3 if r["torch_mm_gflops"] else None
        peak = r["nominal_bf16_tflops"]
        s_tf, p_tf = r["scfm_gflops"] / 1e3, r["pytorch_gflops"] / 1e3
        cells = [r["case"], "%d x %d" % (r["cells_per_batch"], r["cell_len"]),
                 "%.0f" % r["scfm_tokens_per_s"], "%.0f" % r["pytorch_tokens_per_s"], "%.2fx" % r["ratio"],
                 " ".join("%.2f" % x for x in r["ratio_per_round"]), "%.1f" % s_tf, "%.1f" % p_tf,
                 "%.1f" % mm if mm else "-", "%s / %s" % (percent(s_tf, mm), percent(s_tf, peak)),
                 "%s / %s" % (percent(p_tf, mm), percent(p_tf, peak))]
        print("| " + " | ".join(cells) + " |")
    print()
    print("TFLOP/s: model FLOPs per step / median step time, the same count on both sides "
          "(scfm_model_flops: the matrix products and attention's 4 L^2 C per layer and cell, "
          "x3 with backward).")
    print("Step breakdown (median seconds): forward / backward / clip+AdamW")
    for r in results:
        print("  %-38s scfm %.4f / %.4f / %.4f   PyTorch %.4f / %.4f / %.4f"
              % (r["case"], r["scfm_forward_s"], r["scfm_backward_s"], r["scfm_optimizer_s"],
                 r["pytorch_forward_s"], r["pytorch_backward_s"], r["pytorch_optimizer_s"]))


def print_cpu_table(a, env, environment, results):
    env_line = ("CPU: %s (%s logical CPUs); threads %d (OMP_NUM_THREADS=%s, torch.set_num_threads(%d)); "
                "OPENBLAS_CORETYPE=%s (OpenBLAS core %s); torch %s, transformers %s (attention %s); "
                "%d rounds, median" % (
                    environment["cpu"], environment["logical_cpus"], a.threads, env["OMP_NUM_THREADS"],
                    a.threads, env["OPENBLAS_CORETYPE"],
                    results[0]["runs"]["scfm"][0].get("openblas_corename", "?") if results else "?",
                    environment["torch"], environment["transformers"],
                    results[0]["runs"]["pytorch"][0].get("attn_implementation", "?") if results else a.attn,
                    a.rounds))
    print()
    print(env_line)
    print()
    header = ["config", "cells x len", "scfm tok/s", "PyTorch tok/s", "ratio", "per-round ratios",
              "scfm GFLOP/s", "PyTorch GFLOP/s", "sgemm GFLOP/s", "% of sgemm"]
    if a.also_full_head:
        header.insert(4, "stock HF head tok/s")
    rows = []
    for r in results:
        cells = [r["case"], "%d x %d" % (r["cells_per_batch"], r["cell_len"]),
                 "%.0f" % r["scfm_tokens_per_s"], "%.0f" % r["pytorch_tokens_per_s"],
                 "%.2fx" % r["ratio"], " ".join("%.2f" % x for x in r["ratio_per_round"]),
                 "%.1f" % r["scfm_gflops"], "%.1f" % r["pytorch_gflops"], "%.1f" % r["sgemm_gflops"],
                 "%.0f%%" % r["pct_of_sgemm"]]
        if a.also_full_head:
            cells.insert(4, "%.0f" % r["pytorch_full_head_tokens_per_s"])
        rows.append(cells)
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for cells in rows:
        print("| " + " | ".join(cells) + " |")
    print()
    print("sgemm GFLOP/s: OpenBLAS cblas_sgemm 2048x2048x2048 in the bench_train process; "
          "% of sgemm = scfm GFLOP/s / that.")
    print("Step breakdown (median seconds): forward / backward / clip+AdamW; matrix-product "
          "references (GFLOP/s)")
    for r in results:
        print("  %-38s scfm %.3f / %.3f / %.3f   PyTorch %.3f / %.3f / %.3f   "
              "OpenBLAS %dx%dx%d %.1f, torch.mm 2048^3 %s"
              % (r["case"], r["scfm_forward_s"], r["scfm_backward_s"], r["scfm_optimizer_s"],
                 r["pytorch_forward_s"], r["pytorch_backward_s"], r["pytorch_optimizer_s"],
                 *r["sgemm_linear_shape"], r["sgemm_linear_gflops"],
                 "%.1f" % r["torch_mm_gflops"] if r["torch_mm_gflops"] else "-"))


if __name__ == "__main__":
    main(sys.argv[1:])
