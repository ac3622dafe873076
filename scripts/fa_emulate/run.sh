#!/usr/bin/env bash
# Runs the tensor-core flash-attention forward kernels of cuda/flash_attention.cu on the CPU:
# extract.py copies the kernels out of the .cu (their PTX helpers dropped), emu.h supplies
# CUDA threads as std::threads, warp collectives (ldmatrix, mma.sync m16n8k16, shuffles,
# votes) with their documented fragment layouts, and cp.async copies that land only at the
# wait_group covering them (so a missing wait or barrier reads stale bytes). driver.cpp checks
# every variant against a naive f64 attention at awkward shapes (odd T, windows, GQA, D=80,
# keys whose norm grows along the sequence). For kernel work without a GPU: it proves layouts
# and control flow, not speed. Usage: scripts/fa_emulate/run.sh [quick]  (quick: variants 0, 4, 6)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
python3 "$HERE/extract.py" "$HERE/../../cuda/flash_attention.cu" > "$WORK/kernels.inc"
cp "$HERE/emu.h" "$HERE/driver.cpp" "$WORK/"
g++ -O2 -std=c++17 -pthread -I"$WORK" "$WORK/driver.cpp" -o "$WORK/driver"
"$WORK/driver" "$@"
