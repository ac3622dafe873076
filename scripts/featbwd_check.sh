#!/usr/bin/env bash
# One GPU call for the split feature-map backward (issue #5, cuda/lizard_features_bwd_mma.cu):
# build, the new comparison test and the existing feature / attention tests, then the training
# fwd+bwd bench and per-kernel ncu times with the split kernels (default) and the fused one
# (LIZARD_FEATURES_BWD_KERNEL=old), same card, same call. Logs under $OUT (or ./out).
#   scripts/featbwd_check.sh [--no-ncu] [--sanitize]
# --sanitize: compute-sanitizer memcheck and racecheck on the small-shape comparison test.
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
build/bin/test_gpu --gtest_filter='LizardFeaturesBwdGpu.*:LizardFeaturesGpu.*:LizardAttention*' > "$OUT/test_gpu.log" 2>&1
grep -E "^\[  (PASSED|FAILED) |Failure|actual|rel|FAILED" "$OUT/test_gpu.log" | head -40
for k in new old; do
  echo "== bench, LIZARD_FEATURES_BWD_KERNEL=$k"
  LIZARD_FEATURES_BWD_KERNEL=$k build/bin/lizard bench attention --shape 8x2048 --iters 10 --warmup 3 | tee "$OUT/bench_$k.json"
done
if [ "$NCU" = 1 ] && command -v ncu > /dev/null; then
  for k in new old; do
    echo "== ncu, LIZARD_FEATURES_BWD_KERNEL=$k (one warm-up + one timed fwd+bwd)"
    LIZARD_FEATURES_BWD_KERNEL=$k ncu --kernel-name 'regex:features_(du_dx|dw|bwd_mma|mma)_kernel' \
      --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,sm__throughput.avg.pct_of_peak_sustained_elapsed \
      build/bin/lizard bench attention --shape 8x2048 --iters 1 --warmup 0 > "$OUT/ncu_$k.log" 2>&1
    grep -E "features_|gpu__time_duration|dram__bytes|sm__throughput" "$OUT/ncu_$k.log" | sed 's/(.*//' | head -40
  done
fi
if [ "$SAN" = 1 ]; then
  for tool in memcheck racecheck; do
    echo "== compute-sanitizer $tool"
    timeout 300 compute-sanitizer --tool $tool build/bin/test_gpu \
      --gtest_filter=LizardFeaturesBwdGpu.SplitKernelsMatchFusedKernel > "$OUT/san_$tool.log" 2>&1
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|hazard|PASSED|FAILED" "$OUT/san_$tool.log" | head -10
  done
fi
