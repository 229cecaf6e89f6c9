# Sourced by the command-line tests (this folder is not a test itself).
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
