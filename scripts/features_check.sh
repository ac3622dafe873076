#!/usr/bin/env bash
# GPU-machine check of the mma feature-map kernels (cuda/lizard_features_tc.cu, issue #5)
# against the wmma kernels they replace (LIZARD_FEATURES_KERNEL=wmma). One call:
#   scripts/features_check.sh              # build, tests, bench both kernels, per-kernel times
#   scripts/features_check.sh --sanitize   # then memcheck + racecheck on LizardFeaturesGpu
# Logs under $OUT (or ./out). Steps: the Lizard GPU tests (oracle comparisons, which now run
# the mma kernels, and LizardFeaturesGpu: mma vs wmma bit for bit / to f32 rounding);
# `lizard bench attention` at 8x2048 with each kernel; with ncu present, the feature kernels'
# times (a training step: 2 forward calls, 2 recompute calls, 2 backward calls);
# --sanitize: compute-sanitizer memcheck on both LizardFeaturesGpu comparisons, racecheck on
# the small one and (allowed to time out) on the one over many tiles.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/out}"
mkdir -p "$OUT"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release > "$OUT/configure.log" 2>&1 ||
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release > "$OUT/configure.log" 2>&1
cmake --build build -j"$(nproc)" --target test_gpu lizard > "$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
build/bin/test_gpu --gtest_filter='LizardFeaturesGpu.*:LizardAttentionGpu.*' > "$OUT/test_gpu.log" 2>&1
echo "tests rc=$?"; grep -E "^\[  (PASSED|FAILED) |Failure|Expected|Which is|actual|  OK \]|FAILED  \]" "$OUT/test_gpu.log" | head -60
SAN=0; [ "${1:-}" = --sanitize ] && SAN=1
if [ "$SAN" = 1 ] && command -v compute-sanitizer > /dev/null; then
  for run in "memcheck MmaKernelsMatchWmmaKernels" "memcheck MmaKernelsMatchWmmaKernelsOverManyTiles" \
             "racecheck MmaKernelsMatchWmmaKernels" "racecheck MmaKernelsMatchWmmaKernelsOverManyTiles"; do
    set -- $run; tool=$1; t=$2
    extra=(); [ "$tool" = racecheck ] && extra=(--racecheck-report hazard)
    timeout 120 compute-sanitizer --tool "$tool" "${extra[@]}" --error-exitcode 9 \
      build/bin/test_gpu --gtest_filter="LizardFeaturesGpu.$t" > "$OUT/$tool.$t.log" 2>&1
    echo "$tool $t rc=$? (0 clean, 9 errors/hazards, 124 timeout)"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$OUT/$tool.$t.log"
  done
  exit 0
fi
for k in mma wmma; do
  LIZARD_FEATURES_KERNEL=$k build/bin/lizard bench attention --shape 8x2048 --iters 20 > "$OUT/bench_$k.json" 2> "$OUT/bench_$k.err"
  echo "bench $k rc=$?: $(cat "$OUT/bench_$k.json")"
done
if command -v ncu > /dev/null; then
  for k in mma wmma; do
    LIZARD_FEATURES_KERNEL=$k timeout 150 ncu --kernel-name regex:'features' --metrics gpu__time_duration.sum \
      --csv build/bin/lizard bench attention --shape 8x2048 --iters 1 --warmup 0 > "$OUT/ncu_$k.csv" 2> "$OUT/ncu_$k.err"
    echo "ncu $k rc=$? (kernel, ms):"
    python3 - "$OUT/ncu_$k.csv" <<'EOF'
import csv, sys, collections, re
rows = list(csv.reader(open(sys.argv[1], errors="replace")))
hi = next((i for i, r in enumerate(rows) if "Kernel Name" in r and "Metric Value" in r), None)
if hi is None: sys.exit(print("  no ncu table"))
h = rows[hi]; ki, vi, ui = h.index("Kernel Name"), h.index("Metric Value"), h.index("Metric Unit")
t = collections.defaultdict(list)
for r in rows[hi + 1:]:
    if len(r) != len(h): continue
    v = float(r[vi].replace(",", "")); u = r[ui]
    m = re.search(r"(\w+_kernel(<[^>]*>)?)", r[ki])
    t[m.group(1) if m else r[ki][:60]].append(v / 1e6 if u == "nsecond" else v / 1e3 if u == "usecond" else v)
for k, v in t.items(): print(f"  {k}: calls {len(v)}, ms each {[round(x, 3) for x in v]}")
EOF
  done
fi
