#!/usr/bin/env bash
# One GPU call for work on one set of kernels (issue #5): build, the GPU tests that cover them,
# the attention benchmark, the ncu time / HBM bytes / registers of each launch of the kernels,
# and optionally compute-sanitizer on the tests. Logs under $OUT (or ./out).
#   scripts/kernel_check.sh TESTS KERNELS [--shape BxT] [--no-ncu] [--sanitize]
# TESTS: a gtest filter (e.g. 'LizardGlobalState*:LizardAttentionGpu*'); KERNELS: an ncu
# kernel-name regex (e.g. 'state_mma_kernel|out_mma_kernel'). --sanitize runs memcheck,
# racecheck and synccheck on TESTS (keep the filter to small-shape tests: racecheck is slow).
set -uo pipefail
cd "$(dirname "$0")/.."
usage() { echo "usage: scripts/kernel_check.sh TESTS KERNELS [--shape BxT] [--no-ncu] [--sanitize]" >&2; exit 2; }
[ $# -ge 2 ] || usage
TESTS="$1"; KERNELS="$2"; shift 2
SHAPE=8x2048; NCU=1; SAN=0
while [ $# -gt 0 ]; do
  case "$1" in
    --shape) [ $# -ge 2 ] || usage; SHAPE="$2"; shift ;;
    --no-ncu) NCU=0 ;;
    --sanitize) SAN=1 ;;
    *) echo "kernel_check.sh: unknown option $1" >&2; usage ;;
  esac
  shift
done
OUT="${OUT:-$PWD/out}"
mkdir -p "$OUT"
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; git rev-parse --short HEAD; } > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt"
t0=$(date +%s)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release > "$OUT/configure.log" 2>&1
cmake --build build -j"$(nproc)" --target lizard test_gpu > "$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
build/bin/test_gpu --gtest_filter="$TESTS" > "$OUT/test_gpu.log" 2>&1
grep -E "^\[  (PASSED|FAILED) |Failure|actual|Which is|FAILED" "$OUT/test_gpu.log" | head -40
echo "== lizard bench attention --shape $SHAPE"
build/bin/lizard bench attention --shape "$SHAPE" --iters 10 --warmup 3 | tee "$OUT/bench.json"
if [ "$NCU" = 1 ] && command -v ncu > /dev/null; then
  echo "== ncu, kernels matching '$KERNELS' (the bench's inference forward and one training fwd+bwd)"
  ncu --clock-control none --kernel-name "regex:$KERNELS" --csv --print-units base \
    --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,launch__registers_per_thread \
    build/bin/lizard bench attention --shape "$SHAPE" --iters 1 --warmup 0 > "$OUT/ncu.csv" 2>&1
  python3 - "$OUT/ncu.csv" <<'PY'
import csv, sys
rows = {}
for r in csv.reader(open(sys.argv[1])):
    if len(r) != 15 or r[0] == "ID":
        continue
    rows.setdefault((r[0], r[4].split("(")[0]), {})[r[12]] = float(r[14].replace(",", ""))
for (_, name), m in rows.items():
    ms = m.get("gpu__time_duration.sum", 0) / 1e6
    gb = (m.get("dram__bytes_read.sum", 0) + m.get("dram__bytes_write.sum", 0)) / 1e9
    print(f"{ms:7.3f} ms  {gb:6.2f} GB  {gb / ms if ms else 0:5.2f} TB/s  "
          f"{int(m.get('launch__registers_per_thread', 0)):3d} regs  {name[:90]}")
PY
fi
if [ "$SAN" = 1 ]; then
  for tool in memcheck racecheck synccheck; do
    echo "== compute-sanitizer $tool"
    timeout 300 compute-sanitizer --tool $tool build/bin/test_gpu --gtest_filter="$TESTS" > "$OUT/san_$tool.log" 2>&1
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|hazard|PASSED|FAILED" "$OUT/san_$tool.log" | head -10
  done
fi
