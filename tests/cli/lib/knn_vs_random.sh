# Sourced by the command-line tests (this folder is not a test itself).
#   small_bin_atlas SCFM
# simulates atlas.h5ad (1,200 cells, 100 genes, 4 types, 2 batches), its
# vocab/ and bins/ (11 bins, 128 tokens: every expressed gene of a cell, about
# 80, fits, so binning samples none away; docs/objectives.md).
#   knn_accuracy RUN
# prints the embedding's kNN accuracy from report_RUN/report.json.
#   knn_vs_random SCFM CONFIG ATLAS RUN [--set KEY=VALUE]...
# trains CONFIG with the --set options into ck/RUN, and again into ck/random
# for one step at lr 1e-12 (the same seed gives the same initial weights, and
# one AdamW step of that size moves no weight by more than ~1e-12: the model
# of the same shape at its random initialisation), embeds ATLAS with both and
# writes `scfm eval`'s report_RUN/ and report_random/ (kNN accuracy of the
# cell type first in report.json).
knn_vs_random() {
    local scfm=$1 config=$2 atlas=$3 run=$4
    shift 4
    "$scfm" train "$config" "$@" --set checkpoint.dir=ck --set checkpoint.run="$run" --quiet
    "$scfm" train "$config" "$@" --set checkpoint.dir=ck --set checkpoint.run=random --set train.steps=1 \
        --set train.warmup_steps=0 --set train.lr=1e-12 --quiet
    local r
    for r in "$run" random; do
        "$scfm" embed "ck/$r" "$atlas" -o "$r.h5ad" --quiet
        "$scfm" eval "$r.h5ad" --label cell_type -o "report_$r" --no-pca --quiet >/dev/null
    done
}

small_bin_atlas() {
    local scfm=$1
    "$scfm" simulate --cells 1200 --genes 100 --types 4 --batches 2 --seed 3 -o atlas.h5ad --quiet
    "$scfm" vocab atlas.h5ad -o vocab --quiet
    "$scfm" tokenize --mode bin --bins 11 --vocab vocab atlas.h5ad -o bins --max-length 128 --quiet
}

# The embedding's kNN accuracy comes first in report.json, the PCA baseline's after it.
knn_accuracy() { grep -o '"knn_accuracy": [0-9.]*' "report_$1/report.json" | head -1 | cut -d' ' -f2; }
