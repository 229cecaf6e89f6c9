#!/usr/bin/env bash
# scfm plot draws learning curves and a sweep's scaling law into PNG files,
# fits the power law it was given, and refuses bad input.
#   usage: plot.sh SCFM SOURCE_DIR WORK_DIR
set -euo pipefail
scfm=$1 work=$3
rm -rf "$work" && mkdir -p "$work" && cd "$work"

# Three runs whose final loss follows L = 50 C^-0.1 exactly, C = 6 x params x tokens.
for hidden in 16 32 64; do
    mkdir -p "runs/h$hidden"
    printf 'data = { shards = "x"; };\nmodel = { vocab_size = 100; layers = 1; hidden = %d; heads = 2; ffn = 32; max_len = 16; };\n' \
        "$hidden" >"runs/h$hidden/config.cfg"
done
params() { # the parameter count of the configs above, as scfm_model_param_count computes it
    local C=$1 V=100 P=16 F=32
    echo $((V * C + P * C + 2 * C + 3 * C * C + 3 * C + C * C + C + 2 * C + F * C + F + C * F + C + 2 * C + C * C + C + 2 * C + V))
}
for hidden in 16 32 64; do
    p=$(params "$hidden")
    awk -v p="$p" 'BEGIN { for (s = 1; s <= 20; s++) { c = 6 * p * 1000 * s; printf "{\"step\": %d, \"loss\": %.8f, \"tokens\": 1000}\n", s, 50 * c ^ -0.1 } }' \
        >"runs/h$hidden/metrics.jsonl"
done

"$scfm" plot runs/h16 runs/h64 -o curves.png
"$scfm" plot --sweep runs/h16 runs/h32 runs/h64 -o scaling.png | tee sweep.txt
for png in curves.png scaling.png; do
    [[ $(head -c 8 "$png" | od -An -tx1 | tr -d ' \n') == 89504e470d0a1a0a ]] || { echo "FAIL: $png is not a PNG"; exit 1; }
done
# the final loss averages the last 10% of steps (2 of 20), so the fit is close to, not exactly, 0.1
grep -Eq 'L = (49\.[5-9]|50\.[0-4])[0-9]* C\^-0\.(09[5-9]|10[0-5])' sweep.txt ||
    { echo "FAIL: fit in '$(cat sweep.txt)' is not about L = 50 C^-0.1 (parameter count or tokens wrong?)"; exit 1; }

set +e
"$scfm" plot runs/none -o x.png 2>err.txt; rc=$?
set -e
[[ $rc -eq 1 ]] && grep -q "runs/none/metrics.jsonl: cannot open" err.txt || { echo "FAIL: missing run: exit $rc"; cat err.txt; exit 1; }
[[ ! -e x.png ]] || { echo "FAIL: a failed plot left x.png"; exit 1; }
set +e
"$scfm" plot runs/h16 2>err.txt; rc=$?
set -e
[[ $rc -eq 2 ]] || { echo "FAIL: no -o: exit $rc"; exit 1; }
echo "plot: ok"
