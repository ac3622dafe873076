#!/usr/bin/env bash
# One-call GPU session: build with CUDA, run every test (gpu label included), optional
# benchmarks, logs under $OUT (or ./out). Used on the GPU machine:
#   scripts/gpu_check.sh [--bench] [--sanitize] [--fixtures]
# --sanitize: compute-sanitizer memcheck and racecheck on every GPU test but the two slowest,
# one process per test and tool, nproc at a time (SAN_TIMEOUT seconds each, default 240);
# logs in $OUT/sanitize.tgz. SAN_FILTER (an extended regex on Suite.Test) narrows the list.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/out}"
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0
BENCH=0; SAN=0; FIX=0
for a in "$@"; do
  case "$a" in
    --bench) BENCH=1 ;;
    --sanitize) SAN=1 ;;
    --fixtures) FIX=1 ;;
  esac
done
{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  git rev-parse --short HEAD 2>/dev/null || true
} > "$OUT/device.txt" 2>&1
if [ "$FIX" = 1 ]; then
  PYTHONUNBUFFERED=1 python3 scripts/make_hf_fixtures.py --out tests/fixtures/hf > "$OUT/fixtures.log" 2>&1
  tar czf "$OUT/fixtures.tgz" tests/fixtures/hf 2>/dev/null
fi
t0=$(date +%s)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release > "$OUT/configure.log" 2>&1 || cmake -S . -B build -DCMAKE_BUILD_TYPE=Release > "$OUT/configure.log" 2>&1
cmake --build build -j"$(nproc)" > "$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
grep "lizard feature" "$OUT/configure.log"
(cd build && ctest -j8 --timeout 150 > "$OUT/ctest.log" 2>&1)
grep -E "tests passed|tests failed|Failed|\*\*\*" "$OUT/ctest.log" | head -40
# ctest has run the gpu label; failures in detail:
grep -qE "\(Failed\)" "$OUT/ctest.log" && build/bin/test_gpu 2>&1 | grep -E "Failure|actual|FAILED" | head -30
if [ "$SAN" = 1 ]; then
  # One process per test and tool, nproc at a time (the GPU work of each is small; racecheck of the whole
  # binary in one process does not finish in a 10-minute device call). Left out: the tests
  # whose long sequences make the instrumented kernels crawl (LongSequenceNoNaN: T = 32768;
  # MatchesReferenceAcrossLengthsAndGqa: T up to 4096); their kernels run in the others.
  SAN_DIR="$OUT/sanitize"; mkdir -p "$SAN_DIR"; : > "$SAN_DIR/rc.txt"
  SLOW='LizardAttentionGpu.LongSequenceNoNaN|LizardAttentionGpu.MatchesReferenceAcrossLengthsAndGqa'
  TESTS=$(build/bin/test_gpu --gtest_list_tests | awk '/^[^ ]/ { s = $1 } /^  / { print s $1 }' | grep -vE "$SLOW" | grep -E "${SAN_FILTER:-.}")
  san_one() {  # TOOL TEST
    local extra=(); [ "$1" = racecheck ] && extra=(--racecheck-report hazard)
    timeout "${SAN_TIMEOUT:-240}" compute-sanitizer --tool "$1" "${extra[@]}" --error-exitcode 9 \
      build/bin/test_gpu --gtest_filter="$2" > "$SAN_DIR/$1.$2.log" 2>&1
    echo "$1 $2 rc=$?" >> "$SAN_DIR/rc.txt"
  }
  export -f san_one; export SAN_DIR SAN_TIMEOUT
  for t in $TESTS; do echo "memcheck $t"; echo "racecheck $t"; done |
    xargs -P "$(nproc)" -n 2 bash -c 'san_one "$0" "$1"'
  echo "sanitizers: $(grep -c 'rc=0$' "$SAN_DIR/rc.txt") of $(wc -l < "$SAN_DIR/rc.txt") runs clean (rc 9: errors or hazards, 124: timeout)"
  grep -v 'rc=0$' "$SAN_DIR/rc.txt" | sort
  tar czf "$OUT/sanitize.tgz" -C "$OUT" sanitize && rm -rf "$SAN_DIR"
fi
if [ "$BENCH" = 1 ]; then
  build/bin/lizard bench ops --iters 10 > "$OUT/bench_ops.json" 2> "$OUT/bench_ops.err"; echo "bench ops rc=$?"
  build/bin/lizard bench attention > "$OUT/bench_attention.json" 2> "$OUT/bench_attention.err"; echo "bench attention rc=$?"
  python3 scripts/bench_attention_torch.py > "$OUT/bench_attention_torch.json" 2> "$OUT/bench_torch.err"; echo "torch bench rc=$?"
  tail -c 3000 "$OUT/bench_attention.json"; tail -c 3000 "$OUT/bench_attention_torch.json"
fi
