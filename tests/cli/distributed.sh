#!/usr/bin/env bash
# Data-parallel training and checkpoints:
#  1. np=2 equals np=1 with accumulation 2 (parameters after 10 steps);
#  2. kill -9 part way, then --resume: every later loss equals the uninterrupted run's;
#  3. SIGTERM writes a checkpoint and exits 3; --resume finishes with the same losses;
#  4. resume at np=1 from a checkpoint written at np=2;
#  5. ZeRO-1 (sharded moments) at np=2 equals np=1 with accumulation 2, and resumes exactly.
#   usage: distributed.sh SCFM SOURCE_DIR WORK_DIR
set -euo pipefail
scfm=$1 src=$2 work=$3
tools=$(dirname "$scfm")/tests
rm -rf "$work" && mkdir -p "$work" && cd "$work"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
mpirun=(mpirun --oversubscribe -np 2)
source "$src/tests/cli/lib/checks.sh"
source "$src/tests/cli/lib/signal_run.sh"

# 400 cells of exactly 64 tokens: a 256-token budget packs 4 cells, so one rank
# with 2 micro-batches and two ranks with 1 each see the same 8 cells a step.
"$tools/make_tokens" tokens 400 300 6 1 64 64 >/dev/null
base=(--set data.shards=tokens --set data.vocab= --set model.max_len=64 --set train.micro_batch_tokens=256
      --set train.warmup_steps=2 --set train.log_every_seconds=0 --quiet)

# 1. np=2 against np=1 with accumulation 2
"$scfm" train "$src/configs/tiny.cfg" "${base[@]}" --set checkpoint.dir=one --set train.steps=10 --set train.accumulate=2
"${mpirun[@]}" "$scfm" train "$src/configs/tiny.cfg" "${base[@]}" --set checkpoint.dir=two --set train.steps=10
"$tools/compare_weights" one/tiny/step_0000010/model.safetensors two/tiny/step_0000010/model.safetensors 1e-5 key.bias ||
    fail "np=2 differs from np=1 with accumulation 2"

# losses of a run, one "step loss" line per step, the last line of a step winning
losses() { awk -F'[:,]' '{ loss[$2] = $6 } END { for (s in loss) print s + 0, loss[s] }' "$1" | sort -n; }

# 2. kill -9 part way, then --resume
run=(--set train.steps=40 --set checkpoint.every=5 --set train.micro_batch_tokens=2048)
"$scfm" train "$src/configs/tiny.cfg" "${base[@]}" "${run[@]}" --set checkpoint.dir=whole
"$scfm" train "$src/configs/tiny.cfg" "${base[@]}" "${run[@]}" --set checkpoint.dir=killed &
signal_after_lines $! killed/tiny/metrics.jsonl 12 KILL
[[ $(wc -l <killed/tiny/metrics.jsonl) -lt 40 ]] || fail "the run finished before it was killed"
"$scfm" train "$src/configs/tiny.cfg" "${base[@]}" "${run[@]}" --set checkpoint.dir=killed --resume
diff <(losses whole/tiny/metrics.jsonl) <(losses killed/tiny/metrics.jsonl) || fail "losses after kill -9 and --resume differ"
"$tools/compare_weights" whole/tiny/step_0000040/model.safetensors killed/tiny/step_0000040/model.safetensors 0 ||
    fail "weights after kill -9 and --resume differ"

# 3. SIGTERM: checkpoint, exit code 3, then --resume
"$scfm" train "$src/configs/tiny.cfg" "${base[@]}" "${run[@]}" --set checkpoint.dir=term &
signal_after_lines $! term/tiny/metrics.jsonl 7 TERM
[[ $stopped_rc -eq 3 ]] || fail "SIGTERM: exit $stopped_rc, want 3"
stopped=$(wc -l <term/tiny/metrics.jsonl)
[[ -f term/tiny/step_$(printf %07d "$stopped")/MANIFEST ]] || fail "SIGTERM wrote no checkpoint at step $stopped"
"$scfm" train "$src/configs/tiny.cfg" "${base[@]}" "${run[@]}" --set checkpoint.dir=term --resume
diff <(losses whole/tiny/metrics.jsonl) <(losses term/tiny/metrics.jsonl) || fail "losses after SIGTERM and --resume differ"

# 4. resume at np=1 from a checkpoint written at np=2
"${mpirun[@]}" "$scfm" train "$src/configs/tiny.cfg" "${base[@]}" --set checkpoint.dir=elastic --set train.steps=10
"$scfm" train "$src/configs/tiny.cfg" "${base[@]}" --set checkpoint.dir=elastic --set train.steps=20 --resume
[[ $(losses elastic/tiny/metrics.jsonl | wc -l) -eq 20 ]] || fail "elastic resume did not reach step 20"
grep -q '"step": 20, .*"ranks": 1' elastic/tiny/metrics.jsonl || fail "steps after the elastic resume were not on 1 rank"
# 5. ZeRO-1
zero=(--set train.zero1=1)
"${mpirun[@]}" "$scfm" train "$src/configs/tiny.cfg" "${base[@]}" "${zero[@]}" --set checkpoint.dir=zero --set train.steps=10
"$tools/compare_weights" one/tiny/step_0000010/model.safetensors zero/tiny/step_0000010/model.safetensors 1e-5 key.bias ||
    fail "ZeRO-1 at np=2 differs from np=1 with accumulation 2"
# ... and a preempted ZeRO-1 run (SIGUSR1, which mpirun forwards to the ranks) resumes exactly
zrun=(--set train.steps=30 --set checkpoint.every=5 --set train.micro_batch_tokens=1024)
"${mpirun[@]}" "$scfm" train "$src/configs/tiny.cfg" "${base[@]}" "${zero[@]}" "${zrun[@]}" --set checkpoint.dir=zero_whole
"${mpirun[@]}" "$scfm" train "$src/configs/tiny.cfg" "${base[@]}" "${zero[@]}" "${zrun[@]}" --set checkpoint.dir=zero_stop &
signal_after_lines $! zero_stop/tiny/metrics.jsonl 7 USR1
[[ $stopped_rc -ne 0 ]] || fail "SIGUSR1 under mpirun: the run was not stopped"
[[ $(wc -l <zero_stop/tiny/metrics.jsonl) -lt 30 ]] || fail "the ZeRO-1 run finished before it was stopped"
"${mpirun[@]}" "$scfm" train "$src/configs/tiny.cfg" "${base[@]}" "${zero[@]}" "${zrun[@]}" --set checkpoint.dir=zero_stop --resume
diff <(losses zero_whole/tiny/metrics.jsonl) <(losses zero_stop/tiny/metrics.jsonl) || fail "ZeRO-1 losses after --resume differ"
"$tools/compare_weights" zero_whole/tiny/step_0000030/model.safetensors zero_stop/tiny/step_0000030/model.safetensors 0 ||
    fail "ZeRO-1 weights after --resume differ"
echo "distributed: ok"
