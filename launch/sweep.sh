#!/usr/bin/env bash
# A scaling-law sweep: one `scfm train` run per point of a grid of model sizes
# x data sizes x steps, each in its own directory, resumable; then the
# scaling-law and learning-curve plots. See docs/launch.md.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: launch/sweep.sh SWEEP_DIR BASE_CONFIG [grid] [options] [-- scfm train args...]

Trains one run per grid point, one after the other, into SWEEP_DIR/<name>/
(checkpoint.dir = SWEEP_DIR, checkpoint.run = <name>), then draws
SWEEP_DIR/scaling.png (scfm plot --sweep) and SWEEP_DIR/curves.png.

Grid: each a quoted, space-separated list of positive integers; a dimension
left out keeps BASE_CONFIG's value and is not part of the run names.
  --hidden "64 128"     model.hidden (and model.ffn = FFN_MULT x hidden)
  --layers "2 4"        model.layers
  --cells "1000 4000"   data size: one shard set per value, see --shards-for-cells
  --steps "200 400"     train.steps
Run names join the varied dimensions: h64_l2_c1000_s200.

Options:
  --shards-for-cells TEMPLATE  data.shards of each --cells value, with {cells}
                        replaced: e.g. data/shards_{cells} (make each set with
                        scfm tokenize on that many cells). Without it --cells is
                        refused, and data size grows with --steps only.
  --ffn-mult M          model.ffn = M x hidden when --hidden is given (default 2,
                        as configs/*.cfg); 0 keeps BASE_CONFIG's model.ffn
  --warmup-frac F       train.warmup_steps = F x train.steps (with --steps)
  --set section.key=V   an override for every run; repeatable
  --ranks N             MPI ranks per run, through launch/local.sh (default 1)
  --launcher "CMD"      start each run as CMD SCFM train ... instead of
                        launch/local.sh, e.g. "srun --cpu-bind=cores" inside a
                        Slurm allocation (split on spaces)
  --no-plot             skip the plots
  --dry-run             print each run's state and command; write and run nothing
  -h, --help            this text
Arguments after -- go to every scfm train as they are (e.g. --quiet).

Each run directory holds overrides.txt (its --set overrides), run.sh (the
command; it adds --resume when a checkpoint exists), train.log (its output)
and what scfm train writes there (config.cfg, metrics.jsonl, step_NNNNNNN/,
latest). SWEEP_DIR/base.cfg is a copy of BASE_CONFIG; a later call with
another base config is refused.

Resumable: run the same command again. A run whose metrics.jsonl has its last
step and whose latest checkpoint is that step is skipped; a run with a
checkpoint goes on with --resume; the others start.

SIGTERM or SIGUSR1 stops the running run with a checkpoint (SIGUSR1 to its
ranks) and the sweep exits with code 3. Exit codes: 0 all runs done, 1 a run
or a plot failed (the other runs still ran), 2 usage, 3 stopped by a signal.

Environment: SCFM (default: build/scfm of this checkout); what launch/local.sh reads.
EOF
}
die() { echo "launch/sweep.sh: $*" >&2; exit 2; }
note() { echo "sweep: $*"; }
warn() { echo "sweep: $*" >&2; }
ints() { # NAME VALUES: checks a list of positive integers
    [[ -n ${2// /} ]] || die "--$1: empty list"
    local v
    for v in $2; do [[ $v =~ ^[1-9][0-9]*$ ]] || die "--$1: '$v' is not a positive integer"; done
}

hidden="" layers="" cells="" steps="" template="" ffn_mult=2 warmup_frac="" ranks=1 launcher=""
dry_run=0 plot=1
sets=() extra=() positional=()
while [[ $# -gt 0 ]]; do
    case $1 in
        -h | --help) usage; exit 0 ;;
        --hidden | --layers | --cells | --steps | --shards-for-cells | --ffn-mult | --warmup-frac | --set | --ranks | --launcher)
            [[ $# -ge 2 ]] || die "$1 needs a value"
            case $1 in
                --hidden) ints hidden "$2"; hidden=$2 ;;
                --layers) ints layers "$2"; layers=$2 ;;
                --cells) ints cells "$2"; cells=$2 ;;
                --steps) ints steps "$2"; steps=$2 ;;
                --shards-for-cells) template=$2 ;;
                --ffn-mult) [[ $2 =~ ^[0-9]+$ ]] || die "--ffn-mult: '$2' is not a whole number"; ffn_mult=$2 ;;
                --warmup-frac) [[ $2 =~ ^(0|1|0?\.[0-9]+|1\.0*)$ ]] || die "--warmup-frac: '$2' is not a number in [0, 1]"; warmup_frac=$2 ;;
                --set) [[ $2 == *.*=* ]] || die "--set $2: expected section.key=value"; sets+=("$2") ;;
                --ranks) [[ $2 =~ ^[1-9][0-9]*$ ]] || die "--ranks: '$2' is not a positive integer"; ranks=$2 ;;
                --launcher) [[ -n ${2// /} ]] || die "--launcher: empty command"; launcher=$2 ;;
            esac
            shift 2 ;;
        --no-plot) plot=0; shift ;;
        --dry-run) dry_run=1; shift ;;
        --) shift; extra=("$@"); break ;;
        -*) usage >&2; die "unknown option '$1'" ;;
        *) positional+=("$1"); shift ;;
    esac
done
[[ ${#positional[@]} -eq 2 ]] || { usage >&2; die "expected SWEEP_DIR and BASE_CONFIG, got ${#positional[@]} argument(s)"; }
sweep_arg=${positional[0]} base=${positional[1]}
[[ -r $base && -f $base ]] || die "$base: cannot read"
[[ -n $hidden$layers$cells$steps ]] || die "nothing to sweep: give at least one of --hidden, --layers, --cells, --steps"
if [[ -n $cells ]]; then
    [[ -n $template ]] || die "--cells needs --shards-for-cells TEMPLATE (a shard directory per data size)"
    [[ $template == *"{cells}"* ]] || die "--shards-for-cells: '$template' has no {cells}"
elif [[ -n $template ]]; then
    die "--shards-for-cells needs --cells"
fi
[[ -z $warmup_frac || -n $steps ]] || die "--warmup-frac needs --steps"
[[ -z $launcher || $ranks -eq 1 ]] || die "--ranks and --launcher exclude each other (give the launcher its ranks)"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
scfm=${SCFM:-$here/build/scfm}
[[ -x $scfm ]] || die "$scfm not found; build first (cmake -S . -B build && cmake --build build) or set SCFM"
scfm=$(realpath "$scfm")
sweep=$(realpath -m "$sweep_arg")
workdir=$(pwd)

# The grid: one line per run, "name hidden layers cells steps" ("-" where not varied).
grid=()
for h in ${hidden:--}; do
    for l in ${layers:--}; do
        for c in ${cells:--}; do
            for s in ${steps:--}; do
                name=""
                [[ $h == - ]] || name+="_h$h"
                [[ $l == - ]] || name+="_l$l"
                [[ $c == - ]] || name+="_c$c"
                [[ $s == - ]] || name+="_s$s"
                grid+=("${name#_} $h $l $c $s")
            done
        done
    done
done

# Shard directories of the data sizes exist before anything runs.
if [[ -n $cells ]]; then
    for c in $cells; do
        d=${template//\{cells\}/$c}
        [[ -d $d ]] || die "--cells $c: shard directory $d does not exist (make it with scfm tokenize)"
    done
fi

# A sweep keeps one base configuration.
if [[ -e $sweep/base.cfg ]] && ! cmp -s "$base" "$sweep/base.cfg"; then
    die "$sweep/base.cfg differs from $base: a sweep keeps one base config (use another SWEEP_DIR, or copy $base over base.cfg on purpose)"
fi

overrides_of() { # "name h l c s" -> one override a line
    local name h l c s o
    read -r name h l c s <<<"$1"
    for o in "${sets[@]+"${sets[@]}"}"; do echo "$o"; done
    if [[ $h != - ]]; then
        echo "model.hidden=$h"
        ((ffn_mult == 0)) || echo "model.ffn=$((ffn_mult * h))"
    fi
    [[ $l == - ]] || echo "model.layers=$l"
    [[ $c == - ]] || echo "data.shards=${template//\{cells\}/$c}"
    if [[ $s != - ]]; then
        echo "train.steps=$s"
        [[ -z $warmup_frac ]] || echo "train.warmup_steps=$(awk -v f="$warmup_frac" -v s="$s" 'BEGIN { printf "%d", f * s }')"
    fi
    echo "checkpoint.dir=$sweep"
    echo "checkpoint.run=$name"
}

# train.steps of a started run, from the configuration scfm train resolved.
config_steps() {
    [[ -f $1 ]] || return 0
    awk '/^[ \t]*train[ \t]*=/ { t = 1 } t && /^[ \t]*steps[ \t]*=/ { gsub(/[^0-9]/, "", $0); print; exit } t && /^[ \t]*};/ { t = 0 }' "$1"
}
final_steps() { # dir s
    if [[ $2 != - ]]; then echo "$2"; else config_steps "$1/config.cfg"; fi
}
is_done() { # dir s
    local dir=$1 n
    n=$(final_steps "$dir" "$2")
    [[ -n $n && -f $dir/metrics.jsonl && -f $dir/latest ]] || return 1
    [[ $(head -n 1 "$dir/latest") == "step_$(printf %07d "$n")" ]] || return 1
    grep -q "^{\"step\": $n," "$dir/metrics.jsonl"
}
final_loss() { # dir s
    local n
    n=$(final_steps "$1" "$2")
    grep "^{\"step\": $n," "$1/metrics.jsonl" 2>/dev/null | tail -n 1 | sed -n 's/.*"loss": \([^,]*\),.*/\1/p'
}

# Refuse to go on with other overrides than a started run had.
for point in "${grid[@]}"; do
    read -r name h l c s <<<"$point"
    dir=$sweep/$name
    if [[ -f $dir/overrides.txt && ( -f $dir/metrics.jsonl || -f $dir/latest ) ]] &&
        ! diff -q "$dir/overrides.txt" <(overrides_of "$point") >/dev/null; then
        die "$dir: started with other overrides than this call gives (diff $dir/overrides.txt); use another SWEEP_DIR"
    fi
done

# run.sh of a run: the whole command, resumable on its own.
write_run_sh() { # dir then the command
    local dir=$1
    shift
    {
        echo "#!/usr/bin/env bash"
        echo "# written by launch/sweep.sh; run it again to continue the run (adds --resume once a checkpoint exists)"
        echo "set -euo pipefail"
        echo "cd $(printf %q "$workdir")"
        echo "resume=()"
        echo "[[ ! -e $(printf %q "$dir/latest") ]] || resume=(--resume)"
        echo "exec $(printf '%q ' "$@")\"\${resume[@]+\"\${resume[@]}\"}\""
    } >"$dir/run.sh.tmp"
    chmod +x "$dir/run.sh.tmp"
    mv "$dir/run.sh.tmp" "$dir/run.sh"
}

child="" stop=0
on_signal() { stop=1; [[ -z $child ]] || kill -USR1 "$child" 2>/dev/null || true; }
trap on_signal TERM USR1
trap 'stop=1; [[ -z $child ]] || kill -TERM "$child" 2>/dev/null || true' INT

((dry_run)) || { mkdir -p "$sweep"; [[ -e $sweep/base.cfg ]] || cp "$base" "$sweep/base.cfg"; }
failed=() finished=() total=${#grid[@]} i=0
for point in "${grid[@]}"; do
    read -r name h l c s <<<"$point"
    i=$((i + 1))
    dir=$sweep/$name
    mapfile -t overrides < <(overrides_of "$point")
    cmd_args=("$sweep/base.cfg")
    for o in "${overrides[@]}"; do cmd_args+=(--set "$o"); done
    cmd_args+=("${extra[@]+"${extra[@]}"}")
    if [[ -n $launcher ]]; then
        read -r -a cmd <<<"$launcher"
        cmd+=("$scfm" train "${cmd_args[@]}")
    else
        cmd=(env "SCFM=$scfm" "$here/launch/local.sh" -n "$ranks" "${cmd_args[@]}")
    fi
    if is_done "$dir" "$s"; then
        note "[$i/$total] $name: done (loss $(final_loss "$dir" "$s")), skipped"
        finished+=("$dir")
        continue
    fi
    state=start
    [[ ! -e $dir/latest ]] || state=resume
    if ((dry_run)); then
        resume=""
        [[ $state == start ]] || resume=" --resume"
        note "[$i/$total] $name: would $state: $(printf '%q ' "${cmd[@]}" | sed 's/ $//')$resume"
        finished+=("$dir")
        continue
    fi
    ((stop == 0)) || break
    mkdir -p "$dir"
    printf '%s\n' "${overrides[@]}" >"$dir/overrides.txt"
    write_run_sh "$dir" "${cmd[@]}"
    # Metrics without a checkpoint are of a run that starts again from step 0.
    [[ $state == resume || ! -f $dir/metrics.jsonl ]] || mv -f "$dir/metrics.jsonl" "$dir/metrics.jsonl.stale"
    verb=starting
    [[ $state == start ]] || verb=resuming
    note "[$i/$total] $name: $verb (log: $dir/train.log)"
    started=$SECONDS
    bash "$dir/run.sh" >>"$dir/train.log" 2>&1 &
    child=$!
    set +e
    while kill -0 "$child" 2>/dev/null; do wait "$child"; done
    wait "$child"
    rc=$?
    set -e
    child=""
    if ((rc == 0)) && is_done "$dir" "$s"; then
        note "[$i/$total] $name: done in $((SECONDS - started)) s (loss $(final_loss "$dir" "$s"))"
        finished+=("$dir")
    elif ((rc == 3 || stop)); then
        if ((rc == 3)); then
            warn "[$i/$total] $name: stopped by a signal after a checkpoint; run the sweep again to continue"
        else
            warn "[$i/$total] $name: stopped by a signal (exit $rc); run the sweep again to continue"
        fi
        exit 3
    else
        ((rc != 0)) || rc="0 but its last step is missing"
        warn "[$i/$total] $name: FAILED (exit $rc); from $dir/train.log:"
        { grep '^scfm: ' "$dir/train.log" | tail -n 5 | grep . || tail -n 15 "$dir/train.log"; } | sed 's/^/    /' >&2
        failed+=("$name")
    fi
    ((stop == 0)) || { warn "stopped by a signal; run the sweep again to continue"; exit 3; }
done
((stop == 0)) || { warn "stopped by a signal; run the sweep again to continue"; exit 3; }

plot_failed=0
if ((plot)); then
    if ((dry_run)); then
        ((${#finished[@]} < 2)) || note "would plot: $(printf '%q ' "$scfm" plot --sweep "${finished[@]}" -o "$sweep/scaling.png" | sed 's/ $//')"
        note "would plot: $(printf '%q ' "$scfm" plot "${finished[@]}" -o "$sweep/curves.png" | sed 's/ $//')"
    elif ((${#finished[@]} == 0)); then
        warn "no finished runs to plot"
    else
        if ((${#finished[@]} >= 2)); then
            "$scfm" plot --sweep "${finished[@]}" -o "$sweep/scaling.png" || plot_failed=1
        else
            warn "one finished run: no scaling-law plot (it needs at least two)"
        fi
        "$scfm" plot "${finished[@]}" -o "$sweep/curves.png" || plot_failed=1
    fi
fi
if ((${#failed[@]})); then
    warn "${#failed[@]} of $total run(s) failed: ${failed[*]}"
    exit 1
fi
((plot_failed == 0)) || { warn "plotting failed (is gnuplot on PATH? --no-plot skips it)"; exit 1; }
((dry_run)) || note "$total run(s) done in $sweep"
