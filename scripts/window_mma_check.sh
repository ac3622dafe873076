#!/usr/bin/env bash
# GPU check of the mma.sync window kernels (cuda/lizard_window_mma.cu, issue #5) against the
# wmma ones they replace (LIZARD_WINDOW_KERNEL=wmma): the Lizard GPU tests with each, the
# attention benchmark at B=8 T=2048 with each, per-kernel times (nsys, when installed) and
# compute-sanitizer on the window tests. Logs under $OUT (or ./out). Run on the GPU machine:
#   scripts/window_mma_check.sh [--no-sanitize]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/out}"
mkdir -p "$OUT"
SAN=1
[ "${1:-}" = "--no-sanitize" ] && SAN=0
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/device.txt" 2>&1
git rev-parse --short HEAD >> "$OUT/device.txt" 2>/dev/null
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release > "$OUT/configure.log" 2>&1
cmake --build build -j"$(nproc)" --target test_gpu lizard > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
for k in mma wmma; do
  LIZARD_WINDOW_KERNEL=$k build/bin/test_gpu --gtest_filter='Lizard*' > "$OUT/test_gpu_$k.log" 2>&1
  echo "test_gpu Lizard* ($k): rc=$? $(grep -E '^\[  (PASSED|FAILED)' "$OUT/test_gpu_$k.log" | tr '\n' ' ')"
  grep -E "Failure|actual|Which is|FAILED  \]" "$OUT/test_gpu_$k.log" | head -20
done
for k in mma wmma; do
  LIZARD_WINDOW_KERNEL=$k build/bin/lizard bench attention --shape 8x2048 > "$OUT/bench_$k.json" 2> "$OUT/bench_$k.err"
  echo "bench ($k): rc=$?"; tail -c 1500 "$OUT/bench_$k.json"; echo
done
if command -v nsys > /dev/null; then
  for k in mma wmma; do
    LIZARD_WINDOW_KERNEL=$k nsys profile -o "$OUT/prof_$k" --force-overwrite true \
      build/bin/lizard bench attention --shape 8x2048 --iters 5 > /dev/null 2>&1
    nsys stats --report cuda_gpu_kern_sum --format csv "$OUT/prof_$k.nsys-rep" > "$OUT/kernels_$k.csv" 2>/dev/null
    echo "kernels ($k), ns: total, instances, avg:"
    grep -E "win_|window" "$OUT/kernels_$k.csv" | awk -F, '{ print $2, $3, $4, $NF }' | cut -c1-200
  done
fi
if [ "$SAN" = 1 ]; then
  for tool in memcheck racecheck; do
    extra=(); [ "$tool" = racecheck ] && extra=(--racecheck-report hazard)
    timeout 400 compute-sanitizer --tool "$tool" "${extra[@]}" --error-exitcode 9 build/bin/test_gpu \
      --gtest_filter='LizardAttentionGpu.WindowKernelTilesAndSwitches:LizardAttentionGpu.TensorCoreShapesAndFallbacks' \
      > "$OUT/san_$tool.log" 2>&1
    echo "$tool: rc=$? (9: errors or hazards, 124: timeout)"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$OUT/san_$tool.log"
  done
fi
