# Sourced by the command-line tests (this folder is not a test itself).
#   signal_after_lines PID FILE LINES SIGNAL
# waits until FILE (a metrics.jsonl) has LINES lines, sends SIGNAL to PID,
# waits for it and sets `stopped_rc` to its exit status. Fails the test if
# PID ends before that.
signal_after_lines() {
    local pid=$1 file=$2 lines=$3 signal=$4
    while [[ $(cat "$file" 2>/dev/null | wc -l) -lt $lines ]]; do
        kill -0 "$pid" 2>/dev/null || { echo "FAIL: process $pid ended before $file had $lines lines"; exit 1; }
        sleep 0.02
    done
    kill "-$signal" "$pid"
    set +e
    wait "$pid" 2>/dev/null
    stopped_rc=$?
    set -e
}
