#!/usr/bin/env bash
# scfm simulate: the same seed gives the same file on any thread count, another
# seed another file; an existing output is kept without --force; bad arguments
# exit 2; anndata reads the atlas and finds its truth (when anndata is
# installed).  usage: simulate.sh SCFM SOURCE_DIR WORK_DIR
set -euo pipefail
scfm=$1 src=$2 work=$3
rm -rf "$work" && mkdir -p "$work" && cd "$work"
source "$src/tests/cli/lib/checks.sh"
sizes=(--cells 3000 --genes 400 --types 5 --batches 3)

"$scfm" simulate "${sizes[@]}" --seed 7 -o a.h5ad --quiet
OMP_NUM_THREADS=1 "$scfm" simulate "${sizes[@]}" --seed 7 --output=b.h5ad --quiet
cmp -s a.h5ad b.h5ad || fail "seed 7 gave different files on 2 threads and on 1"
"$scfm" simulate "${sizes[@]}" --seed 8 -o c.h5ad --quiet
cmp -s a.h5ad c.h5ad && fail "seeds 7 and 8 gave the same file"
[[ ! -e a.h5ad.tmp && ! -e c.h5ad.tmp ]] || fail "a temporary file was left behind"

# An existing output is refused and left as it was; --force replaces it.
before=$(cksum <c.h5ad)
if "$scfm" simulate "${sizes[@]}" --seed 7 -o c.h5ad --quiet 2>err.txt; then fail "overwrote c.h5ad without --force"; fi
grep -q "c.h5ad: already exists" err.txt || fail "no clear message for an existing output: $(cat err.txt)"
[[ $(cksum <c.h5ad) == "$before" ]] || fail "the refused run changed c.h5ad"
"$scfm" simulate "${sizes[@]}" --seed 7 -o c.h5ad --quiet --force
cmp -s a.h5ad c.h5ad || fail "--force did not replace c.h5ad with the seed 7 atlas"

# Usage errors: exit 2 and a message that names the problem.
expect_usage() {
    local want=$1; shift
    local rc=0
    "$scfm" simulate "$@" >out.txt 2>err.txt || rc=$?
    [[ $rc -eq 2 ]] || fail "simulate $* exited $rc, expected 2"
    grep -q -- "$want" err.txt || fail "simulate $*: message lacks '$want': $(head -1 err.txt)"
}
expect_usage "output path" --cells 10
expect_usage "--cells must be an integer" --cells 0 -o x.h5ad
expect_usage "--cells must be an integer" --cells 12x -o x.h5ad
expect_usage "--cells must be an integer" --cells=-5 -o x.h5ad
expect_usage "--cells must be an integer" --cells 99999999999999999999999 -o x.h5ad
expect_usage "--genes must be an integer" --genes 100001 -o x.h5ad
expect_usage "--types needs a value" --types "" -o x.h5ad
expect_usage "--types must be an integer" --types 1001 -o x.h5ad
expect_usage "--batches must be an integer" --batches 1.5 -o x.h5ad
expect_usage "--seed must be an integer" --seed -1 -o x.h5ad
expect_usage "--cells needs a value" -o x.h5ad --cells
expect_usage "unexpected argument '--celss'" --celss 10 -o x.h5ad
expect_usage "unexpected argument 'extra'" -o x.h5ad extra
[[ ! -e x.h5ad ]] || fail "a refused command wrote x.h5ad"
"$scfm" simulate --help | grep -q "usage: scfm simulate" || fail "--help"

# Progress goes to standard error and names the output.
"$scfm" simulate --cells 50 --genes 20 -o small.h5ad 2>err.txt
grep -q "wrote small.h5ad" err.txt || fail "no summary line: $(cat err.txt)"

# A cell does not depend on how many are simulated (checked with anndata).
"$scfm" simulate "${sizes[@]/3000/700}" --seed 7 -o prefix.h5ad --quiet
if command -v python3 >/dev/null; then
    python3 "$src/tests/reference/check_simulated.py" a.h5ad 3000 400 5 3 prefix.h5ad
else
    echo "skipped: python3 not installed"
fi
