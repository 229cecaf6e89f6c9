#!/usr/bin/env bash
# scfm train refuses bad configurations with the documented message and exit
# code 2, and the help texts work.  usage: config_errors.sh SCFM SOURCE_DIR WORK_DIR
set -uo pipefail
scfm=$1 src=$2 work=$3
rm -rf "$work" && mkdir -p "$work" && cd "$work" || exit 1
failures=0

# expect CODE PATTERN -- ARGS...: runs scfm ARGS, checks the exit code and that
# stderr contains PATTERN (a fixed string).
expect() {
    local code=$1 pattern=$2
    shift 3
    "$scfm" "$@" >out.txt 2>err.txt
    local got=$?
    if [[ $got -ne $code ]] || ! grep -qF -- "$pattern" err.txt out.txt; then
        echo "FAIL: scfm $* -> exit $got (want $code), output:"
        cat out.txt err.txt
        echo "  (expected to find: $pattern)"
        failures=$((failures + 1))
    else
        echo "ok: scfm $* -> $code: $(head -n1 err.txt)"
    fi
}

cat >unknown.cfg <<'CFG'
model = {
  layers = 2;
  layer = 3;
};
CFG
cat >type.cfg <<'CFG'
train = {
  steps = "many";
};
CFG
cat >range.cfg <<'CFG'
model = {

  dropout = 1.5;
};
CFG
cat >choice.cfg <<'CFG'
model = { norm = "sandwich"; };
CFG
cat >syntax.cfg <<'CFG'
model = { layers = = 2; };
CFG
cat >divisible.cfg <<'CFG'
model = { hidden = 250; heads = 4; };
CFG
cat >nodata.cfg <<'CFG'
data = { shards = "no/such/dir"; };
checkpoint = { dir = "ck"; };
CFG

expect 2 "unknown.cfg:3: unknown key 'model.layer'" -- train unknown.cfg
expect 2 "type.cfg:2: train.steps: expected integer, got string" -- train type.cfg
expect 2 "range.cfg:3: model.dropout: value 1.5 out of range [0, 1)" -- train range.cfg
expect 2 "choice.cfg:1: model.norm: 'sandwich' is not one of post, pre" -- train choice.cfg
expect 2 "syntax.cfg:1: syntax error" -- train syntax.cfg
expect 2 "model.hidden (250) must be divisible by model.heads (4)" -- train divisible.cfg
expect 2 "missing.cfg: cannot read" -- train missing.cfg
expect 2 "--set model.layers=0: model.layers: value 0 out of range [1, 128]" -- train "$src/configs/tiny.cfg" --set model.layers=0
expect 2 "unknown key 'train.stepz'" -- train "$src/configs/tiny.cfg" --set train.stepz=3
expect 2 "a CONFIG file is required" -- train
expect 2 "unexpected argument '--bogus'" -- train "$src/configs/tiny.cfg" --bogus
expect 2 "unknown command 'trian'" -- trian
expect 1 "no/such/dir: cannot open the shard directory" -- train nodata.cfg
# train.backend = "cuda" refuses, before any data is read, what only the CPU
# backend trains, and where it cannot run says why: a build without the
# CUDA backend, or no device; with a device it goes on to the data
# (docs/cuda.md)
expect 2 'nodata.cfg: train.backend "cuda" trains the transformer with the masked-gene loss; objective.contrastive runs on the CPU backend only' -- train nodata.cfg --set train.backend=cuda --set objective.contrastive=1
expect 2 'train.zero1 runs on the CPU backend only' -- train nodata.cfg --set train.backend=cuda --set train.zero1=1
"$scfm" train nodata.cfg --set train.backend=cuda >out.txt 2>err.txt
got=$?
if grep -qF "no/such/dir: cannot open the shard directory" err.txt && [[ $got -eq 1 ]]; then
    echo "ok: train.backend=cuda on a machine with a CUDA device reads the data: $(head -n1 err.txt)"
elif [[ $got -eq 2 ]] && grep -qE 'nodata.cfg: train.backend "cuda": (this build of scfm has no CUDA backend|no CUDA device was found)' err.txt; then
    echo "ok: train.backend=cuda -> 2: $(head -n1 err.txt)"
else
    echo "FAIL: train.backend=cuda -> exit $got, did not say what is missing:"; cat err.txt
    failures=$((failures + 1))
fi
expect 2 "train.backend: 'gpu' is not one of cpu, cuda" -- train nodata.cfg --set train.backend=gpu
expect 0 "usage: scfm <command>" -- --help
expect 0 "scfm train CONFIG" -- train --help

# a refused configuration writes nothing
if [[ -e ck ]]; then echo "FAIL: a failed run left ck/ behind"; failures=$((failures + 1)); fi

echo "config_errors: $failures failure(s)"
[[ $failures -eq 0 ]]
