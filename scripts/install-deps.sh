#!/usr/bin/env bash
# Installs what scfm needs to build and test on Debian 12, only what is
# missing (idempotent; run as root). Python is not needed by the suite: the
# PyTorch references are committed fixtures (tests/reference/README.md).
set -euo pipefail
packages=(build-essential cmake pkg-config libopenmpi-dev openmpi-bin libopenblas-dev
          libopenblas-openmp-dev libhdf5-openmpi-dev libconfig-dev libcunit1-dev)
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
