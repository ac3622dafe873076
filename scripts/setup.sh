#!/usr/bin/env bash
# Installs what the build needs (Debian/Ubuntu packages) and configures + builds lizard.
# Usage: scripts/setup.sh [build-dir] [extra cmake args...]. Idempotent; as root or with sudo.
set -euo pipefail
# NVLink SHARP multicast off for any NCCL use (not every lent machine supports it).
export NCCL_NVLS_ENABLE=0
cd "$(dirname "$0")/.."
BUILD_DIR="${1:-build}"
shift || true

PKGS=(build-essential cmake pkg-config libyaml-cpp-dev libhdf5-dev libcli11-dev
      libopenmpi-dev openmpi-bin libopenblas-dev libgtest-dev python3)
missing=()
if command -v dpkg >/dev/null 2>&1; then
  for p in "${PKGS[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "[setup] installing: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO=sudo
  if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >/tmp/lizard-apt.log 2>&1; then
    echo "[setup] warning: apt-get could not install ${missing[*]} (see /tmp/lizard-apt.log); trying the build anyway"
  fi
fi

JOBS="${LIZARD_JOBS:-$(nproc)}"
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release "$@" | grep -E "lizard feature|Configuring done|Error" || true
cmake --build "$BUILD_DIR" -j"$JOBS"
