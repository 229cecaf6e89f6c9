#!/usr/bin/env python3
"""Writes a tiny Geneformer-V1-shaped Hugging Face model directory, made by
transformers, for `scfm import` to read (tests/cli/export.sh):

  make_hf_bert.py OUT_DIR [--seed N] [--bf16]

config.json and model.safetensors from BertForMaskedLM.save_pretrained (ReLU,
post-LN, absolute positions, two token types, random non-zero biases and
LayerNorms so that every tensor matters), and Geneformer's dictionaries as
JSON: token_dictionary.json (<pad> 0, <mask> 1, genes in shuffled order, so
scfm must renumber them), gene_median_dictionary.json and
gene_name_id_dict.json. tests/fixtures/hf_bert_tiny was made with
`--seed 7 --bf16` (BF16 weights: the widening path); the test makes an F32 one
itself when torch is there. Needs torch and transformers."""
import argparse
import json
import pathlib

import torch
import transformers

GENES, HIDDEN, LAYERS, HEADS, FFN, MAX_POSITIONS = 12, 8, 2, 2, 16, 16


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--bf16", action="store_true")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    g = torch.Generator().manual_seed(a.seed)
    config = transformers.BertConfig(
        vocab_size=GENES + 2, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=FFN, max_position_embeddings=MAX_POSITIONS, hidden_act="relu", type_vocab_size=2,
        hidden_dropout_prob=0.02, attention_probs_dropout_prob=0.02, layer_norm_eps=1e-12, pad_token_id=0)
    model = transformers.BertForMaskedLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name:
                p.copy_((1.0 if name.endswith("LayerNorm.weight") else 0.0) + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
    if a.bf16:
        model = model.to(torch.bfloat16)
    out = pathlib.Path(a.out)
    model.save_pretrained(out, safe_serialization=True)
    genes = [f"ENSG{i:011d}" for i in range(GENES)]
    order = torch.randperm(GENES, generator=g).tolist()
    tokens = {"<pad>": 0, "<mask>": 1}
    tokens.update({genes[k]: 2 + i for i, k in enumerate(order)})
    medians = {gene: round(0.5 + 3.0 * torch.rand(1, generator=g).item(), 6) for gene in genes}
    names = {f"GENE{i}": gene for i, gene in enumerate(genes) if i % 3}
    (out / "token_dictionary.json").write_text(json.dumps(tokens, indent=1) + "\n")
    (out / "gene_median_dictionary.json").write_text(json.dumps(medians, indent=1) + "\n")
    (out / "gene_name_id_dict.json").write_text(json.dumps(names, indent=1) + "\n")


if __name__ == "__main__":
    main()
