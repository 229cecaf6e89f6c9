#!/usr/bin/env bash
# The launch scripts (launch/, docs/launch.md):
#  1. local.sh -n 2 trains on 2 MPI ranks and passes --resume through;
#  2. sweep.sh trains a 2x2 grid, each run in its own directory, and plots it;
#     run again it skips the finished runs, resumes an interrupted one from its
#     checkpoint with the same losses, and SIGTERM stops it with exit code 3;
#  3. usage errors exit 2 and --dry-run writes nothing;
#  4. the Slurm templates parse, carry their directives, and (with stand-ins
#     for srun and scontrol) pass --resume only once a checkpoint exists and
#     requeue the job when the ranks exit with code 3.
#   usage: launch.sh SCFM SOURCE_DIR WORK_DIR
set -euo pipefail
scfm=$1 src=$2 work=$3
tools=$(dirname "$scfm")/tests
rm -rf "$work" && mkdir -p "$work" && cd "$work"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 SCFM=$scfm
source "$src/tests/cli/lib/checks.sh"
source "$src/tests/cli/lib/signal_run.sh"
steps_of() { wc -l <"$1" | tr -d ' '; }
loss_at() { grep "^{\"step\": $2," "$1" | tail -n 1 | sed 's/.*"loss": \([^,]*\),.*/\1/'; }
is_png() { [[ $(head -c 8 "$1" | od -An -tx1 | tr -d ' \n') == 89504e470d0a1a0a ]]; }

# 200 cells of 32-64 tokens: every run below takes a second or two.
"$tools/make_tokens" tok 200 300 6 1 32 64 >/dev/null
tiny=(--set data.shards=tok --set data.vocab= --set model.max_len=64 --set train.micro_batch_tokens=256
      --set train.warmup_steps=1 --set train.log_every_seconds=0)

# 1. local.sh: 2 ranks, then --resume passed through
bash "$src/launch/local.sh" -h | grep -q "usage: launch/local.sh" || fail "local.sh -h prints no usage"
set +e
bash "$src/launch/local.sh" 2>err.txt; rc=$?
set -e
[[ $rc -eq 2 ]] && grep -q "missing CONFIG" err.txt || fail "local.sh without CONFIG: exit $rc"
bash "$src/launch/local.sh" -n 2 "$src/configs/tiny.cfg" "${tiny[@]}" --set train.steps=10 --set checkpoint.dir=local --quiet
[[ $(steps_of local/tiny/metrics.jsonl) -eq 10 ]] || fail "local.sh -n 2: expected 10 metric lines"
grep -q '"step": 10, .*"ranks": 2' local/tiny/metrics.jsonl || fail "local.sh -n 2 did not train on 2 ranks"
bash "$src/launch/local.sh" -n 2 "$src/configs/tiny.cfg" "${tiny[@]}" --set train.steps=15 --set checkpoint.dir=local --quiet --resume
[[ $(steps_of local/tiny/metrics.jsonl) -eq 15 ]] || fail "local.sh --resume: expected 15 metric lines"
[[ $(cat local/tiny/latest) == step_0000015 ]] || fail "local.sh --resume did not reach step 15"

# 2. sweep.sh: a 2x2 grid (hidden x steps), a checkpoint every 5 steps
sweep=(bash "$src/launch/sweep.sh" grid "$src/configs/tiny.cfg" --hidden "16 32" --steps "10 20"
       --set data.shards=tok --set data.vocab= --set model.max_len=64 --set train.micro_batch_tokens=256
       --set train.warmup_steps=1 --set checkpoint.every=5)
"${sweep[@]}" --dry-run -- --quiet >dry.txt
[[ ! -e grid ]] || fail "sweep.sh --dry-run wrote grid/"
[[ $(grep -c "would start" dry.txt) -eq 4 ]] || { cat dry.txt; fail "sweep.sh --dry-run: expected 4 runs to start"; }
"${sweep[@]}" -- --quiet | tee first.txt
runs=(h16_s10 h16_s20 h32_s10 h32_s20)
for run in "${runs[@]}"; do
    n=${run#*_s}
    for f in metrics.jsonl config.cfg overrides.txt run.sh train.log latest; do
        [[ -f grid/$run/$f ]] || fail "grid/$run/$f missing"
    done
    [[ $(steps_of "grid/$run/metrics.jsonl") -eq $n ]] || fail "grid/$run: expected $n metric lines"
    grep -q "model.hidden=${run:1:2}" "grid/$run/overrides.txt" || fail "grid/$run/overrides.txt lacks its hidden size"
    grep -q "hidden = ${run:1:2};" "grid/$run/config.cfg" || fail "grid/$run/config.cfg lacks its hidden size"
done
for png in scaling.png curves.png; do is_png "grid/$png" || fail "the sweep drew no grid/$png"; done
grep -q "scfm plot: 4 runs, L = " first.txt || fail "the scaling-law plot did not fit 4 runs"

# ... run again: everything is skipped, no metric line is added
before=$(cat grid/*/metrics.jsonl | wc -l)
"${sweep[@]}" -- --quiet | tee second.txt
[[ $(grep -c "skipped" second.txt) -eq 4 ]] || fail "a second sweep did not skip the 4 finished runs"
[[ $(cat grid/*/metrics.jsonl | wc -l) -eq $before ]] || fail "a second sweep added metric lines"

# ... an interrupted run (checkpoint at step 5, metrics to step 7) goes on with --resume
want=$(loss_at grid/h32_s10/metrics.jsonl 10)
rm -rf grid/h32_s10/step_0000010
echo step_0000005 >grid/h32_s10/latest
head -n 7 grid/h32_s10/metrics.jsonl >m.tmp && mv m.tmp grid/h32_s10/metrics.jsonl
"${sweep[@]}" -- --quiet | tee third.txt
grep -q "h32_s10: resuming" third.txt || fail "the interrupted run was not resumed"
[[ $(grep -c "skipped" third.txt) -eq 3 ]] || fail "the third sweep did not skip the 3 finished runs"
grep -q -- "--resume" grid/h32_s10/run.sh || fail "run.sh does not add --resume"
[[ $(loss_at grid/h32_s10/metrics.jsonl 10) == "$want" ]] || fail "the resumed run's loss at step 10 differs"

# ... SIGTERM stops the sweep with a checkpoint and exit code 3; again, it finishes
long=(bash "$src/launch/sweep.sh" long "$src/configs/tiny.cfg" --hidden 16 --steps 400 --no-plot
      --set data.shards=tok --set data.vocab= --set model.max_len=64 --set train.micro_batch_tokens=256
      --set train.warmup_steps=1)
"${long[@]}" -- --quiet >long.txt &
signal_after_lines $! long/h16_s400/metrics.jsonl 3 TERM
[[ $stopped_rc -eq 3 ]] || fail "SIGTERM to the sweep: exit $stopped_rc, want 3"
[[ -f long/h16_s400/latest && $(cat long/h16_s400/latest) != step_0000400 ]] || fail "SIGTERM: no intermediate checkpoint"
"${long[@]}" -- --quiet | tee long2.txt
grep -q "h16_s400: resuming" long2.txt || fail "the stopped sweep did not resume"
[[ $(cat long/h16_s400/latest) == step_0000400 ]] || fail "the resumed sweep did not finish"

# 3. usage errors and refusals
expect2() { # what, then the command; exit code 2 and a message on stderr
    local what=$1 rc
    shift
    set +e
    "$@" >/dev/null 2>err.txt
    rc=$?
    set -e
    [[ $rc -eq 2 && -s err.txt ]] || fail "$what: exit $rc, want 2 with a message"
}
expect2 "sweep.sh without a grid" bash "$src/launch/sweep.sh" grid "$src/configs/tiny.cfg"
expect2 "--cells without a template" bash "$src/launch/sweep.sh" grid "$src/configs/tiny.cfg" --cells "10 20"
expect2 "a missing shard set" bash "$src/launch/sweep.sh" grid2 "$src/configs/tiny.cfg" --cells 7 --shards-for-cells 'none_{cells}'
expect2 "a bad grid value" bash "$src/launch/sweep.sh" grid "$src/configs/tiny.cfg" --hidden "16 x"
expect2 "another base config" bash "$src/launch/sweep.sh" grid "$src/configs/geneformer-v1-6L.cfg" --hidden 16
bash "$src/launch/sweep.sh" -h | grep -q "usage: launch/sweep.sh" || fail "sweep.sh -h prints no usage"

# 4. Slurm templates: syntax, directives, and their logic with srun and scontrol stand-ins
for t in cpu gpu; do
    f=$src/launch/slurm-$t.sbatch
    bash -n "$f" || fail "slurm-$t.sbatch: syntax"
    for d in --nodes= --ntasks-per-node= --cpus-per-task= --time= --signal=USR1@ --requeue; do
        grep -q "^#SBATCH $d" "$f" || fail "slurm-$t.sbatch has no #SBATCH $d"
    done
done
grep -q "^#SBATCH --gpus-per-node=" "$src/launch/slurm-gpu.sbatch" || fail "slurm-gpu.sbatch has no --gpus-per-node"
mkdir -p fake
cat >fake/srun <<'EOF'
#!/usr/bin/env bash
# srun stand-in: logs its arguments, then runs the command (one task) or exits with FAKE_SRUN_RC
echo "srun $*" >>"$FAKE_LOG"
while [[ $1 == -* ]]; do shift; done
[[ -z ${FAKE_SRUN_RC:-} ]] || exit "$FAKE_SRUN_RC"
exec "$@"
EOF
printf '#!/usr/bin/env bash\necho "scontrol $*" >>"$FAKE_LOG"\n' >fake/scontrol
chmod +x fake/srun fake/scontrol
for t in cpu gpu; do
    export FAKE_LOG=$work/slurm-$t.log
    job=(env PATH="$work/fake:$PATH" SLURM_JOB_ID=42 SLURM_SUBMIT_DIR="$work" SLURM_CPUS_PER_TASK=2
         CONFIG="$src/configs/tiny.cfg" SHARDS=tok CKPT_DIR=slurm RUN="$t"
         EXTRA="--set data.vocab= --set model.max_len=64 --set train.micro_batch_tokens=256 --set train.warmup_steps=1 --set train.steps=6 --quiet"
         bash "$src/launch/slurm-$t.sbatch")
    "${job[@]}" >/dev/null || fail "slurm-$t.sbatch: the first job failed"
    [[ $(steps_of slurm/$t/metrics.jsonl) -eq 6 ]] || fail "slurm-$t.sbatch: expected 6 metric lines"
    grep -q -- "--resume" "$FAKE_LOG" && fail "slurm-$t.sbatch passed --resume without a checkpoint"
    grep -q -- "--cpus-per-task=2 --cpu-bind=cores" "$FAKE_LOG" || fail "slurm-$t.sbatch: srun not given its cores"
    # the ranks stop with code 3 (SIGUSR1 before the time limit): --resume, then requeue
    FAKE_SRUN_RC=3 "${job[@]}" >/dev/null || fail "slurm-$t.sbatch: a stopped job did not exit 0 after requeueing"
    [[ $(tail -n 2 "$FAKE_LOG" | head -n 1) == *" --resume" ]] || fail "slurm-$t.sbatch: no --resume once a checkpoint exists"
    [[ $(tail -n 1 "$FAKE_LOG") == "scontrol requeue 42" ]] || fail "slurm-$t.sbatch: exit code 3 did not requeue"
    # any other failure is the job's exit code, without a requeue
    set +e
    FAKE_SRUN_RC=1 "${job[@]}" >/dev/null; rc=$?
    set -e
    [[ $rc -eq 1 && $(tail -n 1 "$FAKE_LOG") == srun* ]] || fail "slurm-$t.sbatch: exit code 1 gave $rc or a requeue"
done
grep -q -- "--gpu-bind=single:1" slurm-gpu.log || fail "slurm-gpu.sbatch: no one GPU per rank"
echo "launch: ok"
