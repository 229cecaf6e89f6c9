#!/usr/bin/env bash
# The first run of scfm's CUDA backend on a GPU machine, as one command that
# fits a short device lease (under 8 minutes): record the machine, put the
# carried dependencies on the search paths if the system lacks them, build
# with CUDA, run the GPU tests, run the GPU benchmark against PyTorch, and
# summarise. See bench/README.md, "GPU check".
#
#   bash scripts/gpu_check.sh           # from the repository root
#
# Logs go to ${OUT:-gpu-check-out} (at most 8 files, so that the device
# tool brings all of them back): env.log, deps.log, build.log, ctest.log,
# ctest-full.log (CTest's LastTest.log: every test's whole output),
# bench.log, bench.json, summary.txt. A failed step does not stop the
# steps that do not need it: the benchmark runs when a test fails.
# Exit status 0 when no step failed.
#
# Environment:
#   SCFM_USE_CARRIED_DEPS  auto (default): use .gpu-deps (scripts/gpu_deps.sh)
#                          when the system lacks one of the dependencies;
#                          1: always (to test the carried tree on a machine
#                          that has them all); 0: never
#   SCFM_GPU_CHECK_BUDGET_S  seconds for the whole script (default 460); the
#                          build, the tests and the benchmark get time
#                          limits that keep it inside
#   SCFM_CUDA_ARCH         CUDA architecture when nvidia-smi cannot tell (90)
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo" || exit 1
out=${OUT:-$repo/gpu-check-out}
mkdir -p "$out" || exit 1
out=$(cd "$out" && pwd)
build=$repo/build-gpu
deps=$repo/.gpu-deps
arch=x86_64-linux-gnu
budget=${SCFM_GPU_CHECK_BUDGET_S:-460}
t0=$SECONDS

# mpirun refuses root unless told; the device machine runs commands as root.
# It also refuses to start, even on one node, when neither ssh nor rsh is
# installed (as in many images), unless told to launch locally (isolated).
# Single-copy (CMA) transfers between ranks need ptrace rights that a VM or
# sandbox may withhold, and Open MPI aborts mid-run when they fail, so use
# plain copy-in/copy-out through shared memory.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_plm=isolated OMPI_MCA_btl_vader_single_copy_mechanism=none

summary=()
remaining() { echo $((budget - (SECONDS - t0))); }
note() { printf '[gpu_check %4ds] %s\n' $((SECONDS - t0)) "$*"; }
# record STEP STATUS DETAIL: one line of the summary
record() { summary+=("$(printf '%-10s %-5s %s' "$1" "$2" "$3")"); note "$1: $2 $3"; }
# limit MAX RESERVE FLOOR: a step's time limit: at most MAX, leaving RESERVE
# seconds of the budget to the steps after it, but never under FLOOR (a
# step that cannot finish is of no use to the ones after it either).
limit() { local l=$(($(remaining) - $2)); ((l > $1)) && l=$1; ((l < $3)) && l=$3; echo "$l"; }
# A zero-size file is no library (and lets a test hide the system's copies).
system_has_lib() {
  local so=$1 p
  for p in $({ ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null; } | awk -v s="$so" '$1 == s && /x86-64/ {print $NF}') \
           /lib/$arch/$so /usr/lib/$arch/$so /lib64/$so /usr/lib64/$so; do
    [[ -s $p ]] && return 0
  done
  return 1
}
unxz_to() { # FILE.xz DEST: xz where installed, else Python's lzma
  if command -v xz >/dev/null; then xz -dc "$1" >"$2"
  else python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1" "$2"
  fi
}

# ---------------------------------------------------------------- a) machine
{
  set -x
  date -u
  uname -a
  nproc
  free -g
  cat /etc/os-release
  ldd --version | head -1
  nvidia-smi
  nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv
  command -v nvcc || ls -d /usr/local/cuda*/bin/nvcc
  "$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)" --version
  command -v python3 cmake ninja gcc pkg-config mpicc h5pcc
  python3 --version
  python3 -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""); print("transformers", transformers.__version__)'
  python3 -m pip list 2>/dev/null | grep -iE '^(torch|transformers|nvidia-nccl|nvidia-cublas|mpi4py|numpy) '
  cmake --version | head -1
  ninja --version
  gcc --version | head -1
  set +x
} >"$out/env.log" 2>&1
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
record env INFO "${gpu:-no GPU visible (nvidia-smi)}; $(ldd --version 2>/dev/null | head -1 | grep -o '[0-9.]*$' | sed 's/^/glibc /')"

# --------------------------------------------------------- b) dependencies
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
# A stale cache would keep the libraries found by an earlier run (another
# mode, another machine); the objects stay, so an unchanged tree rebuilds
# nothing. A change of generator needs an empty build folder.
if [[ -f $build/CMakeCache.txt ]]; then
  grep -q "^CMAKE_GENERATOR:INTERNAL=${generator[1]:-Unix Makefiles}\$" "$build/CMakeCache.txt" || rm -rf "$build"
  rm -f "$build/CMakeCache.txt"
fi
# What is unpacked at run time goes into the build folder, which is never
# carried: the carried tree stays as gpu_deps.sh left it.
run=$build/_deps
cmake_args=()
deps_ok=1
{
  # nvcc is often outside PATH in CUDA images.
  if ! command -v nvcc >/dev/null && [[ -x /usr/local/cuda/bin/nvcc ]]; then
    export PATH=/usr/local/cuda/bin:$PATH
  fi
  command -v nvcc >/dev/null && cmake_args+=(-DCMAKE_CUDA_COMPILER="$(command -v nvcc)") ||
    { echo "nvcc not found"; deps_ok=0; }

  # What the system has, the way CMake will look for it
  # (cmake/ScfmDependencies.cmake).
  lacks=()
  command -v mpicc >/dev/null && mpicc --showme:version >/dev/null 2>&1 || lacks+=("Open MPI (mpicc)")
  command -v h5pcc >/dev/null && h5pcc -showconfig 2>/dev/null | grep 'Parallel HDF5: yes' >/dev/null || lacks+=("parallel HDF5 (h5pcc)")
  [[ -s /usr/lib/$arch/openblas-openmp/libopenblas.so ]] || lacks+=("OpenBLAS, OpenMP build")
  command -v pkg-config >/dev/null && pkg-config --exists libconfig || lacks+=(libconfig)
  command -v pkg-config >/dev/null && pkg-config --exists cunit || lacks+=(CUnit)
  [[ -s /usr/include/zlib.h ]] || lacks+=("zlib headers")
  echo "the system lacks: ${lacks[*]:-nothing}"
  mode=${SCFM_USE_CARRIED_DEPS:-auto}
  case $mode in
    1) carried=1 ;;
    0) carried=0 ;;
    *) carried=$((${#lacks[@]} > 0)) ;;
  esac
  if ((carried)) && [[ ! -d $deps/root ]]; then
    echo "$deps/root is missing: run scripts/gpu_deps.sh here and carry .gpu-deps"
    carried=0 deps_ok=0
  fi
  echo "SCFM_USE_CARRIED_DEPS=$mode: using the carried tree: $carried"

  if ((carried)); then
    R=$deps/root/usr
    # Debian 12 built these; an older glibc cannot load them.
    need=$(awk '$1 == "glibc_needed" {print $2}' "$deps/MANIFEST" 2>/dev/null)
    have=$(ldd --version 2>/dev/null | head -1 | grep -o '[0-9]*\.[0-9]*$')
    if [[ -n $need && -n $have ]] && [[ $(printf '%s\n%s\n' "$need" "$have" | sort -V | head -1) != "$need" ]]; then
      echo "WARNING: the carried libraries need glibc $need, this system has $have"
      deps_ok=0
    fi
    rm -rf "$run" && mkdir -p "$run/openblas" "$run/lib"
    # OpenBLAS travels compressed (36 MB unpacked), with its links.
    blas_xz=$(ls "$R"/lib/$arch/openblas-openmp/libopenblas*.so.xz 2>/dev/null | head -1)
    blas=$run/openblas/$(basename "${blas_xz%.xz}")
    if [[ -n $blas_xz ]] && unxz_to "$blas_xz" "$blas"; then
      ln -s "${blas##*/}" "$run/openblas/libopenblas.so.0" && ln -s "${blas##*/}" "$run/openblas/libopenblas.so"
    else
      echo "could not unpack OpenBLAS (${blas_xz:-no .xz in $R/lib/$arch/openblas-openmp})"; deps_ok=0
    fi
    # Fallback libraries: unpacked under their soname only where the system
    # has none, so that Python, PyTorch and the CUDA tools keep their own.
    unpacked=()
    while IFS= read -r link; do
      so=${link##*/}
      target=$(dirname "$link")/$(readlink "$link")
      system_has_lib "$so" && continue
      unxz_to "$target.xz" "$run/lib/$so" && unpacked+=("$so") || { echo "could not unpack $target.xz"; deps_ok=0; }
    done < <(find "$deps/fallback" -type l -name 'lib*.so.*')
    while IFS= read -r f; do # libraries whose file name is their soname (libssl.so.3)
      so=${f##*/}; so=${so%.xz}
      [[ $so =~ \.so\.[0-9]+$ ]] || continue
      [[ -n $(find "$deps/fallback" -type l -name "$so") ]] && continue
      system_has_lib "$so" && continue
      unxz_to "$f" "$run/lib/$so" && unpacked+=("$so") || { echo "could not unpack $f"; deps_ok=0; }
    done < <(find "$deps/fallback" -type f -name 'lib*.so.*.xz')
    echo "fallback libraries this system lacks, unpacked into $run/lib: ${unpacked[*]:-none}"

    export PATH=$R/bin:$PATH
    export LD_LIBRARY_PATH=$R/lib/$arch/openmpi/lib:$R/lib/$arch:$R/lib/$arch/hdf5/openmpi:$run/openblas:$R/lib/$arch/pmix2/lib:$run/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    export PKG_CONFIG_PATH=$R/lib/$arch/pkgconfig:$R/share/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
    export CMAKE_PREFIX_PATH=$R${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}
    # Open MPI was built for /usr: OPAL_PREFIX moves every directory it
    # derives from the prefix (wrapper data, components, help files); the
    # configuration directory was set apart (/etc/openmpi) and moves alone.
    # Debian's PMIx (its own prefix, .../pmix2) has an absolute libdir, from
    # which its components' directory derives: PMIX_LIBDIR moves it
    # (PMIX_MCA_mca_base_component_path does not). hwloc's plugins (not
    # carried) are looked for in a fixed system directory: point it away,
    # so that no other hwloc's plugins load into this one.
    export OPAL_PREFIX=$R OPAL_SYSCONFDIR=$deps/root/etc/openmpi
    export PMIX_PREFIX=$R/lib/$arch/pmix2 PMIX_LIBDIR=$R/lib/$arch/pmix2/lib
    export HWLOC_PLUGINS_PATH=$R/lib/$arch/hwloc
    # CMake looks for the OpenMP build of OpenBLAS and for zlib under /usr
    # only, so name them; the zlib runtime is the system's own (its soname is
    # in the base set gpu_deps.sh relies on), the headers are carried.
    zlib_so=$({ ldconfig -p 2>/dev/null || /sbin/ldconfig -p; } | awk '$1 == "libz.so.1" && /x86-64/ {print $NF; exit}')
    cmake_args+=(-DMPI_C_COMPILER="$R/bin/mpicc" -DHDF5_C_COMPILER_EXECUTABLE="$R/bin/h5pcc"
      -DPKG_CONFIG_EXECUTABLE="$R/bin/pkg-config"
      -DSCFM_OPENBLAS_LIBRARY="$run/openblas/libopenblas.so"
      -DSCFM_CBLAS_INCLUDE_DIR="$R/include/$arch/openblas-openmp"
      -DZLIB_INCLUDE_DIR="$R/include" -DZLIB_LIBRARY="${zlib_so:-/usr/lib/$arch/libz.so.1}")
    env | grep -E '^(PATH|LD_LIBRARY_PATH|PKG_CONFIG_PATH|CMAKE_PREFIX_PATH|OPAL_[A-Z]*|PMIX_[A-Z]*|HWLOC_[A-Z_]*|OMPI_[A-Za-z_]*)=' | sort
  fi

  # NCCL from the pip package PyTorch uses (nvidia-nccl-cu13) when it is
  # there: its libnccl.so.2 has no libnccl.so link, so name the file.
  nccl_dirs=$(python3 -c 'import nvidia, sys; print("\n".join(nvidia.__path__))' 2>/dev/null)
  nccl_h=$(for d in $nccl_dirs; do find "$d" -maxdepth 4 -name nccl.h; done 2>/dev/null | head -1)
  nccl_so=$(for d in $nccl_dirs; do find "$d" -maxdepth 4 -name 'libnccl.so*'; done 2>/dev/null | sort | head -1)
  if [[ -n $nccl_h && -n $nccl_so ]]; then
    echo "NCCL from the Python package: $nccl_so, $(dirname "$nccl_h")"
    cmake_args+=(-DSCFM_NCCL_LIBRARY="$nccl_so" -DSCFM_NCCL_INCLUDE_DIR="$(dirname "$nccl_h")")
  else
    echo "no NCCL Python package (nvidia-nccl-cu13): CMake searches the CUDA toolkit"
  fi

  # What the build and the tests will use, and two ranks started.
  set -x
  command -v mpicc mpirun pkg-config h5pcc
  mpicc --showme
  mpirun --version | head -1
  h5pcc -showconfig | grep -E 'HDF5 Version|Parallel HDF5'
  pkg-config --modversion libconfig cunit
  { set +x; } 2>/dev/null
  timeout 60 mpirun --oversubscribe -np 2 hostname
  rc=$?
  echo "mpirun --oversubscribe -np 2 hostname: exit $rc"
  ((rc == 0)) || deps_ok=0
  if ((carried)); then
    for lib in "$R"/lib/$arch/hdf5/openmpi/libhdf5.so "$run"/openblas/libopenblas.so.0 \
               "$R"/lib/$arch/libmpi.so.40 "$R"/lib/$arch/libconfig.so.9 "$R"/lib/$arch/libcunit.so.1; do
      nf=$(ldd "$lib" 2>&1 | grep 'not found') && { echo "ldd $lib: $nf"; deps_ok=0; }
    done
  fi
  echo "deps_ok=$deps_ok"
} >"$out/deps.log" 2>&1
# The exports above ran in this shell (a { } group, not a subshell).
if ((deps_ok)); then
  record deps PASS "$( ((carried)) && echo "carried .gpu-deps (SCFM_USE_CARRIED_DEPS=$mode; the system lacks: ${lacks[*]:-nothing})" || echo "system libraries")"
else
  record deps FAIL "see deps.log ($( ((carried)) && echo carried || echo system) libraries)"
fi

# ------------------------------------------------------ c) configure, build
cuda_arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
[[ $cuda_arch =~ ^[0-9]+$ ]] || cuda_arch=${SCFM_CUDA_ARCH:-90}
jobs=$(nproc)
(
  show() { echo "+ $*"; "$@"; }
  show timeout "$(limit 240 200 60)" cmake -S "$repo" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DSCFM_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$cuda_arch" "${cmake_args[@]}" &&
  show timeout "$(limit 480 200 120)" cmake --build "$build" -j "$jobs"
  rc=$?
  echo "build exit: $rc"
  # Where each dependency was found, and what the libraries load.
  grep -E '^(MPI_C_COMPILER|MPI_C_HEADER_DIR|HDF5_C_LIBRARY_hdf5|HDF5_C_COMPILER_EXECUTABLE|SCFM_OPENBLAS_LIBRARY|SCFM_CBLAS_INCLUDE_DIR|SCFM_NCCL_[A-Z_]*|ZLIB_[A-Z_]*|PKG_CONFIG_EXECUTABLE|pkgcfg_lib_[A-Za-z_]*|CMAKE_CUDA_ARCHITECTURES|CMAKE_CUDA_COMPILER):' "$build/CMakeCache.txt"
  for f in "$build"/libscfm.so "$build"/libscfm_cuda.so "$build"/scfm; do
    [[ -e $f ]] && { echo "ldd $f:"; ldd "$f"; }
  done
  exit $rc
) >"$out/build.log" 2>&1
build_rc=$?
if ((build_rc == 0)); then
  record build PASS "sm_$cuda_arch, $jobs jobs"
else
  record build FAIL "exit $build_rc$( ((build_rc == 124)) && echo ' (time limit)'), see build.log"
fi

# ------------------------------------------------------------- d) GPU tests
if ((build_rc == 0)); then
  t=$(limit 180 100 60)
  echo "ctest -L gpu, time limit ${t}s" >"$out/ctest.log"
  timeout --kill-after=10 "$t" ctest --test-dir "$build" -L gpu --output-on-failure >>"$out/ctest.log" 2>&1
  ctest_rc=$?
  cp "$build/Testing/Temporary/LastTest.log" "$out/ctest-full.log" 2>/dev/null
  n_pass=$(grep -cE 'Test +#[0-9]+: .* Passed' "$out/ctest.log")
  n_skip=$(grep -cE '\*\*\*Skipped|Not Run' "$out/ctest.log")
  n_fail=$(grep -cE 'Test +#[0-9]+: .*(\*\*\*Failed|\*\*\*Timeout|\*\*\*Exception|Subprocess aborted)' "$out/ctest.log")
  counts="$n_pass passed, $n_fail failed, $n_skip skipped"
  if ((ctest_rc == 124 || ctest_rc == 137)); then record tests FAIL "time limit ${t}s hit ($counts so far)"
  elif ((ctest_rc != 0 || n_fail > 0)); then record tests FAIL "$counts"
  elif ((n_pass == 0)); then record tests SKIP "$counts (no CUDA device?)"
  else record tests PASS "$counts"
  fi
else
  echo "not run: the build failed" >"$out/ctest.log"
  record tests SKIP "the build failed"
fi

# ------------------------------------------------------------- e) benchmark
if ((build_rc == 0)); then
  t=$(limit 600 5 60)
  {
    echo "train_vs_pytorch.py --cuda --rounds 3, time limit ${t}s"
    [[ -n $gpu ]] || echo "note: no GPU visible to nvidia-smi; the CUDA benchmark will fail"
    PYTHONUNBUFFERED=1 timeout --kill-after=10 "$t" \
      python3 bench/train_vs_pytorch.py --build "$build" --cuda --rounds 3 --json "$out/bench.json"
  } >"$out/bench.log" 2>&1
  bench_rc=$?
  if ((bench_rc == 0)) && [[ -s $out/bench.json ]]; then
    record bench PASS "see bench.log (table) and bench.json"
  elif ((bench_rc == 124 || bench_rc == 137)); then
    record bench FAIL "time limit ${t}s hit; per-run lines in bench.log"
  else
    record bench FAIL "exit $bench_rc: $(grep -m1 -E '^(bench_train|train_vs_pytorch.py|pytorch_train.py): |Error' "$out/bench.log" | cut -c1-200)"
  fi
else
  echo "not run: the build failed" >"$out/bench.log"
  record bench SKIP "the build failed"
fi

# --------------------------------------------------------------- f) summary
# The device tool copies the working tree without .git: no commit there.
if commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null); then
  git -C "$repo" diff --quiet HEAD 2>/dev/null || commit+=" with uncommitted changes"
else
  commit="unknown (no git metadata)"
fi
{
  echo "scfm GPU check, $(date -u +%Y-%m-%dT%H:%MZ), $((SECONDS - t0)) s, commit $commit"
  printf '%s\n' "${summary[@]}"
} >"$out/summary.txt"
echo
cat "$out/summary.txt"
# The device tool returns only the end of the output: show why steps failed.
for step in deps:deps.log build:build.log tests:ctest.log bench:bench.log; do
  if printf '%s\n' "${summary[@]}" | grep -E "^${step%%:*} +FAIL" >/dev/null; then
    echo; echo "---- last lines of ${step#*:}"; tail -n 25 "$out/${step#*:}"
  fi
done
! printf '%s\n' "${summary[@]}" | grep -E '^[a-z]+ +FAIL' >/dev/null
