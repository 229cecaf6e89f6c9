#!/usr/bin/env bash
# scfm export / import (docs/export.md):
#  1. a trained model's export matches an independent numpy BERT on the same
#     cells (hidden states and logits within 1e-4), and transformers'
#     BertForMaskedLM and BertModel when torch is installed (SKIP otherwise);
#  2. export -> import -> export gives back the same files and tensors, also
#     for a model without position embeddings;
#  3. a Geneformer-V1-shaped BERT made by transformers (the committed BF16
#     fixture, and a fresh F32 one when torch is there) imports and computes
#     what it computed in BERT, its dictionary renumbered;
#  4. bad input fails with a clear message and leaves nothing behind.
#   usage: export.sh SCFM SOURCE_DIR WORK_DIR
set -euo pipefail
scfm=$1 src=$2 work=$3
tools=$(dirname "$scfm")/tests
ref=$src/tests/reference
rm -rf "$work" && mkdir -p "$work" && cd "$work"
source "$src/tests/cli/lib/checks.sh"

# Cells of distinct tokens in [first, vocab), the first starting with first-1
# (<cls>), one of the longest length the model takes.
make_cells() { # OUT VOCAB FIRST MAX_LEN
    python3 - "$@" <<'PY'
import random, sys
out, vocab, first, max_len = sys.argv[1], *map(int, sys.argv[2:])
random.seed(5)
lengths = [min(max_len, vocab - first), 7, 1]
cells = [random.sample(range(first, vocab), n) for n in lengths]
open(out, "w").write("\n".join(" ".join(map(str, c)) for c in cells) + "\n")
PY
}

"$scfm" simulate --cells 300 --genes 120 --types 3 --batches 1 --seed 3 -o atlas.h5ad --quiet
"$scfm" vocab atlas.h5ad -o vocab --special cls --quiet
"$scfm" tokenize --mode rank --vocab vocab atlas.h5ad -o shards --max-length 48 --quiet
"$scfm" train "$src/configs/tiny.cfg" --set data.shards=shards --set data.vocab=vocab --set checkpoint.dir=ck \
    --set train.steps=30 --set train.warmup_steps=3 --set model.max_len=48 --quiet

echo "== 1. export matches numpy (and transformers)"
"$scfm" export ck/tiny --format hf -o hf
for f in config.json model.safetensors token_dictionary.json gene_median_dictionary.json gene_name_id_dict.json vocab.tsv; do
    [[ -s hf/$f ]] || fail "hf/$f missing"
done
[[ ! -e hf.tmp ]] || fail "hf.tmp left behind"
grep -q '"architectures": \["BertForMaskedLM"\]' hf/config.json || fail "config.json names no BertForMaskedLM"
make_cells cells.txt 123 3 48
"$tools/model_outputs" ck/tiny cells.txt scfm_out.safetensors
python3 "$ref/bert_numpy.py" hf cells.txt scfm_out.safetensors --transformers

echo "== 2. export -> import -> export is the identity"
"$scfm" import hf -o imported --quiet
"$scfm" export imported --format hf -o hf2 --quiet
for f in config.json model.safetensors token_dictionary.json gene_median_dictionary.json gene_name_id_dict.json vocab.tsv; do
    cmp hf/$f hf2/$f || fail "$f differs after import and export"
done
"$tools/compare_weights" ck/tiny/step_0000030/model.safetensors imported/model.safetensors 0
model_section() { sed -n '/^model = {/,/^};/p' "$1"; }
diff <(model_section ck/tiny/step_0000030/config.cfg | grep -v vocab_size) <(model_section imported/config.cfg | grep -v vocab_size) ||
    fail "the model section changed"
grep -q 'vocab_size = 123;' imported/config.cfg || fail "imported config.cfg lacks the vocabulary size"
cmp vocab/vocab.tsv imported/vocab.tsv || fail "the vocabulary changed"

# Without position embeddings: exported as zeros, read back as none.
"$tools/make_tokens" tokens 200 60 >/dev/null
"$scfm" train "$src/configs/tiny.cfg" --set data.shards=tokens --set data.vocab= --set checkpoint.dir=ck_nopos \
    --set train.steps=5 --set train.warmup_steps=1 --set model.position=none --set model.activation=relu --quiet
"$scfm" export ck_nopos/tiny --format hf -o hf_nopos --quiet
grep -q '"position": "none"' hf_nopos/config.json || fail "config.json does not say position none"
[[ ! -e hf_nopos/token_dictionary.json ]] || fail "a dictionary without a vocabulary"
make_cells cells_nopos.txt 62 2 60
"$tools/model_outputs" ck_nopos/tiny cells_nopos.txt nopos_out.safetensors
python3 "$ref/bert_numpy.py" hf_nopos cells_nopos.txt nopos_out.safetensors --transformers
"$scfm" import hf_nopos -o imported_nopos --quiet
grep -q 'position = "none";' imported_nopos/config.cfg || fail "position none did not come back"
"$tools/compare_weights" ck_nopos/tiny/step_0000005/model.safetensors imported_nopos/model.safetensors 0

echo "== 3. a BERT made by transformers imports"
check_foreign() { # HF_DIR NAME [--transformers]
    local dir=$1 name=$2
    shift 2
    "$scfm" import "$dir" -o "$name"
    python3 - "$ref" "$dir" "$name" <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
import random
from bert_numpy import scfm_ids
to_scfm = scfm_ids(sys.argv[2], sys.argv[3])
random.seed(9)
cells = [random.sample(range(2, 14), 12), random.sample(range(0, 14), 5), [1, 4]]  # HF ids, specials included
open(f"{sys.argv[3]}_cells_hf.txt", "w").write("\n".join(" ".join(map(str, c)) for c in cells) + "\n")
open(f"{sys.argv[3]}_cells.txt", "w").write("\n".join(" ".join(str(to_scfm[t]) for t in c) for c in cells) + "\n")
PY
    "$tools/model_outputs" "$name" "${name}_cells.txt" "${name}_out.safetensors"
    python3 "$ref/bert_numpy.py" "$dir" "${name}_cells_hf.txt" "${name}_out.safetensors" --vocab "$name" "$@"
}
check_foreign "$src/tests/fixtures/hf_bert_tiny" geneformer_bf16
if python3 -c 'import torch, transformers' 2>/dev/null; then
    python3 "$ref/make_hf_bert.py" hf_made --seed 11 >/dev/null 2>&1
    check_foreign hf_made geneformer_f32 --transformers
else
    echo "SKIP: a BERT made by transformers now (torch or transformers not installed); the committed fixture was checked"
fi

echo "== 4. bad input"
before=$(ls -l --time-style=+%s.%N hf | md5sum)
expect_fail any "exists" "$scfm" export ck/tiny --format hf -o hf
[[ $(ls -l --time-style=+%s.%N hf | md5sum) == "$before" ]] || fail "the existing export was touched"
"$scfm" export ck/tiny --format hf -o hf --force --quiet
cmp hf/model.safetensors hf2/model.safetensors || fail "--force did not write the same export"

"$scfm" train "$src/configs/tiny.cfg" --set data.shards=tokens --set data.vocab= --set checkpoint.dir=ck_pre \
    --set train.steps=2 --set train.warmup_steps=1 --set model.norm=pre --quiet
expect_fail any "final_layer_norm" "$scfm" export ck_pre/tiny --format hf -o hf_pre
[[ ! -e hf_pre && ! -e hf_pre.tmp ]] || fail "a refused export left files"

bad_copy() { rm -rf "$1" && cp -r hf "$1"; }
bad_copy bad_type && sed -i 's/"model_type": "bert"/"model_type": "gpt2"/' bad_type/config.json
expect_fail any 'bad_type/config.json: model_type is not "bert"' "$scfm" import bad_type -o out_type
bad_copy bad_arch && sed -i 's/"BertForMaskedLM"/"GPT2LMHeadModel"/' bad_arch/config.json
expect_fail any "architectures may only name BertForMaskedLM" "$scfm" import bad_arch -o out_arch
bad_copy bad_size && sed -i 's/"hidden_size": 64/"hidden_size": 32/' bad_size/config.json
expect_fail any "has shape \[123, 64\]; config.json's sizes make it \[123, 32\]" \
    "$scfm" import bad_size -o out_size
bad_copy bad_json && sed -i 's/"num_hidden_layers": 2,/"num_hidden_layers": 2/' bad_json/config.json
expect_fail any "bad_json/config.json: invalid JSON" "$scfm" import bad_json -o out_json
bad_copy bad_missing
python3 - bad_missing/model.safetensors <<'PY'
import json, struct, sys
path = sys.argv[1]
data = open(path, "rb").read()
(n,) = struct.unpack("<Q", data[:8])
header, body = json.loads(data[8:8 + n]), data[8 + n:]
header.pop("bert.encoder.layer.1.intermediate.dense.bias")
out, offset = {}, 0
parts = []
for name, t in sorted(((k, v) for k, v in header.items() if k != "__metadata__"), key=lambda kv: kv[1]["data_offsets"][0]):
    b, e = t["data_offsets"]
    parts.append(body[b:e])
    out[name] = dict(t, data_offsets=[offset, offset + e - b])
    offset += e - b
out["__metadata__"] = header["__metadata__"]
text = json.dumps(out).encode()
open(path, "wb").write(struct.pack("<Q", len(text)) + text + b"".join(parts))
PY
expect_fail any "tensor bert.encoder.layer.1.intermediate.dense.bias is missing" "$scfm" import bad_missing -o out_missing
for d in out_type out_arch out_size out_json out_missing; do
    [[ ! -e $d && ! -e $d.tmp ]] || fail "a refused import left $d behind"
done
before=$(ls -l --time-style=+%s.%N imported | md5sum)
expect_fail any "exists" "$scfm" import hf -o imported
[[ $(ls -l --time-style=+%s.%N imported | md5sum) == "$before" ]] || fail "the existing checkpoint was touched"
"$scfm" import hf -o imported --force --quiet
"$tools/compare_weights" ck/tiny/step_0000030/model.safetensors imported/model.safetensors 0
echo "export: ok"
