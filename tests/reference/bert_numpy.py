#!/usr/bin/env python3
"""An independent BERT forward in numpy, to check `scfm export`:

  bert_numpy.py HF_DIR CELLS.txt SCFM_OUT.safetensors [--vocab VOCAB_DIR] [--transformers]

reads HF_DIR's config.json and model.safetensors (parsed here: the
safetensors package may be absent), runs BertForMaskedLM's encoder and MLM
head in float64 on the cells of CELLS.txt (one cell per line, token ids of
HF_DIR's dictionary), and compares the final hidden states and logits with
scfm's (tests/tools/model_outputs): exit 1 when any differs by more than
1e-4. --vocab maps HF_DIR's token_dictionary.json onto an scfm vocab.tsv whose
token order differs (an imported foreign dictionary): SCFM_OUT's cells and
logit columns are then in scfm's ids. --transformers also loads HF_DIR with
transformers.BertForMaskedLM and BertModel and checks their loading reports
and outputs; without torch and transformers that part prints SKIP."""
import argparse
import json
import math
import pathlib
import struct
import sys

import numpy as np

TOLERANCE = 1e-4
DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32, "F16": np.float16}


def read_safetensors(path):
    data = pathlib.Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        begin, end = t["data_offsets"]
        raw = body[begin:end]
        if t["dtype"] == "BF16":
            values = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            values = np.frombuffer(raw, np.dtype(DTYPES[t["dtype"]]).newbyteorder("<"))
        out[name] = values.reshape(t["shape"]).astype(np.float64 if values.dtype.kind == "f" else values.dtype)
    return out


def layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def activation(name, x):
    if name == "gelu":
        erf = np.vectorize(math.erf)
        return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))
    assert name == "relu", name
    return np.maximum(x, 0.0)


def forward(cfg, w, tokens):
    """BertForMaskedLM on one cell (one segment, no padding): hidden [L, C], logits [L, V]."""
    eps, act, heads = cfg["layer_norm_eps"], cfg["hidden_act"], cfg["num_attention_heads"]
    L = len(tokens)
    x = w["bert.embeddings.word_embeddings.weight"][tokens]
    x = x + w["bert.embeddings.token_type_embeddings.weight"][0]
    x = x + w["bert.embeddings.position_embeddings.weight"][:L]
    x = layer_norm(x, w["bert.embeddings.LayerNorm.weight"], w["bert.embeddings.LayerNorm.bias"], eps)
    C = x.shape[1]
    d = C // heads
    for layer in range(cfg["num_hidden_layers"]):
        p = f"bert.encoder.layer.{layer}."
        lin = lambda v, name: v @ w[p + name + ".weight"].T + w[p + name + ".bias"]
        q, k, v = (lin(x, f"attention.self.{n}").reshape(L, heads, d).transpose(1, 0, 2) for n in ("query", "key", "value"))
        s = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        s = np.exp(s - s.max(-1, keepdims=True))
        ctx = ((s / s.sum(-1, keepdims=True)) @ v).transpose(1, 0, 2).reshape(L, C)
        x = layer_norm(x + lin(ctx, "attention.output.dense"), w[p + "attention.output.LayerNorm.weight"],
                       w[p + "attention.output.LayerNorm.bias"], eps)
        f = activation(act, lin(x, "intermediate.dense"))
        x = layer_norm(x + lin(f, "output.dense"), w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
    t = activation(act, x @ w["cls.predictions.transform.dense.weight"].T + w["cls.predictions.transform.dense.bias"])
    t = layer_norm(t, w["cls.predictions.transform.LayerNorm.weight"], w["cls.predictions.transform.LayerNorm.bias"], eps)
    return x, t @ w["bert.embeddings.word_embeddings.weight"].T + w["cls.predictions.bias"]


def scfm_ids(hf_dir, vocab_dir):
    """to_scfm[hf id] = scfm token, by name through token_dictionary.json and vocab.tsv."""
    tokens = json.loads((pathlib.Path(hf_dir) / "token_dictionary.json").read_text())
    names = {}
    for line in (pathlib.Path(vocab_dir) / "vocab.tsv").read_text().splitlines():
        if line.startswith("# special"):
            for item in line.split()[2:]:
                name, token = item.split("=")
                names[name] = int(token)
        elif not line.startswith("#"):
            fields = line.split("\t")
            names[fields[1]] = int(fields[0])
    to_scfm = np.zeros(len(tokens), np.int64)
    for name, hf in tokens.items():
        to_scfm[hf] = names[name]
    return to_scfm


def compare(label, got, want):
    diff = float(np.abs(got - want).max())
    print(f"{label}: largest difference {diff:.3g} (scale {float(np.abs(want).max()):.3g})")
    return diff <= TOLERANCE


def check_transformers(hf_dir, cells, hidden, logits):
    try:
        import torch
        import transformers
    except ImportError:
        print("transformers: SKIP (torch or transformers not installed)")
        return True
    transformers.logging.set_verbosity_error()
    ok = True
    mlm, info = transformers.BertForMaskedLM.from_pretrained(hf_dir, output_loading_info=True)
    reported = {k: sorted(v) for k, v in info.items() if v}
    print(f"transformers {transformers.__version__}: BertForMaskedLM loading report {reported or 'clean'}")
    ok &= not reported
    base, info = transformers.BertModel.from_pretrained(hf_dir, add_pooling_layer=False, output_loading_info=True)
    head = {"cls.predictions.bias", "cls.predictions.transform.dense.weight", "cls.predictions.transform.dense.bias",
            "cls.predictions.transform.LayerNorm.weight", "cls.predictions.transform.LayerNorm.bias"}
    # BertModel has no MLM head: those five, and only those, are unused.
    extra = {k: sorted(v) for k, v in info.items() if v and not (k == "unexpected_keys" and set(v) == head)}
    print(f"BertModel: missing {sorted(info['missing_keys'])}, unused {sorted(info['unexpected_keys'])}")
    ok &= not extra
    mlm.eval()
    base.eval()
    with torch.no_grad():
        for c, (tokens, h, z) in enumerate(zip(cells, hidden, logits)):
            ids = torch.tensor([tokens])
            out = mlm(input_ids=ids, output_hidden_states=True)
            ok &= compare(f"transformers cell {c} hidden", out.hidden_states[-1][0].double().numpy(), h)
            ok &= compare(f"transformers cell {c} logits", out.logits[0].double().numpy(), z)
            ok &= compare(f"BertModel cell {c} hidden", base(input_ids=ids).last_hidden_state[0].double().numpy(), h)
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("hf_dir")
    ap.add_argument("cells")
    ap.add_argument("scfm_out")
    ap.add_argument("--vocab")
    ap.add_argument("--transformers", action="store_true")
    a = ap.parse_args()
    cfg = json.loads((pathlib.Path(a.hf_dir) / "config.json").read_text())
    w = read_safetensors(pathlib.Path(a.hf_dir) / "model.safetensors")
    scfm = read_safetensors(a.scfm_out)
    cells = [[int(t) for t in line.split()] for line in pathlib.Path(a.cells).read_text().splitlines() if line.strip()]
    to_scfm = scfm_ids(a.hf_dir, a.vocab) if a.vocab else np.arange(cfg["vocab_size"])
    offsets = scfm["cell_offsets"]
    assert len(offsets) == len(cells) + 1, "the cells files differ"
    ok = True
    hidden, logits = [], []
    for c, tokens in enumerate(cells):
        h, z = forward(cfg, w, np.array(tokens))
        sh = scfm["hidden"][offsets[c]:offsets[c + 1]]
        sz = scfm["logits"][offsets[c]:offsets[c + 1]][:, to_scfm]  # columns back in HF order
        ok &= compare(f"numpy cell {c} hidden", sh, h)
        ok &= compare(f"numpy cell {c} logits", sz, z)
        hidden.append(sh)
        logits.append(sz)
    if a.transformers:
        ok &= check_transformers(a.hf_dir, cells, hidden, logits)
    print("bert_numpy: " + ("ok" if ok else "FAIL"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
