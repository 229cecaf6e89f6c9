#!/usr/bin/env bash
# scfm tokenize --mode counts under mpirun: 1 and 2 ranks write the same
# shards (gene set included, with and without --hvg); the shards hold the
# inputs' counts, library sizes and the --hvg set exactly as the numpy
# reference computes them (tests/reference/rank_encode_reference.py); the
# loader in micro-batches of a fixed number of cells gives every cell once an
# epoch, and scfm_counts_dense's four representations equal numpy's
# (tests/reference/check_count_batches.py); bad options and inputs fail with
# no output left behind. Skips (77) without python3 with anndata, h5py and
# pandas.  usage: counts.sh SCFM SOURCE_DIR WORK_DIR
set -euo pipefail
scfm=$1 src=$2 work=$3
tools=$(dirname "$scfm")/tests
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
rm -rf "$work" && mkdir -p "$work" && cd "$work"
source "$src/tests/cli/lib/checks.sh"
source "$src/tests/cli/lib/same_shards.sh"
python3 -c 'import anndata, h5py, numpy, pandas' 2>/dev/null || { echo "skipped: python3 lacks anndata, h5py or pandas"; exit 77; }
python=1
np() { local n=$1; shift; mpirun --oversubscribe -np "$n" "$scfm" "$@"; }
reference() { python3 "$src/tests/reference/rank_encode_reference.py" shards --mode counts "$@"; }

# A simulated atlas and the readers' fixture (other genes, cells without counts).
"$scfm" simulate -o sim.h5ad --cells 600 --genes 150 --seed 5 --quiet
inputs=(sim.h5ad "$src/tests/fixtures/counts/csr_float32.h5ad")
np 1 vocab "${inputs[@]}" -o vocab --quiet

# every vocabulary gene, several shards
np 1 tokenize --mode counts --vocab vocab "${inputs[@]}" -o all1 --cells-per-shard 250 --quiet
np 2 tokenize --mode counts --vocab vocab "${inputs[@]}" -o all2 --cells-per-shard 250 --quiet
same_shards all1 all2
reference --vocab vocab --shards all1 "${inputs[@]}"

# a small hvg set: some cells keep their library and no count in the set
np 1 tokenize --mode counts --hvg 6 --vocab vocab "${inputs[@]}" -o hvg1 --cells-per-shard 400 2>summary.txt
np 2 tokenize --mode counts --hvg 6 --vocab vocab "${inputs[@]}" -o hvg2 --cells-per-shard 400 --quiet
same_shards hvg1 hvg2
reference --vocab vocab --shards hvg1 --hvg 6 "${inputs[@]}"
grep -Eq "written \([1-9][0-9]* without a count in the gene set\)" summary.txt ||
    fail "no cell was kept without a count in the hvg set: $(cat summary.txt)"

# the loader's epoch in micro-batches of 64 cells, every representation
for set in all1 hvg1; do
    mkdir "$set.batches"
    "$tools/count_batches" "$set" 64 11 "$set.batches"
    python3 "$src/tests/reference/check_count_batches.py" "$set.batches" "$set" 64 11
done

# bad options and inputs: a clear message, a non-zero exit, no output
expect_fail 2 "--hvg must be an integer in \[1," np 2 tokenize --mode counts --hvg 0 --vocab vocab "${inputs[@]}" -o bad
expect_fail 2 "hvg 100000: the vocabulary has only" np 2 tokenize --mode counts --hvg 100000 --vocab vocab \
    "${inputs[@]}" -o bad
expect_fail 2 "--max-length does not apply to --mode counts" np 1 tokenize --mode counts --max-length 10 \
    --vocab vocab "${inputs[@]}" -o bad
expect_fail 2 "--bins does not apply to --mode counts" np 1 tokenize --mode counts --bins 10 --vocab vocab \
    "${inputs[@]}" -o bad
expect_fail any "negative" np 2 tokenize --mode counts --vocab vocab "${inputs[@]}" \
    "$src/tests/fixtures/counts/bad_negative.h5ad" -o bad
[[ ! -e bad && ! -e bad.tmp ]] || fail "a failed run left bad or bad.tmp"
echo "counts: ok"
