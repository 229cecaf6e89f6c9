#!/usr/bin/env bash
# scfm vocab and scfm tokenize under mpirun: 1 and 2 ranks give the same
# vocabulary and the same shards, and so do 1 and 2 OpenMP threads; the tokens equal the numpy references of
# tests/reference/rank_encode_reference.py (when python3 has anndata, h5py and
# pandas); outputs are refused when they exist, and a failed run leaves no
# temporary directory.  usage: tokenize.sh SCFM SOURCE_DIR WORK_DIR
set -euo pipefail
scfm=$1 src=$2 work=$3
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
rm -rf "$work" && mkdir -p "$work" && cd "$work"
source "$src/tests/cli/lib/checks.sh"
np() { local n=$1; shift; mpirun --oversubscribe -np "$n" "$scfm" "$@"; }

# Inputs: a simulated atlas and the readers' fixture (other genes, missing
# categories, cells without counts), so the vocabulary is a union.
fixture=$src/tests/fixtures/counts/csr_float32.h5ad
inputs=()
if "$scfm" --help | grep -q '^  simulate '; then
    "$scfm" simulate -o sim.h5ad --cells 3000 --genes 400 --seed 3 --quiet
    inputs+=(sim.h5ad)
fi
[[ -f $fixture ]] && inputs+=("$fixture")
(( ${#inputs[@]} )) || fail "neither scfm simulate nor $fixture is available"

python=0
if python3 -c 'import anndata, h5py, numpy, pandas' 2>/dev/null; then python=1; fi
reference() { if (( python )); then python3 "$src/tests/reference/rank_encode_reference.py" "$@"; else echo "reference: skipped (python3 lacks anndata, h5py or pandas)"; fi; }
source "$src/tests/cli/lib/same_shards.sh"

# vocabulary: 1 and 2 ranks, byte for byte
np 1 vocab "${inputs[@]}" -o vocab1 --special cls,eos --quiet
np 2 vocab "${inputs[@]}" -o vocab2 --special cls,eos --quiet
cmp vocab1/vocab.tsv vocab2/vocab.tsv || fail "vocabularies of 1 and 2 ranks differ"
reference vocab --vocab vocab1 "${inputs[@]}"

# rank mode, several shards
np 1 tokenize --mode rank --vocab vocab1 "${inputs[@]}" -o rank1 --cells-per-shard 1000 --quiet
np 2 tokenize --mode rank --vocab vocab1 "${inputs[@]}" -o rank2 --cells-per-shard 1000 --quiet
same_shards rank1 rank2
reference shards --vocab vocab1 --shards rank1 --mode rank "${inputs[@]}"

# bin mode: log1p values sampled down; raw counts of the hvg set, zeros included
np 1 tokenize --mode bin --vocab vocab1 "${inputs[@]}" -o bin1 --max-length 100 --seed 9 --quiet
np 2 tokenize --mode bin --vocab vocab1 "${inputs[@]}" -o bin2 --max-length 100 --seed 9 --quiet
same_shards bin1 bin2
reference shards --vocab vocab1 --shards bin1 --mode bin --max-length 100 --seed 9 "${inputs[@]}"
np 2 tokenize --mode bin --vocab vocab1 "${inputs[@]}" -o hvg2 --bin-input raw --bins 11 --hvg 60 \
    --include-zeros --max-length 40 --cells-per-shard 1500 --quiet
reference shards --vocab vocab1 --shards hvg2 --mode bin --bin-input raw --bins 11 --hvg 60 \
    --include-zeros --max-length 40 "${inputs[@]}"

# OpenMP threads: a rank encodes the cells of a read in parallel; 2 threads
# (not bound to one core) write the same shards, summaries and errors as 1,
# in every mode, also with genes outside the vocabulary (a vocabulary of the
# genes seen in at least 1,500 cells)
threads() { local n=$1; shift; OMP_NUM_THREADS=$n mpirun --oversubscribe --bind-to none -np 1 "$scfm" tokenize "$@"; }
threads 2 --mode rank --vocab vocab1 "${inputs[@]}" -o rank1t2 --cells-per-shard 1000 --quiet
same_shards rank1 rank1t2
threads 2 --mode bin --vocab vocab1 "${inputs[@]}" -o bin1t2 --max-length 100 --seed 9 --quiet
same_shards bin1 bin1t2
for n in 1 2; do
    threads $n --mode bin --vocab vocab1 "${inputs[@]}" -o hvgt$n --bin-input raw --bins 11 --hvg 60 \
        --include-zeros --max-length 40 --cells-per-shard 1500 --quiet
    threads $n --mode counts --vocab vocab1 "${inputs[@]}" -o countst$n --hvg 60 --quiet
done
same_shards hvgt1 hvgt2
same_shards countst1 countst2
if [[ -f sim.h5ad ]]; then
    np 1 vocab sim.h5ad -o vocab_common --min-cells 1500 --quiet
    for n in 1 2; do
        threads $n --mode rank --vocab vocab_common sim.h5ad -o outsidet$n --max-length 64 2>summary$n.txt
        grep -v " tokens in " summary$n.txt >report$n.txt
    done
    grep -q "of the counts left out" report1.txt || fail "no summary: $(cat summary1.txt)"
    cmp report1.txt report2.txt || fail "summaries of 1 and 2 threads differ: $(cat report1.txt report2.txt)"
    same_shards outsidet1 outsidet2
fi
# (with --allow-non-integer the reader lets the negative count through and
# the encoding threads find it)
set +e
for n in 1 2; do
    threads $n --mode rank --vocab vocab1 "${inputs[@]}" "$src/tests/fixtures/counts/bad_negative.h5ad" \
        --allow-non-integer -o brokent$n --quiet 2>&1 | grep "^scfm" >errt$n.txt
done
set -e
grep -q "non-negative" errt1.txt || fail "a negative count was accepted: $(cat errt1.txt)"
cmp errt1.txt errt2.txt || fail "errors of 1 and 2 threads differ: $(cat errt1.txt errt2.txt)"

# an existing output is refused (exit 2) unless --force; no temporary directory stays
set +e
np 2 tokenize --mode rank --vocab vocab1 "${inputs[@]}" -o rank1 --quiet 2>err.txt
code=$?
set -e
[[ $code -eq 2 ]] || fail "an existing output gave exit code $code, not 2"
grep -q -- "--force" err.txt || fail "the error does not mention --force: $(cat err.txt)"
np 2 tokenize --mode rank --vocab vocab1 "${inputs[@]}" -o rank1 --force --quiet
[[ ! -e rank1.tmp && ! -e vocab1.tmp ]] || fail "a temporary directory was left behind"

# a failure on a rank stops every rank and removes the temporary directory
set +e
np 2 tokenize --mode rank --vocab vocab1 "${inputs[@]}" "$src/tests/fixtures/counts/bad_negative.h5ad" \
    -o broken --quiet 2>err.txt
code=$?
set -e
[[ $code -ne 0 ]] || fail "a negative count was accepted"
[[ ! -e broken && ! -e broken.tmp ]] || fail "a failed run left broken or broken.tmp"
echo "tokenize: ok (inputs: ${inputs[*]})"
