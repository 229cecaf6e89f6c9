#!/usr/bin/env python3
"""Writes the whole-model reference fixtures for tests/unit/test_hf_reference.c:

  tests/fixtures/hf_post_ln_gelu.safetensors  transformers.BertForMaskedLM, exact (erf) GELU
  tests/fixtures/hf_post_ln_relu.safetensors  transformers.BertForMaskedLM, ReLU
  tests/fixtures/hf_pre_ln_gelu.safetensors   the pre-LN variant, in torch.nn.functional

Each holds a tiny BERT's random fp32 weights under their Hugging Face names,
one batch of three right-padded cells with masked-LM labels, and the loss,
final hidden states and every parameter gradient, computed in float64 and
stored as float32. See README.md. Needs torch, transformers and safetensors."""
import argparse
import math
import pathlib

import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import save_file

VOCAB, HIDDEN, HEADS, LAYERS, FFN, MAX_LEN = 40, 32, 4, 2, 64, 24
EPS = 1e-12
LENGTHS = (17, 9, 24)
PAD, MASK, FIRST_GENE = 0, 1, 2
SELECT_PROB = 0.2
WEIGHT_STD = 0.2  # large enough that every gradient is well above fp32 noise
NORM_STD = 0.1


def make_batch(seed):
    """Cells of distinct genes (a rank-value encoding never repeats a gene),
    about 20% of positions selected, at least one per cell; selected inputs
    are replaced by <mask> (80%), a random gene (10%) or kept (10%)."""
    g = torch.Generator().manual_seed(seed)
    n = len(LENGTHS)
    ids = torch.full((n, MAX_LEN), PAD, dtype=torch.int64)
    attention = torch.zeros((n, MAX_LEN), dtype=torch.int64)
    labels = torch.full((n, MAX_LEN), -100, dtype=torch.int64)
    kinds = []
    for c, length in enumerate(LENGTHS):
        genes = FIRST_GENE + torch.randperm(VOCAB - FIRST_GENE, generator=g)[:length]
        ids[c, :length] = genes
        attention[c, :length] = 1
        selected = torch.rand(length, generator=g) < SELECT_PROB
        if not selected.any():
            selected[torch.randint(length, (1,), generator=g)] = True
        for p in torch.nonzero(selected).flatten().tolist():
            labels[c, p] = ids[c, p]
            r = torch.rand(1, generator=g).item()
            if r < 0.8:
                ids[c, p] = MASK
                kinds.append("mask")
            elif r < 0.9:
                ids[c, p] = torch.randint(FIRST_GENE, VOCAB, (1,), generator=g).item()
                kinds.append("random")
            else:
                kinds.append("kept")
    assert "mask" in kinds and "random" in kinds, f"seed {seed} corrupts too uniformly: {kinds}"
    return ids, attention, labels


def parameter_shapes(norm):
    """Every parameter, in the order BertForMaskedLM.named_parameters() lists
    them, without token_type_embeddings (scfm has none)."""
    shapes = {
        "bert.embeddings.word_embeddings.weight": (VOCAB, HIDDEN),
        "bert.embeddings.position_embeddings.weight": (MAX_LEN, HIDDEN),
        "bert.embeddings.LayerNorm.weight": (HIDDEN,),
        "bert.embeddings.LayerNorm.bias": (HIDDEN,),
    }
    for layer in range(LAYERS):
        pre = f"bert.encoder.layer.{layer}"
        for part in ("query", "key", "value"):
            shapes[f"{pre}.attention.self.{part}.weight"] = (HIDDEN, HIDDEN)
            shapes[f"{pre}.attention.self.{part}.bias"] = (HIDDEN,)
        shapes[f"{pre}.attention.output.dense.weight"] = (HIDDEN, HIDDEN)
        shapes[f"{pre}.attention.output.dense.bias"] = (HIDDEN,)
        shapes[f"{pre}.attention.output.LayerNorm.weight"] = (HIDDEN,)
        shapes[f"{pre}.attention.output.LayerNorm.bias"] = (HIDDEN,)
        shapes[f"{pre}.intermediate.dense.weight"] = (FFN, HIDDEN)
        shapes[f"{pre}.intermediate.dense.bias"] = (FFN,)
        shapes[f"{pre}.output.dense.weight"] = (HIDDEN, FFN)
        shapes[f"{pre}.output.dense.bias"] = (HIDDEN,)
        shapes[f"{pre}.output.LayerNorm.weight"] = (HIDDEN,)
        shapes[f"{pre}.output.LayerNorm.bias"] = (HIDDEN,)
    if norm == "pre":
        shapes["bert.encoder.final_layer_norm.weight"] = (HIDDEN,)
        shapes["bert.encoder.final_layer_norm.bias"] = (HIDDEN,)
    shapes["cls.predictions.bias"] = (VOCAB,)
    shapes["cls.predictions.transform.dense.weight"] = (HIDDEN, HIDDEN)
    shapes["cls.predictions.transform.dense.bias"] = (HIDDEN,)
    shapes["cls.predictions.transform.LayerNorm.weight"] = (HIDDEN,)
    shapes["cls.predictions.transform.LayerNorm.bias"] = (HIDDEN,)
    return shapes


def make_params(norm, seed):
    """fp32 values (what the C model holds), returned as float64 tensors."""
    g = torch.Generator().manual_seed(seed)
    params = {}
    for name, shape in parameter_shapes(norm).items():
        z = torch.randn(shape, generator=g, dtype=torch.float32)
        if "LayerNorm.weight" in name or "layer_norm.weight" in name:
            v = 1.0 + NORM_STD * z
        elif name.endswith(".bias"):
            v = NORM_STD * z
        else:
            v = WEIGHT_STD * z
        params[name] = v.to(torch.float32).to(torch.float64).requires_grad_(True)
    return params


def functional_bert(p, ids, attention, labels, norm, activation):
    """BERT for masked LM in torch.nn.functional; norm "post" is the Hugging
    Face model, "pre" moves each LayerNorm before its sublayer (LN_a =
    attention.output.LayerNorm, LN_f = output.LayerNorm) and adds
    bert.encoder.final_layer_norm after the last layer. Returns (loss, final
    hidden states)."""
    act = {"gelu": F.gelu, "relu": F.relu}[activation]
    n, length = ids.shape
    head_dim = HIDDEN // HEADS

    def ln(x, name):
        return F.layer_norm(x, (HIDDEN,), p[name + ".weight"], p[name + ".bias"], EPS)

    def linear(x, name):
        return F.linear(x, p[name + ".weight"], p[name + ".bias"])

    # Padded keys get the dtype's minimum added, as in Hugging Face's eager path.
    key_bias = (1.0 - attention.to(torch.float64))[:, None, None, :] * torch.finfo(torch.float64).min

    def self_attention(x, pre):
        def heads(name):
            return linear(x, f"{pre}.attention.self.{name}").view(n, length, HEADS, head_dim).transpose(1, 2)

        q, k, v = heads("query"), heads("key"), heads("value")
        scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim) + key_bias
        context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, length, HIDDEN)
        return linear(context, f"{pre}.attention.output.dense")

    def feed_forward(x, pre):
        return linear(act(linear(x, f"{pre}.intermediate.dense")), f"{pre}.output.dense")

    x = p["bert.embeddings.word_embeddings.weight"][ids] + p["bert.embeddings.position_embeddings.weight"][:length]
    x = ln(x, "bert.embeddings.LayerNorm")
    for layer in range(LAYERS):
        pre = f"bert.encoder.layer.{layer}"
        if norm == "post":
            x = ln(x + self_attention(x, pre), f"{pre}.attention.output.LayerNorm")
            x = ln(x + feed_forward(x, pre), f"{pre}.output.LayerNorm")
        else:
            x = x + self_attention(ln(x, f"{pre}.attention.output.LayerNorm"), pre)
            x = x + feed_forward(ln(x, f"{pre}.output.LayerNorm"), pre)
    if norm == "pre":
        x = ln(x, "bert.encoder.final_layer_norm")
    h = ln(act(linear(x, "cls.predictions.transform.dense")), "cls.predictions.transform.LayerNorm")
    logits = h @ p["bert.embeddings.word_embeddings.weight"].T + p["cls.predictions.bias"]
    loss = F.cross_entropy(logits.reshape(-1, VOCAB), labels.reshape(-1), ignore_index=-100)
    return loss, x


def huggingface_bert(p, ids, attention, labels, activation):
    """BertForMaskedLM in float64 with p's values: (loss, hidden, grads)."""
    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=FFN, hidden_act=activation, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, max_position_embeddings=MAX_LEN, type_vocab_size=1,
        layer_norm_eps=EPS, pad_token_id=PAD, tie_word_embeddings=True, attn_implementation="eager")
    model = transformers.BertForMaskedLM(config).double().eval()
    assert model.config._attn_implementation == "eager"
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    params = dict(model.named_parameters())
    assert set(params) == set(p) | {"bert.embeddings.token_type_embeddings.weight"}, set(params) ^ set(p)
    with torch.no_grad():
        for name, param in params.items():
            # A zero token-type row makes the embedding word + position only.
            param.copy_(p[name] if name in p else torch.zeros_like(param))
    out = model(input_ids=ids, attention_mask=attention, token_type_ids=torch.zeros_like(ids),
                labels=labels, output_hidden_states=True)
    out.loss.backward()
    grads = {name: params[name].grad for name in p}  # word embeddings: input + tied decoder
    return out.loss.detach(), out.hidden_states[-1].detach(), grads


def check_close(what, got, want, floor, tol=1e-10):
    """Relative to the larger of want's largest value and floor: the gradient
    of the key bias is zero in exact arithmetic (softmax ignores a shift
    shared by all keys), so its computed values are rounding noise."""
    err = (got - want).abs().max().item() / max(want.abs().max().item(), floor)
    assert err <= tol, f"functional BERT differs from transformers in {what}: relative error {err:.3g}"


def make_fixture(path, norm, activation, seed):
    ids, attention, labels = make_batch(seed=0)
    p = make_params(norm, seed)
    loss, hidden = functional_bert(p, ids, attention, labels, norm, activation)
    grads = dict(zip(p, torch.autograd.grad(loss, list(p.values()))))
    if norm == "post":
        # The functional model is the one the pre-LN fixture rests on: it must
        # be Hugging Face's BERT exactly when the LayerNorms sit after.
        hf_loss, hf_hidden, hf_grads = huggingface_bert(p, ids, attention, labels, activation)
        assert abs(loss.item() - hf_loss.item()) <= 1e-10, (loss.item(), hf_loss.item())
        real = attention.bool()
        check_close("hidden states", hidden.detach()[real], hf_hidden[real], 0.0)
        scale = max(g.abs().max().item() for g in hf_grads.values())
        for name in p:
            check_close(f"grad of {name}", grads[name], hf_grads[name], 1e-6 * scale)
        loss, hidden, grads = hf_loss, hf_hidden, hf_grads

    tensors = {}
    for name, value in p.items():
        tensors[name] = value.detach().to(torch.float32).contiguous()
    scale = max(g.abs().max().item() for g in grads.values())
    for name, value in grads.items():
        small = value.abs().max().item() < 1e-9 * scale
        assert small == name.endswith("attention.self.key.bias"), f"gradient of {name} is (not) zero"
        tensors["grad." + name] = value.to(torch.float32).contiguous()
    tensors["input.input_ids"] = ids.to(torch.int32)
    tensors["input.attention_mask"] = attention.to(torch.int32)
    tensors["input.labels"] = labels.to(torch.int32)
    tensors["output.loss"] = loss.detach().reshape(1).to(torch.float32)
    tensors["output.hidden"] = hidden.detach().to(torch.float32).contiguous()
    metadata = {
        "vocab_size": str(VOCAB), "hidden": str(HIDDEN), "heads": str(HEADS), "layers": str(LAYERS),
        "ffn": str(FFN), "max_len": str(MAX_LEN), "activation": activation, "norm": norm,
        "layer_norm_eps": repr(EPS), "seed": str(seed),
        "reference": "transformers.BertForMaskedLM" if norm == "post"
        else "functional pre-LN BERT (validated against transformers.BertForMaskedLM in post-LN)",
        "torch": torch.__version__, "transformers": transformers.__version__,
    }
    save_file(tensors, str(path), metadata=metadata)
    print(f"wrote {path} ({path.stat().st_size} bytes): loss {loss.item():.6f}, "
          f"{int((labels != -100).sum())} targets")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=pathlib.Path,
                        default=pathlib.Path(__file__).resolve().parent.parent / "fixtures")
    args = parser.parse_args()
    torch.use_deterministic_algorithms(True)
    for name, norm, activation, seed in (("hf_post_ln_gelu", "post", "gelu", 1),
                                         ("hf_post_ln_relu", "post", "relu", 2),
                                         ("hf_pre_ln_gelu", "pre", "gelu", 3)):
        make_fixture(args.out_dir / f"{name}.safetensors", norm, activation, seed)


if __name__ == "__main__":
    main()
