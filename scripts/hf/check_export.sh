#!/usr/bin/env bash
# Exports tiny Lizard students and checks each against Hugging Face transformers
# (scripts/hf/check_export.py: AutoModelForCausalLM with trust_remote_code, float32, logits
# compared with `lizard logits`). Needs python3 with torch and transformers; no network, no GPU
# (everything runs on the CPU, so it is quick on any machine).
#
#   scripts/hf/check_export.sh            # CPU-only build in build-hfcheck, then every case below
#   BUILD=build SKIP_BUILD=1 WORK=/tmp/x PYTHON=python3.12 scripts/hf/check_export.sh
#
# Cases (random students over the HF fixtures in tests/fixtures/hf, every parameter random):
#   LoRA merged f32, LoRA as a peft adapter, merged bf16 weights, the plus preset with every
#   non-default switch + a softmax layer + tied embeddings, Qwen2 q/k/v bias with a per-head gate
#   and no window, a Mistral sliding-window softmax layer with window RoPE, llama3 RoPE scaling
#   with sharded files; then a real tiny pipeline (pretrain -> distill -> finetune on the CPU)
#   exported from its run directory, with `lizard info` and `lizard eval` on the export.
# Prints one PASS/FAIL line per case and exits non-zero when any case fails.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BUILD=${BUILD:-build-hfcheck}  # its own CPU-only build: nothing here needs CUDA
PY=${PYTHON:-python3}
# (export directory names avoid dots: older transformers derive a module name from them)
WORK=${WORK:-$(mktemp -d /tmp/lizard_hf_check_XXXXXX)}
mkdir -p "$WORK"
LZ=$BUILD/bin/lizard
# trust_remote_code copies modeling_lizard.py into a modules cache: keep it in the work directory.
export HF_MODULES_CACHE=${HF_MODULES_CACHE:-$WORK/hf_modules}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
FX=$ROOT/tests/fixtures/hf
echo "work directory: $WORK"

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DLIZARD_CUDA=OFF > "$WORK/cmake.log" 2>&1 || { cat "$WORK/cmake.log"; exit 2; }
  cmake --build "$BUILD" -j"$(nproc)" --target lizard > "$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; exit 2; }
fi
[ -x "$LZ" ] || { echo "no $LZ (build failed?)"; exit 2; }
"$PY" -c "import torch, transformers; print('torch', torch.__version__, '| transformers', transformers.__version__)" || {
  echo "python3 needs torch and transformers (set PYTHON=...)"; exit 2; }

RESULTS=()
FAILED=0
record() {  # name status
  if [ "$2" = 0 ]; then RESULTS+=("PASS $1"); else RESULTS+=("FAIL $1"); FAILED=$((FAILED + 1)); fi
}

# case NAME FIXTURE STAGE LIZARD_YAML EXPORT_FLAGS...
case_random() {
  local name=$1 fixture=$2 stage=$3 lizard=$4
  shift 4
  echo
  echo "=== $name: $stage over $fixture, lizard $lizard, export $*"
  cat > "$WORK/${name}.yaml" <<EOF
stage: $stage
device: cpu
seed: 1
model: {path: $FX/$fixture}
lizard: $lizard
lora: {r: 4, alpha: 8, targets: [q, k, v, o]}
EOF
  rm -rf "$WORK/${name}_ckpt" "$WORK/${name}_export"
  "$LZ" make-random-checkpoint --config "$WORK/${name}.yaml" --output "$WORK/${name}_ckpt" --seed 7 &&
    "$LZ" export --checkpoint "$WORK/${name}_ckpt" --output "$WORK/${name}_export" "$@" &&
    "$PY" scripts/hf/check_export.py "$WORK/${name}_export" --compare-with-lizard --lizard "$LZ"
  record "$name" $?
}

case_random paper_merged_f32 llama finetune "{feature_dim: 8, window: 4, sinks: 2}" --dtype f32
case_random paper_adapter_f32 llama finetune "{feature_dim: 8, window: 4, sinks: 2}" --adapter --dtype f32
case_random paper_merged_bf16 llama finetune "{feature_dim: 8, window: 4, sinks: 2}" --dtype bf16
case_random plus_every_switch_tied llama_tied distill \
  "{preset: plus, feature_dim: 24, feature_activation: exp, window: 5, sinks: 3, sinks_per_head: true, combine: convex, softmax_layers: [1]}" \
  --dtype f32
case_random qwen2_bias_per_head_no_window qwen2 finetune "{feature_dim: 8, window: 0, gate: per_head}" --adapter --dtype f32
case_random mistral_swa_hybrid_window_rope mistral_swa finetune \
  "{feature_dim: 16, window: 3, sinks: 0, window_rope: true, softmax_layers: [0]}" --dtype f32
case_random llama3_rope_plus_sharded llama3_rope distill "{preset: plus, feature_dim: 16, window: 6}" \
  --dtype f32 --max-shard-size 100KB

# ---- a real (tiny) pipeline: the checkpoints refer to the teacher run and the distill run ----
echo
echo "=== pipeline: pretrain -> distill -> finetune on the CPU, export the finetune run"
P=$WORK/pipeline
rm -rf "$P"
mkdir -p "$P"
cat > "$P/run.yaml" <<EOF
seed: 0
device: cpu
dtype: f32
loss_on: all
model: {vocab_size: 288, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2,
        num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16}
data: {path: $P/data/train.h5, seq_len: 64, micro_batch: 4, global_batch: 4}
lizard: {feature_dim: 16, window: 8, sinks: 2}
checkpoint: {keep_last: 1}
metrics: {file: ""}
stages:
  - {name: teacher, stage: pretrain, out_dir: $P/teacher, schedule: {steps: 30}, optimizer: {lr: 2.0e-3}}
  - {name: distill, stage: distill, out_dir: $P/distill, model: {path: $P/teacher}, schedule: {steps: 15}}
  - {name: finetune, stage: finetune, out_dir: $P/finetune, model: {path: $P/teacher, init_from: $P/distill},
     schedule: {steps: 15}}
EOF
(
  set -e
  "$LZ" make-demo-data --out "$P/data" > "$P/data.log"
  "$LZ" train --config "$P/run.yaml" > "$P/train.log" 2>&1 || { tail -30 "$P/train.log"; exit 1; }
  "$LZ" export --checkpoint "$P/finetune" --output "$P/export" --dtype f32
  "$LZ" export --checkpoint "$P/finetune" --output "$P/export_adapter" --adapter --dtype f32
  "$LZ" info --model "$P/export"
  echo "1 5 9 13 17 21 25 29 33 37 41 45" > "$P/tokens.txt"
  "$LZ" eval --model "$P/export" --task ppl --data "$P/tokens.txt" --device cpu
  "$PY" scripts/hf/check_export.py "$P/export" --compare-with-lizard --lizard "$LZ"
  "$PY" scripts/hf/check_export.py "$P/export_adapter" --compare-with-lizard --lizard "$LZ"
)
record pipeline_finetune_export $?

echo
echo "=== summary ($WORK)"
for r in "${RESULTS[@]}"; do echo "$r"; done
echo "$(( ${#RESULTS[@]} - FAILED )) passed, $FAILED failed"
[ "$FAILED" = 0 ]
