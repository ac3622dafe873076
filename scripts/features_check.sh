#!/usr/bin/env bash
# GPU-machine check of the mma feature-map kernels (cuda/lizard_features_tc.cu, issue #5)
# against the wmma kernels they replace (LIZARD_FEATURES_KERNEL=wmma). One call:
#   scripts/features_check.sh            # build, tests, bench both kernels, per-kernel times
# Logs under $OUT (or ./out). Steps: the Lizard GPU tests (oracle comparisons, which now run
# the mma kernels, and LizardFeaturesGpu: mma vs wmma bit for bit / to f32 rounding);
# compute-sanitizer memcheck + racecheck on LizardFeaturesGpu; `lizard bench attention` at
# 8x2048 with each kernel; with ncu present, the feature kernels' times (training: 2 forward
# calls, 2 recompute calls, 2 backward calls per step).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/out}"
mkdir -p "$OUT"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release > "$OUT/configure.log" 2>&1 ||
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release > "$OUT/configure.log" 2>&1
cmake --build build -j"$(nproc)" --target test_gpu lizard > "$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
build/bin/test_gpu --gtest_filter='LizardFeaturesGpu.*:LizardAttentionGpu.*' > "$OUT/test_gpu.log" 2>&1
echo "tests rc=$?"; grep -E "^\[  (PASSED|FAILED) |Failure|Expected|Which is|actual|  OK \]|FAILED  \]" "$OUT/test_gpu.log" | head -60
if command -v compute-sanitizer > /dev/null; then
  for tool in memcheck racecheck; do
    extra=(); [ "$tool" = racecheck ] && extra=(--racecheck-report hazard)
    timeout 300 compute-sanitizer --tool "$tool" "${extra[@]}" --error-exitcode 9 \
      build/bin/test_gpu --gtest_filter='LizardFeaturesGpu.MmaKernelsMatchWmmaKernels' > "$OUT/$tool.log" 2>&1
    echo "$tool rc=$? (0 clean, 9 errors/hazards, 124 timeout)"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$OUT/$tool.log"
  done
fi
for k in mma wmma; do
  LIZARD_FEATURES_KERNEL=$k build/bin/lizard bench attention --shape 8x2048 --iters 20 > "$OUT/bench_$k.json" 2> "$OUT/bench_$k.err"
  echo "bench $k rc=$?: $(cat "$OUT/bench_$k.json")"
done
if command -v ncu > /dev/null; then
  for k in mma wmma; do
    LIZARD_FEATURES_KERNEL=$k timeout 300 ncu --kernel-name regex:'features' --metrics gpu__time_duration.sum \
      --csv build/bin/lizard bench attention --shape 8x2048 --iters 1 --warmup 0 > "$OUT/ncu_$k.csv" 2> "$OUT/ncu_$k.err"
    echo "ncu $k rc=$? (kernel, ms):"
    python3 - "$OUT/ncu_$k.csv" <<'EOF'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
if not rows: sys.exit(print("  no rows"))
h = rows[0]; ki, vi, ui = h.index("Kernel Name"), h.index("Metric Value"), h.index("Metric Unit")
t = collections.defaultdict(list)
for r in rows[1:]:
    v = float(r[vi].replace(",", "")); u = r[ui]
    t[r[ki].split("(")[0][-60:]].append(v / 1e6 if u == "nsecond" else v / 1e3 if u == "usecond" else v)
for k, v in t.items(): print(f"  {k}: calls {len(v)}, ms each {[round(x, 3) for x in v]}")
EOF
  done
fi
