# Sourced by the command-line tests (this folder is not a test itself).
#   fail MESSAGE...                  ends the test with "FAIL: MESSAGE"
#   expect_fail CODE PATTERN CMD...  runs CMD, which must exit with CODE (`any`:
#                                    any but 0) and print PATTERN (a grep pattern)
fail() { echo "FAIL: $*"; exit 1; }

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
