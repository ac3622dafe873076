#!/usr/bin/env bash
# Whole-step benchmark on the GPU machine (issue #11), logs and JSON under $OUT (or ./out):
#   1. builds `lizard` with CUDA (the binary only: tests are gpu_check.sh's job);
#   2. checks the torch Lizard attention of bench_torch_step.py against its fp64 oracle;
#   3. `lizard bench step` at Llama-3-8B shape (random weights), finetune and distill, at
#      seq 2048 micro-batch 1 and 4 and seq 8192 micro-batch 1 (recompute auto: the cheapest
#      mode whose memory estimate fits);
#   4. scripts/bench_torch_step.py: the PyTorch anchor, Lizard-in-torch and the stage-1 analogue.
# Few steps each, every command under a timeout, so the whole run stays within about 8 minutes
# even with today's slow Lizard kernels. Usage:
#   scripts/step_check.sh [--long] [STEPS] [WARMUP]     (defaults 2 and 1)
# --long adds seq 32768 micro-batch 1 for both stages (1 step each, the 80 GB fit check; with
# today's kernels about a minute per stage) and skips the PyTorch benchmark to stay in time.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/out}"
mkdir -p "$OUT"
LONG=0
if [ "${1:-}" = "--long" ]; then LONG=1; shift; fi
STEPS="${1:-2}"
WARMUP="${2:-1}"
MODEL=configs/models/llama3_8b.yaml
T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 )); }
{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  git rev-parse --short HEAD 2>/dev/null || true
} > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt"

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release > "$OUT/configure.log" 2>&1 ||
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release > "$OUT/configure.log" 2>&1
cmake --build build -j"$(nproc)" --target lizard > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
echo "build done at $(elapsed) s"

timeout 60 python3 scripts/bench_torch_step.py --check-only > "$OUT/torch_self_check.json" 2> "$OUT/torch_self_check.err"
echo "torch lizard self-check rc=$?: $(cat "$OUT/torch_self_check.json")"

: > "$OUT/bench_step.jsonl"
SHAPES=("2048 1 $STEPS $WARMUP" "2048 4 $STEPS $WARMUP" "8192 1 $STEPS $WARMUP")
[ "$LONG" = 1 ] && SHAPES=("32768 1 1 0" "${SHAPES[@]}")
for stage in finetune distill; do
  for shape in "${SHAPES[@]}"; do
    set -- $shape
    name="$stage-T$1-B$2"
    timeout 150 build/bin/lizard bench step --model-config "$MODEL" --stage "$stage" \
      --seq-len "$1" --micro-batch "$2" --steps "$3" --warmup "$4" --recompute auto \
      > "$OUT/bench_step_$name.json" 2> "$OUT/bench_step_$name.err"
    rc=$?
    # One compact line per run for the table (python3 is on the GPU machine).
    python3 - "$OUT/bench_step_$name.json" "$name" "$rc" >> "$OUT/bench_step.jsonl" <<'PY'
import json, sys
path, name, rc = sys.argv[1:]
try:
    j = json.load(open(path))
    row = {k: j[k] for k in ("stage", "seq_len", "micro_batch", "recompute", "tokens_per_s", "mfu")}
    row.update(step_ms=j["step_ms"]["median"], peak_gib=j["memory"]["peak_gib"],
               estimate_gib=j["memory"]["estimate"]["total_gib"], phases_ms=j["phases_ms"],
               estimates_by_recompute=j["memory"]["estimate_total_gib_by_recompute"])
except Exception as e:
    row = {"run": name, "rc": int(rc), "error": repr(e)}
print(json.dumps(row))
PY
    echo "$name rc=$rc at $(elapsed) s: $(tail -1 "$OUT/bench_step.jsonl" | cut -c1-300)"
    [ "$rc" = 0 ] || tail -3 "$OUT/bench_step_$name.err"
  done
done

[ "$LONG" = 1 ] && { echo "--long: PyTorch benchmark skipped"; exit 0; }
left=$(( 480 - $(elapsed) ))
[ "$left" -lt 60 ] && left=60
timeout "$left" python3 scripts/bench_torch_step.py --mbs 1,4 --steps 3 --warmup 1 \
  > "$OUT/bench_torch_step.jsonl" 2> "$OUT/bench_torch_step.err"
echo "torch step bench rc=$? at $(elapsed) s"
cat "$OUT/bench_torch_step.jsonl"
