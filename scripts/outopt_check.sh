#!/usr/bin/env bash
# One GPU call for the global-branch output kernel (issue #5, cuda/lizard_global_out_mma.cu):
# build, the output-kernel and attention tests, the fwd+bwd attention bench, and ncu times of
# out_mma_kernel (training <128,1> and inference <128,0>) at 8x2048. Logs under $OUT (or ./out).
#   scripts/outopt_check.sh [--no-ncu] [--sanitize]
# --sanitize: compute-sanitizer memcheck and racecheck on LizardGlobalOutGpu (small shapes).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/out}"
mkdir -p "$OUT"
NCU=1; SAN=0
for a in "$@"; do
  case "$a" in
    --no-ncu) NCU=0 ;;
    --sanitize) SAN=1 ;;
  esac
done
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; git rev-parse --short HEAD; } > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt"
t0=$(date +%s)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release > "$OUT/configure.log" 2>&1
cmake --build build -j"$(nproc)" --target lizard test_gpu > "$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
build/bin/test_gpu --gtest_filter='LizardGlobalOut*:LizardAttentionGpu*' > "$OUT/test_gpu.log" 2>&1
grep -E "^\[  (PASSED|FAILED) |Failure|actual|rel|FAILED" "$OUT/test_gpu.log" | head -40
echo "== bench attention 8x2048"
build/bin/lizard bench attention --shape 8x2048 --iters 10 --warmup 3 | tee "$OUT/bench.json"
if [ "$NCU" = 1 ] && command -v ncu > /dev/null; then
  echo "== ncu out_mma_kernel (one fwd+bwd: training <128,1>, then the inference forward <128,0>)"
  ncu --kernel-name 'regex:out_mma_kernel' --section SpeedOfLight --section Occupancy \
    --section LaunchStats --section WarpStateStats --section MemoryWorkloadAnalysis \
    build/bin/lizard bench attention --shape 8x2048 --iters 1 --warmup 0 > "$OUT/ncu.log" 2>&1
  grep -E "out_mma_kernel|Duration|DRAM Throughput|L2 Cache Throughput|L1/TEX Cache Throughput|Registers Per|Dynamic Shared|Achieved Occupancy|Warp Cycles Per Issued|Memory Throughput  " \
    "$OUT/ncu.log" | sed 's/(const.*//' | head -60
fi
if [ "$SAN" = 1 ]; then
  for tool in memcheck racecheck; do
    echo "== compute-sanitizer $tool"
    timeout 300 compute-sanitizer --tool $tool build/bin/test_gpu \
      --gtest_filter='LizardGlobalOutGpu.*' > "$OUT/san_$tool.log" 2>&1
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|hazard|PASSED|FAILED" "$OUT/san_$tool.log" | head -10
  done
fi
