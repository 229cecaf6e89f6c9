#!/usr/bin/env bash
# Runs `scfm train` on this machine: one process with every core as OpenMP
# threads, or RANKS MPI ranks (mpirun) that share the cores, each rank bound to
# its own cores. See docs/launch.md.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: launch/local.sh [-n RANKS] [--dry-run] CONFIG [scfm train args...]

Runs `scfm train CONFIG [args...]` on this machine. Everything after CONFIG
goes to scfm train unchanged (--set section.key=value, --resume, --quiet).

  -n, --ranks RANKS   MPI ranks (default 1: plain scfm, no mpirun). With more,
                      `mpirun -np RANKS` with OMP_NUM_THREADS = cores / RANKS,
                      each rank mapped to its own cores (Open MPI:
                      --map-by ppr:R:socket:PE=T or slot:PE=T, --bind-to core)
  --dry-run           print the command and the thread settings, run nothing
  -h, --help          this text

Environment:
  SCFM                the scfm binary (default: build/scfm of this checkout)
  THREADS             OpenMP threads per rank (default: cores / RANKS, at least 1)
  MPIRUN              the MPI launcher (default: mpirun)
  MPIRUN_ARGS         extra launcher arguments, split on spaces (a hostfile, ...)
  OPENBLAS_CORETYPE   passed through to every rank when set
  OMP_PROC_BIND, OMP_PLACES   default close and cores

SIGTERM or SIGUSR1 to this script reaches every rank as SIGUSR1: the run
writes a checkpoint and the script exits with code 3; continue with --resume.
Exit codes are scfm's: 0 done, 1 failure, 2 usage or configuration, 3 stopped.
EOF
}
die() { echo "launch/local.sh: $*" >&2; exit 2; }

ranks=1 dry_run=0
while [[ $# -gt 0 ]]; do
    case $1 in
        -h | --help) usage; exit 0 ;;
        -n | --ranks) [[ $# -ge 2 ]] || die "$1 needs a value"; ranks=$2; shift 2 ;;
        -n[0-9]*) ranks=${1#-n}; shift ;;
        --ranks=*) ranks=${1#--ranks=}; shift ;;
        --dry-run) dry_run=1; shift ;;
        --) shift; break ;;
        -*) usage >&2; die "unknown option '$1' (scfm train's options go after CONFIG)" ;;
        *) break ;;
    esac
done
[[ $# -ge 1 ]] || { usage >&2; die "missing CONFIG"; }
[[ $ranks =~ ^[1-9][0-9]*$ ]] || die "RANKS must be a positive integer, got '$ranks'"
config=$1
shift
[[ -r $config ]] || die "$config: cannot read"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
scfm=${SCFM:-$here/build/scfm}
[[ -x $scfm ]] || die "$scfm not found; build first (cmake -S . -B build && cmake --build build) or set SCFM"

# Usable physical cores (this process's affinity mask, hyperthreads counted
# once) and sockets; without lscpu, nproc and one socket.
topology() {
    local allowed
    allowed=$(awk '/^Cpus_allowed_list:/ { print $2 }' /proc/self/status 2>/dev/null || true)
    if [[ -n $allowed ]] && command -v lscpu >/dev/null; then
        lscpu -p=CPU,CORE,SOCKET 2>/dev/null | awk -F, -v list="$allowed" '
            BEGIN { n = split(list, part, ",")
                    for (i = 1; i <= n; i++) {
                        if (split(part[i], r, "-") == 2) { for (c = r[1] + 0; c <= r[2] + 0; c++) ok[c] = 1 }
                        else ok[part[i] + 0] = 1 } }
            /^#/ { next }
            ($1 + 0) in ok { if ($2 == "") $2 = "cpu" $1; core[$3 "," $2] = 1; sock[$3] = 1 }
            END { for (k in core) nc++; for (k in sock) ns++; if (nc > 0) print nc, ns }'
    fi
}
read -r cores sockets < <(topology || true) || true
[[ ${cores:-} =~ ^[1-9][0-9]*$ ]] || cores=$(nproc 2>/dev/null || echo 1)
[[ ${sockets:-} =~ ^[1-9][0-9]*$ ]] || sockets=1

threads=${THREADS:-$((cores / ranks))}
((threads >= 1)) || threads=1
[[ $threads =~ ^[1-9][0-9]*$ ]] || die "THREADS must be a positive integer, got '$threads'"
export OMP_NUM_THREADS=$threads
export OMP_PROC_BIND=${OMP_PROC_BIND:-close} OMP_PLACES=${OMP_PLACES:-cores}

if ((ranks == 1)); then
    cmd=("$scfm" train "$config" "$@")
else
    mpirun=${MPIRUN:-mpirun}
    command -v "$mpirun" >/dev/null || die "$mpirun not found (install Open MPI, or set MPIRUN)"
    cmd=("$mpirun" -np "$ranks")
    if "$mpirun" --version 2>&1 | grep -q "Open MPI"; then
        if ((ranks * threads > cores)); then
            echo "launch/local.sh: $ranks ranks x $threads threads > $cores cores: oversubscribed, not bound" >&2
            cmd+=(--oversubscribe --bind-to none)
        elif ((ranks % sockets == 0 && (ranks / sockets) * threads <= cores / sockets)); then
            # the same number of ranks on every socket, each on its own THREADS cores
            cmd+=(--map-by "ppr:$((ranks / sockets)):socket:PE=$threads" --bind-to core)
        else
            cmd+=(--map-by "slot:PE=$threads" --bind-to core)
        fi
        cmd+=(-x OMP_NUM_THREADS -x OMP_PROC_BIND -x OMP_PLACES)
        [[ -z ${OPENBLAS_CORETYPE:-} ]] || cmd+=(-x OPENBLAS_CORETYPE)
    else
        echo "launch/local.sh: $mpirun is not Open MPI: no mapping or binding flags (add them with MPIRUN_ARGS)" >&2
    fi
    if [[ -n ${MPIRUN_ARGS:-} ]]; then
        read -r -a extra <<<"$MPIRUN_ARGS"
        cmd+=("${extra[@]}")
    fi
    cmd+=("$scfm" train "$config" "$@")
fi

echo "launch/local.sh: OMP_NUM_THREADS=$OMP_NUM_THREADS ($cores cores, $sockets socket(s), $ranks rank(s))${OPENBLAS_CORETYPE:+ OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE}" >&2
echo "launch/local.sh: $(printf '%q ' "${cmd[@]}")" >&2
((dry_run == 0)) || exit 0
((ranks > 1)) || exec "${cmd[@]}"

# mpirun ends the job with exit code 1 on SIGTERM but forwards SIGUSR1 to the
# ranks, which then checkpoint and exit 3; so either signal goes on as SIGUSR1.
"${cmd[@]}" &
pid=$!
trap 'kill -USR1 "$pid" 2>/dev/null || true' TERM USR1
trap 'kill -TERM "$pid" 2>/dev/null || true' INT
set +e
while kill -0 "$pid" 2>/dev/null; do wait "$pid"; done
wait "$pid"
rc=$?
exit "$rc"
