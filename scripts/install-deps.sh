#!/usr/bin/env bash
# Installs what scfm needs to build and test on Debian 12, only what is
# missing (idempotent; run as root). scfm never runs Python; the tests use it
# as a reference and a real client: anndata (with numpy, scipy, h5py) and
# scikit-learn (the reference of scfm eval's metrics) from PyPI, cached by
# pip. The PyTorch references are committed fixtures (tests/reference/README.md),
# so torch is not installed here.
set -euo pipefail
packages=(build-essential cmake pkg-config libopenmpi-dev openmpi-bin libopenblas-dev
          libopenblas-openmp-dev libhdf5-openmpi-dev libconfig-dev libcunit1-dev gnuplot-nox zlib1g-dev)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "install-deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "install-deps: all packages present"
fi

if command -v python3 >/dev/null; then
    if ! python3 -c 'import anndata, numpy, scipy, h5py, sklearn' 2>/dev/null; then
        echo "install-deps: pip install anndata, scikit-learn (test references)"
        python3 -m pip install --quiet --disable-pip-version-check anndata numpy scipy h5py scikit-learn
    fi
else
    echo "install-deps: no python3; the tests that compare with anndata/numpy will be skipped"
fi
