#!/usr/bin/env bash
# Lizard attention kernels on the GPU machine in one call (issue #5): build (Ninja, Release),
# the Lizard GPU tests with failures printed compactly, `lizard bench attention` and the torch
# SDPA baseline on the same card. Every log goes under $OUT (default ./out).
#   scripts/lizkern_check.sh [--no-bench] [--memcheck] [--baseline]
# --baseline also times the f32 CUDA-core kernels (LIZARD_ATTENTION_KERNELS=f32), the
# previous implementation, on the same card (about a minute).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/out}"
mkdir -p "$OUT"
BENCH=1; MEMCHECK=0; BASE=0
for a in "$@"; do
  case "$a" in
    --no-bench) BENCH=0 ;;
    --memcheck) MEMCHECK=1 ;;
    --baseline) BASE=1 ;;
  esac
done
{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  git rev-parse --short HEAD 2>/dev/null || true
} > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt"
t0=$(date +%s)
GEN="-G Ninja"; command -v ninja > /dev/null || GEN=""
cmake -S . -B build-lizkern $GEN -DCMAKE_BUILD_TYPE=Release -DLIZARD_CUDA=ON > "$OUT/configure.log" 2>&1 \
  || { echo "CONFIGURE FAILED"; tail -30 "$OUT/configure.log"; exit 1; }
cmake --build build-lizkern -j16 --target test_gpu lizard > "$OUT/build.log" 2>&1 \
  || { echo "BUILD FAILED"; grep -E "error|Error" "$OUT/build.log" | head -40; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"

# GPU tests of the Lizard attention: one line per test, then the failing expectations.
build-lizkern/bin/test_gpu --gtest_filter='LizardAttentionGpu.*' > "$OUT/test_gpu_lizard.log" 2>&1
echo "test_gpu rc=$?"
grep -E "^\[ +(OK|FAILED|SKIPPED) +\]" "$OUT/test_gpu_lizard.log" | head -30
grep -E "Failure|Expected|Which is|actual|y$| d[a-z_]+$|C\+\+ exception|what\(\)" "$OUT/test_gpu_lizard.log" | head -60
# the same tests on the f32 kernels (the fallback path must stay correct)
LIZARD_ATTENTION_KERNELS=f32 build-lizkern/bin/test_gpu --gtest_filter='LizardAttentionGpu.*' \
  > "$OUT/test_gpu_lizard_f32.log" 2>&1
echo "test_gpu (LIZARD_ATTENTION_KERNELS=f32) rc=$?"
grep -E "^\[ +FAILED +\]|Failure" "$OUT/test_gpu_lizard_f32.log" | head -10
if [ "$MEMCHECK" = 1 ]; then
  compute-sanitizer --tool memcheck --error-exitcode 9 build-lizkern/bin/test_gpu \
    --gtest_filter='LizardAttentionGpu.TensorCore*:LizardAttentionGpu.MatchesReference*' > "$OUT/memcheck.log" 2>&1
  echo "memcheck rc=$?"; grep -E "ERROR SUMMARY|Invalid|out of bounds" "$OUT/memcheck.log" | head -10
fi
if [ "$BENCH" = 1 ]; then
  build-lizkern/bin/lizard bench attention > "$OUT/bench_attention.json" 2> "$OUT/bench_attention.err"
  echo "bench attention rc=$?"; cat "$OUT/bench_attention.json"; tail -5 "$OUT/bench_attention.err"
  if [ "$BASE" = 1 ]; then
    LIZARD_ATTENTION_KERNELS=f32 build-lizkern/bin/lizard bench attention > "$OUT/bench_attention_f32.json" 2>&1
    echo "bench attention f32 kernels rc=$?"; cat "$OUT/bench_attention_f32.json"
  fi
  python3 scripts/bench_attention_torch.py > "$OUT/bench_attention_torch.json" 2> "$OUT/bench_torch.err"
  echo "torch bench rc=$?"; cat "$OUT/bench_attention_torch.json"; tail -3 "$OUT/bench_torch.err"
fi
