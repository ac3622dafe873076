#!/usr/bin/env bash
# MQAR recall for a small softmax teacher by a pair-count curriculum (issue #7, DESIGN.md
# section 6). With each key asked once and the answers visible, a teacher can score
# (1/N)(1 + 1/2 + ... + 1/N) (34% at 8 pairs) by elimination and never binds keys to values;
# with the answers hidden (labels only) it must bind, and binding appears as a sudden
# transition that comes early only with few pairs. So: 2 pairs until it binds, then 2..4,
# then 2..8, each stage starting from the last (pretrain stages chained by model.path).
#   scripts/mqar_curriculum.sh [--device cpu|cuda] [--out DIR]
# Environment: WIDTH, LAYERS, HEADS, KV_HEADS (default HEADS), SEQ, BATCH, LR, WD (weight decay,
# default 0), SEED (default 0), STAGES (how many of the 3 stages to run, default 3),
# STEPS1, STEPS2, STEPS3 (defaults: the CPU run of docs/benchmarks/2026-11-27-demo-h200.md:
# 64, 2, 4, 64, 32, 3e-3, 6000, 4000, 4000).
# Prints MQAR accuracy (answers hidden, fresh samples) at 2, 4 and 8 pairs after each stage.
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=cpu; OUT=runs/mqar_curriculum
while [[ $# -gt 0 ]]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    *) echo "mqar_curriculum.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
LZ=${LZ:-build/bin/lizard}
[[ -x "$LZ" ]] || { echo "mqar_curriculum.sh: $LZ not built (scripts/setup.sh build)" >&2; exit 1; }
WIDTH=${WIDTH:-64}; LAYERS=${LAYERS:-2}; HEADS=${HEADS:-4}; SEQ=${SEQ:-64}; BATCH=${BATCH:-32}
LR=${LR:-3e-3}; SEED=${SEED:-0}; WD=${WD:-0.0}; NSTAGES=${STAGES:-3}; KV_HEADS=${KV_HEADS:-$HEADS}; STEPS=("${STEPS1:-6000}" "${STEPS2:-4000}" "${STEPS3:-4000}")
MIN=(2 2 2); MAX=(2 4 8)
DTYPE=f32; [[ "$DEVICE" == cuda* ]] && DTYPE=bf16
mkdir -p "$OUT"
prev=""
for ((i = 0; i < NSTAGES; ++i)); do
  data="$OUT/data_${MIN[$i]}_${MAX[$i]}"
  [[ -f "$data/val.h5" ]] || "$LZ" make-demo-data --out "$data" --grammar-docs 1 --mqar-docs 50000 \
    --pairs "${MAX[$i]}" --mqar-min-pairs "${MIN[$i]}" --mqar-hide-answers --seq-len "$SEQ" > /dev/null
  path=""; [[ -n "$prev" ]] && path="path: $prev, "
  cat > "$OUT/stage$i.yaml" <<Y
out_dir: $OUT/stage$i
seed: $SEED
device: $DEVICE
dtype: $DTYPE
loss_on: response
model: {${path}vocab_size: 288, hidden_size: $WIDTH, intermediate_size: $((WIDTH * 11 / 4)), num_hidden_layers: $LAYERS,
        num_attention_heads: $HEADS, num_key_value_heads: $KV_HEADS, head_dim: $((WIDTH / HEADS))}
data: {path: $data/train.h5, val_path: $data/val.h5, seq_len: $SEQ, pack: documents, micro_batch: $BATCH, global_batch: $BATCH}
eval: {every: 1000, batches: 8}
checkpoint: {keep_last: 1}
metrics: {log_every: 100}
stages:
  - {name: teacher, stage: pretrain, out_dir: $OUT/stage$i/teacher, schedule: {steps: ${STEPS[$i]}, warmup: 0.05}, optimizer: {lr: $LR, weight_decay: $WD}}
Y
  t0=$(date +%s)
  "$LZ" train --config "$OUT/stage$i.yaml" > "$OUT/stage$i.log" 2>&1
  prev="$OUT/stage$i/teacher"
  acc=""
  for p in 2 4 8; do
    a=$("$LZ" eval --model "$prev" --task mqar --seq-len "$SEQ" --pairs "$p" --samples 128 --seed 4242 \
        --hide-answers --device "$DEVICE" 2>/dev/null | python3 -c "import json, sys; print(round(100 * json.load(sys.stdin)['accuracy'], 1))")
    acc="$acc $p:$a%"
  done
  echo "stage $i (pairs ${MIN[$i]}..${MAX[$i]}, ${STEPS[$i]} steps, $(( $(date +%s) - t0 )) s): MQAR accuracy by pairs$acc"
done
