#!/usr/bin/env bash
# The embedded default, end to end: set-up and build, synthetic data, a teacher pretrained
# from scratch, then stage 1 + stage 2 of the Lizard recipe for the paper and plus presets;
# prints the validation loss of teacher and students side by side.
# On a machine without a GPU it runs a reduced configuration on the CPU (minutes on 2 cores).
set -euo pipefail
# NVLink SHARP multicast off for any NCCL use (not every lent machine supports it).
export NCCL_NVLS_ENABLE=0
cd "$(dirname "$0")/.."
scripts/setup.sh build
LZ=build/bin/lizard
OUTDIR=runs/demo
rm -rf "$OUTDIR"
ARGS=()
if "$LZ" info | grep -q "^gpus: [1-9]"; then
  echo "[demo] GPU found: full configuration"
  "$LZ" make-demo-data --out "$OUTDIR/data" --grammar-docs 4000 --mqar-docs 4000
else
  echo "[demo] no GPU: reduced configuration on the CPU"
  "$LZ" make-demo-data --out "$OUTDIR/data" --grammar-docs 800 --mqar-docs 800
  ARGS=(--set device=cpu --set model.hidden_size=96 --set model.intermediate_size=256
        --set model.num_hidden_layers=2 --set model.num_attention_heads=4
        --set model.num_key_value_heads=2 --set model.head_dim=24 --set lizard.feature_dim=16
        --set data.micro_batch=8 --set data.global_batch=8
        --set stages.0.schedule.steps=400 --set stages.1.schedule.steps=60
        --set stages.2.schedule.steps=60 --set stages.3.schedule.steps=60
        --set stages.4.schedule.steps=60 --set eval.every=60)
fi
"$LZ" train --config configs/demo.yaml "${ARGS[@]}" | tee "$OUTDIR/train.log" | grep -vE "^  |^[a-z_]+:$|^[a-z_]+: " || true
echo
echo "=== Lizard demo: validation loss (lower is better; students read the teacher's weights) ==="
printf "%-16s %-10s %-12s %s\n" "model" "stage" "val loss" "ppl"
awk '/^=== stage/ {name=$4} /^stage .* done/ {v=""; for(i=1;i<=NF;i++) if($i=="val") v=$(i+2); gsub(",","",v); if (v!="") printf "%-16s %-10s %-12s %.3f\n", name, $2, v, exp(v)}' "$OUTDIR/train.log"
