#!/usr/bin/env bash
# Gathers scfm's system dependencies as unpacked Debian packages in
# .gpu-deps/, for a GPU machine that has the CUDA toolkit, PyTorch and a C
# compiler but no Open MPI, OpenBLAS, parallel HDF5, libconfig or CUnit, no
# apt and no network. Run it here (Debian 12, root, apt reachable); the
# device tool then carries .gpu-deps to that machine, where
# scripts/gpu_check.sh puts it on the search paths. See bench/README.md,
# "GPU check".
#
#   bash scripts/gpu_deps.sh          # rebuilds .gpu-deps from scratch
#
# What comes out (all under .gpu-deps, ignored through .git/info/exclude):
#   root/      the packages scfm builds and runs against (Open MPI with its
#              runtime, parallel HDF5, OpenBLAS, libconfig, CUnit, zlib's
#              headers, pkg-config), unpacked with dpkg -x and made
#              relocatable (h5pcc, .pc files; Open MPI itself relocates
#              through OPAL_PREFIX at run time);
#   fallback/  general-purpose libraries they need (libcurl and its
#              closure, libgfortran, ...) that the GPU machine may or may
#              not have, xz-compressed: gpu_check.sh unpacks only the
#              missing ones onto the search path, so that Python, PyTorch
#              and the CUDA tools keep the system's own copies;
#   MANIFEST   package versions, the newest glibc symbol version needed.
# The .debs are deleted: the device tool carries at most 64 MiB in all.
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest=$repo/.gpu-deps
root=$dest/root
fallback=$dest/fallback
arch=x86_64-linux-gnu

# The packages scfm links or runs directly, and what Open MPI needs at run
# time to start ranks on one node (PMIx, hwloc, libevent). Left out on
# purpose: Open MPI's network transports (UCX, libfabric, verbs, PSM and
# their plugins, below): one node needs only shared memory and TCP, and
# they would bring in InfiniBand and RDMA stacks for nothing.
own_pkgs=(
  libopenmpi3 libopenmpi-dev openmpi-bin openmpi-common
  libpmix2 libhwloc15 libevent-core-2.1-7 libevent-pthreads-2.1-7
  libhdf5-openmpi-103-1 libhdf5-openmpi-dev libsz2 libaec0
  libopenblas0-openmp libopenblas-openmp-dev
  libconfig9 libconfig-dev libcunit1 libcunit1-dev
  zlib1g-dev pkgconf pkgconf-bin libpkgconf3
)
# Libraries that those need and that a CUDA + PyTorch image may lack: HDF5
# links libcurl (its ROS3 driver) and libcrypto, OpenBLAS libgfortran, PMIx
# libmunge, hwloc libudev. The list is the closure of their DT_NEEDED
# entries, checked at the end of this script.
fallback_pkgs=(
  libgfortran5 libquadmath0 libgomp1 libmunge2 libudev1
  libcurl4 libssl3 libnghttp2-14 libidn2-0 libunistring2 librtmp1
  libgnutls30 libhogweed6 libnettle8 libgmp10 libp11-kit0 libffi8 libtasn1-6
  libssh2-1 libpsl5 libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0
  libkeyutils1 libcom-err2 libldap-2.5-0 libsasl2-2 libzstd1 libbrotli1
)
# Present on any glibc system with a C and C++ toolchain (nvcc needs one);
# never carried, so that the GPU machine's own copies are the ones used.
base_sonames=" libc.so.6 libm.so.6 libdl.so.2 libpthread.so.0 librt.so.1 libresolv.so.2 libutil.so.1 "
base_sonames+="ld-linux-x86-64.so.2 libgcc_s.so.1 libstdc++.so.6 libz.so.1 "

say() { printf '%s\n' "$*"; }
die() { printf 'gpu_deps.sh: %s\n' "$*" >&2; exit 1; }

. /etc/os-release 2>/dev/null || true
[[ ${VERSION_CODENAME:-} == bookworm ]] ||
  say "warning: written for Debian 12 (bookworm), this is ${PRETTY_NAME:-unknown}: package names may differ"
command -v apt-get >/dev/null && command -v dpkg >/dev/null || die "needs apt-get and dpkg (Debian)"

# Ignored locally, without touching the shared .gitignore: the unpacked
# tree and the default output folder of gpu_check.sh.
exclude=$(git -C "$repo" rev-parse --git-path info/exclude 2>/dev/null) || die "not a git checkout: $repo"
[[ $exclude == /* ]] || exclude=$repo/$exclude
mkdir -p "$(dirname "$exclude")"
for pattern in /.gpu-deps/ /gpu-check-out/; do
  grep -qxF "$pattern" "$exclude" 2>/dev/null || echo "$pattern" >>"$exclude"
done

# apt-get download needs current package lists; a failed update is not
# fatal as long as the lists already hold the packages.
apt-get update -qq || say "warning: apt-get update failed; using the package lists as they are"

rm -rf "$dest"
mkdir -p "$dest/debs/own" "$dest/debs/fallback" "$root" "$fallback"
(cd "$dest/debs/own" && apt-get download -q "${own_pkgs[@]}") || die "apt-get download failed (own packages)"
(cd "$dest/debs/fallback" && apt-get download -q "${fallback_pkgs[@]}") || die "apt-get download failed (fallback packages)"
for deb in "$dest"/debs/own/*.deb; do dpkg -x "$deb" "$root" || die "dpkg -x $deb"; done
for deb in "$dest"/debs/fallback/*.deb; do dpkg -x "$deb" "$fallback" || die "dpkg -x $deb"; done
{
  echo "# made by scripts/gpu_deps.sh on $(date -u +%Y-%m-%dT%H:%MZ), ${PRETTY_NAME:-?}"
  for kind in own fallback; do
    for deb in "$dest"/debs/$kind/*.deb; do
      echo "$kind $(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version)"
    done
  done
} >"$dest/MANIFEST"
rm -rf "$dest/debs"

# --- Trim: documentation, static libraries, and the Fortran, C++, Java,
# OpenSHMEM and network-transport parts that scfm never loads.
for tree in "$root" "$fallback"; do
  rm -rf "$tree"/usr/share/{doc,man,info,lintian,bug,doc-base} "$tree"/etc/{init.d,default,logcheck}
  find "$tree" -name '*.a' -delete
done
rm -rf "$fallback"/usr/bin "$fallback"/usr/sbin "$fallback"/sbin "$fallback"/usr/share "$fallback"/etc "$fallback"/lib/udev
L=$root/usr/lib/$arch
rm -rf "$L"/fortran "$L"/openmpi/lib/pkgconfig/ompi-{f77,f90,fort,cxx}.pc "$L"/pkgconfig/ompi-{fort,cxx}.pc
rm -f "$L"/libmpi_{cxx,java,mpifh,usempi_ignore_tkr,usempif08}.so* "$L"/openmpi/lib/libmpi_{cxx,java,mpifh,usempi_ignore_tkr,usempif08}.so
rm -f "$L"/liboshmem.so* "$L"/openmpi/lib/liboshmem.so "$L"/libompitrace.so* "$L"/openmpi/lib/libompitrace.so
rm -f "$L"/libmca_common_{ofi,ucx,verbs}.so* "$L"/openmpi/lib/libmca_common_{ofi,ucx,verbs}.so
rm -f "$L"/openmpi/lib/openmpi3/mca_{atomic,memheap,scoll,spml,sshmem}_*.so
rm -f "$L"/openmpi/lib/openmpi3/mca_{btl_ofi,btl_openib,mtl_ofi,mtl_psm,mtl_psm2,pml_ucx,osc_ucx,reachable_netlink}.so
rm -f "$L"/openmpi/lib/ompi_monitoring_prof.so
# Open MPI's headers: mpi.h and what it includes (mpi-ext.h, the C++
# bindings' headers); the 5 MB of internal headers are for building
# Open MPI components, not MPI programs.
inc=$L/openmpi/include
find "$inc/openmpi" -mindepth 1 -maxdepth 1 ! -name mpiext ! -name ompi -exec rm -rf {} +
find "$inc/openmpi/ompi" -mindepth 1 -maxdepth 1 ! -name mpi -exec rm -rf {} +
find "$inc/openmpi/ompi/mpi" -mindepth 1 -maxdepth 1 ! -name cxx -exec rm -rf {} +
rm -rf "$inc"/{mpif*.h,shmem*,pshmem*,openshmem,mpp}
rm -f "$root"/usr/bin/{mpiCC,mpic++,mpicxx,mpif77,mpif90,mpifort}.openmpi "$root"/usr/bin/{opalc++,mpijavac,mpijavac.pl,h5pfc.openmpi,h5c++.openmpi}
rm -f "$root"/usr/bin/{osh,shmem}* "$root"/usr/bin/oshmem_info
rm -f "$root"/usr/share/openmpi/{mpiCC,mpic++,mpicxx,mpif77,mpif90,mpifort,osh,shmem,opalc++}*-wrapper-data.txt
rm -rf "$root"/usr/share/openmpi/amca-param-sets "$root"/usr/share/openmpi/openmpi-valgrind.supp
# HDF5: the C library only (no high-level, C++ or Fortran libraries are
# carried; their development links would dangle), C headers only.
rm -f "$root"/usr/include/hdf5/openmpi/*.mod "$root"/usr/include/hdf5/openmpi/H5*{Cpp,Type,Prop,Exception,Library,Location,Object,File,Group,Attribute,DataSet,DataSpace,IdComponent,Include,CommonFG,Classes,AbstractDs,PacketTable,f90i,f90i_gen}*.h
# OpenBLAS: scfm links libopenblas.so itself; the BLAS/LAPACK alternatives
# (libblas.so.3, liblapack.so.3: 8 MB) are never used.
rm -f "$L"/openblas-openmp/lib{blas,lapack}.so*
# Development links whose libraries were not carried.
find "$root" "$fallback" -xtype l -delete

# --- Make the tree relocatable. Debian's alternatives (mpicc, mpirun, h5pcc)
# are links that dpkg -x does not create.
for tool in mpicc mpirun mpiexec; do ln -sfn "$tool.openmpi" "$root/usr/bin/$tool"; done
ln -sfn h5pcc.openmpi "$root/usr/bin/h5pcc"
# pkg-config files: paths relative to the file itself (${pcfiledir}, known
# to pkg-config and pkgconf), so they hold wherever the tree lands.
while IFS= read -r -d '' pc; do
  rel=$(realpath --relative-to="$(dirname "$pc")" "$root/usr")
  sed -i -e "s|^prefix=/usr\$|prefix=\${pcfiledir}/$rel|" \
         -e "s|^\([a-z_]*\)=/usr/|\1=\${pcfiledir}/$rel/|" "$pc"
done < <(find "$root" -name '*.pc' -print0)
# h5pcc (FindHDF5 runs it to compile a test program and to read the flags):
# its prefix from its own location, shared libraries by default (the static
# ones are not carried), no high-level library, and none of the static
# link's extra libraries (the shared libhdf5 names its own).
h5pcc=$root/usr/bin/h5pcc.openmpi
sed -i -e 's|^prefix="/usr"$|prefix="$(cd "$(dirname "$0")/.." \&\& pwd)"|' \
       -e 's|^HL="hl"$|HL=""|' \
       -e 's|^STATIC_AVAILABLE="yes"$|STATIC_AVAILABLE="no"|' \
       -e 's|^H5BLD_LIBS=.*|H5BLD_LIBS="-lm"|' \
       -e 's|^CCBASE="mpicc.openmpi"$|CCBASE="${prefix}/bin/mpicc.openmpi"|' \
       -e 's|^CLINKERBASE="mpicc.openmpi"$|CLINKERBASE="${prefix}/bin/mpicc.openmpi"|' "$h5pcc"
grep -q 'prefix="$(cd' "$h5pcc" && grep -q '^STATIC_AVAILABLE="no"' "$h5pcc" ||
  die "h5pcc.openmpi did not take the relocation edits (a newer HDF5 package?)"

# --- Checks, on the uncompressed tree.
elf_files() { find "$@" -type f \( -name '*.so*' -o -path '*/bin/*' \) -exec sh -c \
  'for f; do [ "$(head -c4 "$f" | od -An -c | tr -d " ")" = "177ELF" ] && echo "$f"; done' _ {} +; }
mapfile -t elves < <(elf_files "$root" "$fallback")
# 1. Every DT_NEEDED of every carried ELF file is carried or in the base
# set: what holds on a machine that has none of these packages.
provided=$(find "$root" "$fallback" \( -type f -o -type l \) -name 'lib*.so*' -printf '%f\n' | sort -u)
missing=0
for f in "${elves[@]}"; do
  for so in $(readelf -d "$f" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    [[ $base_sonames == *" $so "* ]] && continue
    grep -qxF "$so" <<<"$provided" || { say "not carried: $so (needed by ${f#$dest/})"; missing=1; }
  done
done
# 2. ldd with the carried directories on LD_LIBRARY_PATH: nothing "not
# found", and nothing outside the base set taken from this system (which
# has all of these packages installed, and would hide a gap).
lib_path=$(find "$root" "$fallback" -name 'lib*.so*' -printf '%h\n' | sort -u | tr '\n' ':')
lddfail=0
for f in "${elves[@]}"; do
  while read -r so _ path _; do
    [[ $base_sonames == *" $so "* || $path == "$dest"/* ]] && continue
    say "ldd ${f#$dest/}: $so => $path"; lddfail=1
  done < <(LD_LIBRARY_PATH=$lib_path ldd "$f" 2>/dev/null | grep '=>')
done
# 3. The newest glibc symbol version needed: the GPU machine's glibc must be
# at least that (gpu_check.sh compares). (No grep -q after a pipe here or
# below: with pipefail, the writer's SIGPIPE would read as no match.)
glibc=$(printf '%s\n' "${elves[@]}" | xargs objdump -T 2>/dev/null |
  grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)
echo "glibc_needed ${glibc#GLIBC_}" >>"$dest/MANIFEST"
newest=$(for f in "${elves[@]}"; do objdump -T "$f" 2>/dev/null | grep -F "$glibc" >/dev/null && echo "${f##*/}"; done | tr '\n' ' ')

# --- Compress what the device may not need or that is large: OpenBLAS (its
# DYNAMIC_ARCH build holds kernels for every x86 core: 36 MB, 4 MB as xz)
# and every fallback library (gpu_check.sh unpacks only those whose soname
# the GPU machine lacks). The links to them dangle until then.
blas=$(readlink -f "$L/openblas-openmp/libopenblas.so.0")
[[ -f $blas ]] || die "libopenblas.so.0 not found in the tree"
xz -T0 -6 "$blas" || die "xz failed on OpenBLAS"
find "$fallback" -type f -name '*.so*' ! -name '*.xz' -exec xz -T0 -6 {} + || die "xz failed on the fallback libraries"

say "packages: $(grep -c '^own ' "$dest/MANIFEST") own, $(grep -c '^fallback ' "$dest/MANIFEST") fallback"
say "newest glibc symbol version needed: ${glibc:-?} (by: ${newest:-?})"
say "size: $(du -sh "$dest" | cut -f1) ($(du -sh "$root" | cut -f1) root, $(du -sh "$fallback" | cut -f1) fallback, compressed)"
[[ $missing -eq 0 ]] || die "some DT_NEEDED libraries are neither carried nor in the base set (above)"
[[ $lddfail -eq 0 ]] || die "ldd resolved libraries outside .gpu-deps and the base set (above)"
say "checked ${#elves[@]} ELF files: every DT_NEEDED is carried or in the base set, and ldd resolves them all inside .gpu-deps"
