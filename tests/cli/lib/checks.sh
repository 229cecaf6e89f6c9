# Sourced by the command-line tests (this folder is not a test itself).
#   fail MESSAGE...                  ends the test with "FAIL: MESSAGE"
#   expect_fail CODE PATTERN CMD...  runs CMD, which must exit with CODE (`any`:
#                                    any but 0) and print PATTERN (a grep pattern)
#   same_steps WHAT A B STEPS TOL KEY...
#                                    the metrics.jsonl files A and B hold STEPS
#                                    steps each whose KEYs (loss, grad_norm, ...)
#                                    agree within TOL, relative to values above 1
#                                    (absolute below); prints the largest
#                                    difference after WHAT (needs python3)
#   loss_fell WHAT METRICS           the mean loss of the last 20 steps is at
#                                    least 0.3 below that of the first 10
fail() { echo "FAIL: $*"; exit 1; }

same_steps() {
    local what=$1 a=$2 b=$3 steps=$4 tol=$5
    shift 5
    python3 - "$what" "$a" "$b" "$steps" "$tol" "$@" <<'PY'
import json, sys
what, a, b, steps, tol, keys = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), sys.argv[6:]
runs = [[json.loads(line) for line in open(path)] for path in (a, b)]
worst = max((abs(x[k] - y[k]) / max(abs(x[k]), 1.0) for x, y in zip(*runs) for k in keys), default=0.0)
print(f"{what}, {len(runs[0])} steps: largest relative difference of {', '.join(keys)} {worst:.2g}")
sys.exit(0 if len(runs[0]) == len(runs[1]) == steps and worst < tol else 1)
PY
}

expect_fail() {
    local code=$1 pattern=$2
    shift 2
    set +e
    "$@" >out.txt 2>&1
    local got=$?
    set -e
    if [[ $code == any ]]; then
        [[ $got -ne 0 ]] || { cat out.txt; fail "$* exited 0"; }
    else
        [[ $got -eq $code ]] || { cat out.txt; fail "$* exited $got, expected $code"; }
    fi
    grep -q -- "$pattern" out.txt || { cat out.txt; fail "$*: no '$pattern' in the message"; }
}

loss_fell() {
    awk -F'"loss": ' -v what="$1" '{ split($2, a, ","); loss[NR] = a[1] }
      END {
        for (i = 1; i <= 10; i++) first += loss[i] / 10
        for (i = NR - 19; i <= NR; i++) last += loss[i] / 20
        printf "%s: loss of the first 10 steps %.3f, of the last 20 %.3f\n", what, first, last
        exit !(last < first - 0.3)
      }' "$2" || fail "$1: the loss did not fall"
}
