#!/usr/bin/env bash
# One GPU call for the state sweeps (issue #5, cuda/lizard_global_state_mma.cu: per-warp bulk
# copies of the per-chunk state, one barrier per forward chunk): build, the state and attention
# GPU tests, the training fwd+bwd bench, and the ncu time of each state_mma_kernel launch (the
# training forward <128,0,1>, the dstate sweep <128,1,1>, the inference forward <128,0,0>).
# Logs under $OUT (or ./out).
#   scripts/stateopt_check.sh [--no-ncu] [--sanitize]
# --sanitize: compute-sanitizer memcheck, racecheck and synccheck on the state comparison test
# (the bulk copies must be read-complete before the stage is rewritten and complete before exit).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/out}"
mkdir -p "$OUT"
NCU=1; SAN=0
for a in "$@"; do
  case "$a" in
    --no-ncu) NCU=0 ;;
    --sanitize) SAN=1 ;;
    *) echo "stateopt_check.sh: unknown option $a (expected --no-ncu or --sanitize)" >&2; exit 2 ;;
  esac
done
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; git rev-parse --short HEAD; } > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt"
t0=$(date +%s)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release > "$OUT/configure.log" 2>&1
cmake --build build -j"$(nproc)" --target lizard test_gpu > "$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
build/bin/test_gpu --gtest_filter='LizardGlobalState*:LizardAttentionGpu*' > "$OUT/test_gpu.log" 2>&1
grep -E "^\[  (PASSED|FAILED) |Failure|actual|rel|FAILED" "$OUT/test_gpu.log" | head -40
echo "== bench"
build/bin/lizard bench attention --shape 8x2048 --iters 10 --warmup 3 | tee "$OUT/bench.json"
if [ "$NCU" = 1 ] && command -v ncu > /dev/null; then
  echo "== ncu state_mma_kernel (one timed fwd+bwd and the inference forward of the bench)"
  ncu --kernel-name 'regex:state_mma_kernel' \
    --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,launch__registers_per_thread,l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum \
    build/bin/lizard bench attention --shape 8x2048 --iters 1 --warmup 0 > "$OUT/ncu.log" 2>&1
  grep -E "state_mma_kernel|gpu__time_duration|dram__|launch__registers|bank_conflicts" "$OUT/ncu.log" |
    sed 's/(const.*//' | head -60
fi
if [ "$SAN" = 1 ]; then
  for tool in memcheck racecheck synccheck; do
    echo "== compute-sanitizer $tool"
    timeout 300 compute-sanitizer --tool $tool build/bin/test_gpu \
      --gtest_filter=LizardGlobalStateGpu.MmaSweepsMatchWmmaSweeps > "$OUT/san_$tool.log" 2>&1
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|hazard|PASSED|FAILED" "$OUT/san_$tool.log" | head -10
  done
fi
