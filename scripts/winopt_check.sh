#!/usr/bin/env bash
# One GPU call for the window-branch kernels (issue #5, cuda/lizard_window_mma.cu): build, the
# Lizard attention GPU tests (the window kernels against the f64 oracle and the f32 kernels),
# the training fwd+bwd bench at 8x2048 and per-kernel ncu times of win_fwd / win_bwd_q /
# win_bwd_k. Logs under $OUT (or ./out).
#   scripts/winopt_check.sh [--no-ncu] [--sanitize]
# --sanitize: compute-sanitizer memcheck and racecheck on the window tile test.
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
build/bin/test_gpu --gtest_filter='LizardAttentionGpu*' > "$OUT/test_gpu.log" 2>&1
grep -E "^\[  (PASSED|FAILED) |Failure|actual|rel|FAILED" "$OUT/test_gpu.log" | head -40
echo "== bench"
build/bin/lizard bench attention --shape 8x2048 --iters 10 --warmup 3 | tee "$OUT/bench.json"
if [ "$NCU" = 1 ] && command -v ncu > /dev/null; then
  echo "== ncu (one warm-up-free fwd+bwd)"
  ncu --kernel-name 'regex:win_(fwd|bwd_q|bwd_k)_kernel' \
    --metrics gpu__time_duration.sum,launch__registers_per_thread,sm__throughput.avg.pct_of_peak_sustained_elapsed,smsp__inst_executed.sum \
    build/bin/lizard bench attention --shape 8x2048 --iters 1 --warmup 0 > "$OUT/ncu.log" 2>&1
  grep -E "win_|gpu__time_duration|launch__registers|sm__throughput|inst_executed" "$OUT/ncu.log" | sed 's/(const.*//' | head -60
fi
if [ "$SAN" = 1 ]; then
  for tool in memcheck racecheck; do
    echo "== compute-sanitizer $tool"
    timeout 300 compute-sanitizer --tool $tool build/bin/test_gpu \
      --gtest_filter=LizardAttentionGpu.WindowKernelTilesAndSwitches > "$OUT/san_$tool.log" 2>&1
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|hazard|PASSED|FAILED" "$OUT/san_$tool.log" | head -10
  done
fi
