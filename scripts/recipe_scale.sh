#!/usr/bin/env bash
# The whole Lizard recipe at Llama-3-8B shape on 1 GPU and on N GPUs of one machine, plus the
# pretraining scaling of a ~135M Llama, in ONE device call (issues #10 and #8). Random weights
# and uniformly random tokens of the 8B vocabulary (128256), made here; nothing is downloaded.
#
#   scripts/recipe_scale.sh [--np N] [--budget-s 540] [--steps S] [--accum A] [--no-pretrain]
#                           [--no-recipe] [--pt-steps 20]
#   scripts/recipe_scale.sh --cpu-dry-run      # this script's logic on a CPU (numbers mean nothing)
#
# What it does, in order (each run has its own timeout; every result is a JSON line on stdout
# and in $OUT/recipe_scale.jsonl as soon as it exists; $OUT defaults to ./out):
#   1. builds (Release, CUDA + NCCL + MPI) when build/bin/lizard is missing;
#   2. pretraining scaling (#8): a ~135M Llama (12 x 768, vocabulary 32768, seq 1024,
#      micro-batch 8, accumulation 2 per GPU) on 1, 2 and N GPUs, medians of tokens/s over the
#      steps after the fifth, then the same on 1 and N GPUs with metrics.phases on: the
#      per-phase milliseconds of a step (data, forward, backward, communication, optimizer;
#      CUDA events on the compute stream) show where the N-GPU step loses time;
#   3. the recipe (#10): one `lizard train` config chaining stage 1 (distill, teacher = the
#      random Llama-3-8B of seed 0) and stage 2 (LoRA finetune from stage 1's checkpoint), seq
#      2048, micro-batch 1, accumulation A per GPU (default 1: what each of 8 GPUs does at the
#      paper's global batch 8), on 1 GPU (a plain process) then N GPUs (mpirun -np N). The
#      step count S per stage is sized from the time left after steps 1-2 (--steps fixes it)
#      and printed;
#   4. per stage: tokens/s per GPU (median after the warm-up steps, from metrics.jsonl),
#      efficiency 1 -> N = tokens/s(N) / (N x tokens/s(1)), wall time of the whole recipe run
#      (start-up included), peak memory per GPU (nvidia-smi sampled every 0.5 s, and the
#      caching allocator's peak of rank 0), and the projection to 8 GPUs:
#        eff(8)      = eff(N) ^ (log2 8 / log2 N)   (the same loss at every doubling of GPUs)
#        tokens/s(8) = 8 x tokens/s per GPU(1) x eff(8)
#        time(8)     = 20M tokens / tokens/s(8) per stage, + the measured start-up of the N run;
#   5. writes the markdown rows to $OUT/recipe_scale.md (ready for docs/benchmarks/).
#
# NCCL_NVLS_ENABLE=0 is exported and passed to every rank (-x), and so is
# LIZARD_ATTENTION_KERNELS when set (e.g. =tc for the fast tensor-core Lizard backward).
# Runs go to $RUNS (default /tmp/lizard_recipe_scale); logs and metrics are copied to $OUT.
set -uo pipefail
T_START=$(date +%s)
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE=0
export LIZARD_DIST_TIMEOUT_S="${LIZARD_DIST_TIMEOUT_S:-300}"
OUT="${OUT:-$PWD/out}"
RUNS="${RUNS:-/tmp/lizard_recipe_scale}"
mkdir -p "$OUT" "$RUNS"
JSONL="$OUT/recipe_scale.jsonl"
MD="$OUT/recipe_scale.md"
: > "$JSONL"
BIN="${LIZARD_BIN:-build/bin/lizard}"
REPO="$PWD"

NP=""; BUDGET=540; STEPS=""; ACCUM=1; PRETRAIN=1; RECIPE=1; PT_STEPS_ARG=""; DRY=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --np) NP="$2"; shift 2 ;;
    --budget-s) BUDGET="$2"; shift 2 ;;
    --steps) STEPS="$2"; shift 2 ;;
    --accum) ACCUM="$2"; shift 2 ;;
    --no-pretrain) PRETRAIN=0; shift ;;
    --no-recipe) RECIPE=0; shift ;;
    --pt-steps) PT_STEPS_ARG="$2"; shift 2 ;;
    --cpu-dry-run) DRY=1; shift ;;
    -h|--help) sed -n '2,38p' "$0"; exit 0 ;;
    *) echo "recipe_scale.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done

# --- helpers ---------------------------------------------------------------------------------
source scripts/lib/metrics.sh  # series, median_after
last_of() {  # FILE KEY: the value at the last training line
  series "$1" "$2" | tail -1 | awk '{ print $2 } END { if (NR == 0) print "null" }' | head -1
}
max_of() {  # FILE KEY
  series "$1" "$2" | awk 'BEGIN { m = "null" } { if (m == "null" || $2 > m) m = $2 } END { print m }'
}
steps_in() { series "$1" loss | wc -l; }
calc() {  # PROGRAM [NAME=VALUE ...]: awk BEGIN block with -v variables (numbers or null)
  local prog="$1" kv args=(); shift
  for kv in "$@"; do args+=(-v "$kv"); done
  awk "${args[@]}" "BEGIN { $prog }"
}
emit() { echo "$1" | tee -a "$JSONL"; }
elapsed() { echo $(( $(date +%s) - T_START )); }
left() { echo $(( BUDGET - $(date +%s) + T_START )); }

NGPU=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
NGPU=${NGPU:-0}
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
DEVICE=cuda; DTYPE=bf16
if [[ "$DRY" == 1 ]]; then
  DEVICE=cpu; DTYPE=f32; NGPU=2; GPU_NAME="cpu (dry run)"
fi
[[ -z "$NP" ]] && NP=$NGPU
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  nvidia-smi topo -m; echo "commit $COMMIT"; } > "$OUT/device.txt" 2>&1
emit "{\"check\": \"device\", \"gpus\": $NGPU, \"np\": $NP, \"name\": \"$GPU_NAME\", \"commit\": \"$COMMIT\", \"attention_kernels\": \"${LIZARD_ATTENTION_KERNELS:-default}\", \"budget_s\": $BUDGET}"
if [[ "$NP" -lt 2 || "$NP" -gt "$NGPU" ]]; then
  emit "{\"check\": \"summary\", \"pass\": false, \"why\": \"needs --np in [2, $NGPU] (nvidia-smi lists $NGPU GPUs)\"}"
  exit 1
fi

MPIRUN_BASE=(mpirun --bind-to none --map-by slot --oversubscribe -x NCCL_NVLS_ENABLE -x LIZARD_DIST_TIMEOUT_S)
[[ -n "${LIZARD_ATTENTION_KERNELS:-}" ]] && MPIRUN_BASE+=(-x LIZARD_ATTENTION_KERNELS)
for v in NCCL_MAX_NCHANNELS NCCL_MIN_NCHANNELS NCCL_ALGO NCCL_PROTO; do  # NCCL tuning, when set
  [[ -n "${!v:-}" ]] && MPIRUN_BASE+=(-x "$v")
done
[[ "$(id -u)" == "0" ]] && MPIRUN_BASE+=(--allow-run-as-root)
FAILED=()

# --- 1. build --------------------------------------------------------------------------------
if [[ ! -x "$BIN" ]]; then
  if [[ "$DRY" == 1 ]]; then
    emit "{\"check\": \"summary\", \"pass\": false, \"why\": \"$BIN missing (dry run: build it first, e.g. cmake -DLIZARD_CUDA=OFF)\"}"
    exit 1
  fi
  t0=$(date +%s)
  FEATURES=(-DCMAKE_BUILD_TYPE=Release -DLIZARD_CUDA=ON -DLIZARD_NCCL=ON -DLIZARD_MPI=ON)
  if [[ -f build/CMakeCache.txt ]]; then
    cmake -S . -B build "${FEATURES[@]}" > "$OUT/configure.log" 2>&1
  else
    cmake -S . -B build -G Ninja "${FEATURES[@]}" > "$OUT/configure.log" 2>&1 ||
      { rm -rf build; cmake -S . -B build "${FEATURES[@]}" > "$OUT/configure.log" 2>&1; }
  fi || { tail -20 "$OUT/configure.log"; emit "{\"check\": \"configure\", \"pass\": false}"; exit 1; }
  if ! cmake --build build -j"$(nproc)" --target lizard > "$OUT/build.log" 2>&1; then
    tail -40 "$OUT/build.log"
    emit "{\"check\": \"build\", \"pass\": false, \"log\": \"$OUT/build.log\"}"
    exit 1
  fi
  emit "{\"check\": \"build\", \"pass\": true, \"seconds\": $(( $(date +%s) - t0 ))}"
fi

# --- shapes ----------------------------------------------------------------------------------
if [[ "$DRY" == 1 ]]; then
  VOCAB=512; SEQ=64; PT_VOCAB=512; PT_SEQ=64; SKIP=1; PT_SKIP=1; PT_STEPS=4
  MODEL_LABEL="tiny (dry run)"; PT_LABEL="tiny Llama (dry run)"
  MODEL_INCLUDE="$REPO/configs/models/tiny.yaml"
  LIZARD_EXTRA="feature_dim: 16, window: 16, chunk: 16, "
  PT_MODEL="{vocab_size: 512, hidden_size: 64, intermediate_size: 160, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16}"
  PT_MICRO=2; SEC_PER_MICRO=0.5; STARTUP_S=5
else
  # Warm-up steps left out of the medians (cuBLASLt heuristics, allocator growth): 5 of the
  # 20 short pretraining steps, 3 of the recipe's long ones.
  VOCAB=128256; SEQ=2048; PT_VOCAB=32768; PT_SEQ=1024; SKIP=3; PT_SKIP=5; PT_STEPS=20
  [[ -n "$PT_STEPS_ARG" ]] && PT_STEPS="$PT_STEPS_ARG"
  MODEL_LABEL="Llama-3-8B"; PT_LABEL="pretrain ~135M (12 x 768, vocab 32768)"
  MODEL_INCLUDE="$REPO/configs/models/llama3_8b.yaml"
  LIZARD_EXTRA=""
  PT_MODEL="{vocab_size: 32768, hidden_size: 768, intermediate_size: 2048, num_hidden_layers: 12, num_attention_heads: 12, num_key_value_heads: 4, head_dim: 64}"
  PT_MICRO=8
  # Seconds per micro-batch of 2048 tokens at 8B (docs/benchmarks/step.md: ~0.35 s with the
  # tensor-core Lizard kernels, the default; LIZARD_ATTENTION_KERNELS=f32, the exact kernels,
  # adds ~45 ms x 32 layers) and the start-up of one recipe run (two 8B model builds, NCCL
  # init, stage-1 checkpoint).
  if [[ "${LIZARD_ATTENTION_KERNELS:-}" == f32 ]]; then SEC_PER_MICRO=2.0; else SEC_PER_MICRO=0.45; fi
  STARTUP_S=45
fi

# --- data ------------------------------------------------------------------------------------
make_data() {  # DIR VOCAB DOC_LEN DOCS
  [[ -f "$1/train.h5" ]] && return 0
  "$BIN" make-demo-data --out "$1" --random-vocab "$2" --random-doc-len "$3" --random-docs "$4" \
    > "$OUT/data_$(basename "$1").log" 2>&1 ||
    { emit "{\"check\": \"data\", \"pass\": false, \"log\": \"$OUT/data_$(basename "$1").log\"}"; exit 1; }
}
make_data "$RUNS/data_v$VOCAB" "$VOCAB" "$SEQ" 512
make_data "$RUNS/data_v$PT_VOCAB" "$PT_VOCAB" "$PT_SEQ" 2048

# --- runs ------------------------------------------------------------------------------------
# A GPU memory sampler per run (max MiB per GPU index), stopped after the run.
MEM_PID=""
mem_start() {
  MEM_PID=""
  [[ "$DRY" == 1 ]] && return
  nvidia-smi --query-gpu=index,memory.used --format=csv,noheader,nounits -lms 500 > "$OUT/$1.gpumem.csv" 2>/dev/null &
  MEM_PID=$!
}
mem_stop() { [[ -n "$MEM_PID" ]] && kill "$MEM_PID" 2>/dev/null && wait "$MEM_PID" 2>/dev/null; MEM_PID=""; }
mem_peaks() {  # NAME -> JSON list of peak GiB per GPU index used by the run
  local f="$OUT/$1.gpumem.csv"
  [[ -s "$f" ]] || { echo "null"; return; }
  awk -F', *' '{ if ($2 > m[$1]) m[$1] = $2 } END { s = ""; for (i = 0; i in m; i++) s = s (s == "" ? "" : ", ") sprintf("%.1f", m[i] / 1024); print "[" s "]" }' "$f"
}
# Runs `lizard train` on NP ranks (1: a plain process on GPU 0); sets RUN_WALL.
RUN_WALL=0
train() {  # NP NAME CONFIG TIMEOUT_S [--set ...]
  local n="$1" name="$2" cfg="$3" to="$4"; shift 4
  local t0 rc; t0=$(date +%s)
  mem_start "$name"
  if [[ "$n" == 1 ]]; then
    CUDA_VISIBLE_DEVICES=0 timeout "$to" "$BIN" train --config "$cfg" "$@" > "$OUT/$name.log" 2>&1
  else
    timeout "$to" "${MPIRUN_BASE[@]}" -np "$n" "$BIN" train --config "$cfg" "$@" > "$OUT/$name.log" 2>&1
  fi
  rc=$?
  mem_stop
  RUN_WALL=$(( $(date +%s) - t0 ))
  echo "  $name: rc $rc, ${RUN_WALL} s, $(grep -E 'done|rror' "$OUT/$name.log" | tail -1)" >&2
  return $rc
}

# --- 2. pretraining scaling (#8) -------------------------------------------------------------
pt_config() {  # FILE OUT_DIR
  cat > "$1" <<EOF
# ~135M Llama pretraining (scripts/recipe_scale.sh); random tokens, every token a target.
stage: pretrain
device: $DEVICE
dtype: $DTYPE
seed: 0
loss_on: all
out_dir: $2
model: $PT_MODEL
data: {path: $RUNS/data_v$PT_VOCAB/train.h5, val_fraction: 0.0, seq_len: $PT_SEQ, micro_batch: $PT_MICRO, global_batch: 16}
eval: {every: 0}
optimizer: {lr: 1.0e-3}
schedule: {steps: $PT_STEPS, warmup: 0.1}
checkpoint: {keep_last: 1}
metrics: {log_every: 1}
EOF
}
PT_ROWS=(); PH_ROWS=()
pretrain_run() {  # NP NAME [--set ...]: accumulation 2 per GPU, global batch 2 x NP x micro
  local n="$1" name="$2"; shift 2
  local dir="$RUNS/$name"; rm -rf "$dir"
  pt_config "$OUT/$name.yaml" "$dir"
  # At most 90 s (20 short steps and start-up take ~20), never eating the recipe's last 240 s.
  local to=$(( $(left) - 240 )); [[ "$to" -gt 90 ]] && to=90
  if [[ "$to" -lt 20 ]]; then
    emit "{\"check\": \"$name\", \"pass\": false, \"why\": \"skipped: $(left) s left, kept for the recipe\"}"
    return 1
  fi
  train "$n" "$name" "$OUT/$name.yaml" "$to" --set data.global_batch=$(( 2 * n * PT_MICRO )) "$@"
  local rc=$?
  cp "$dir/metrics.jsonl" "$OUT/$name.metrics.jsonl" 2>/dev/null
  return $rc
}
phase_json() {  # METRICS: median ms per phase after SKIP, as JSON fields
  local f="$1" s="" k v
  for k in ms_step ms_data ms_forward ms_backward ms_communication ms_sync ms_optimizer ms_other; do
    v=$(median_after "$f" "$k" "$PT_SKIP")
    [[ "$v" == null ]] && continue
    s="$s, \"$k\": $v"
  done
  echo "${s#, }"
}
if [[ "$PRETRAIN" == 1 ]]; then
  declare -A PT_TPS
  NS=(1 2); [[ "$NP" -gt 2 ]] && NS+=("$NP")
  for n in "${NS[@]}"; do
    if pretrain_run "$n" "pt135m_${n}gpu"; then
      PT_TPS[$n]=$(median_after "$OUT/pt135m_${n}gpu.metrics.jsonl" tokens_per_s "$PT_SKIP")
    else
      PT_TPS[$n]=null; FAILED+=("pretrain_${n}gpu")
    fi
  done
  for n in "${NS[@]}"; do
    [[ "$n" == 1 ]] && continue
    eff=$(calc 'if (a == "null" || b == "null" || a <= 0) print "null"; else printf "%.4f", b / (n * a)' \
      a="${PT_TPS[1]}" b="${PT_TPS[$n]}" n="$n")
    target=$([[ "$n" == 2 ]] && echo 0.95 || echo 0.90)
    emit "{\"check\": \"pretrain_135m_scaling\", \"gpus\": [1, $n], \"tokens_per_s\": [${PT_TPS[1]}, ${PT_TPS[$n]}], \"efficiency\": $eff, \"target\": $target, \"global_batch\": [$(( 2 * PT_MICRO )), $(( 2 * n * PT_MICRO ))], \"device\": \"$GPU_NAME\"}"
    PT_ROWS+=("| $PT_LABEL, seq $PT_SEQ, micro-batch $PT_MICRO x 2 per GPU | 1 -> $n | ${PT_TPS[1]} | ${PT_TPS[$n]} | $eff | $target |")
  done
  # Where the time goes: the same runs with the per-phase step timer.
  for n in 1 "$NP"; do
    if pretrain_run "$n" "pt135m_phases_${n}gpu" --set metrics.phases=true; then
      row="| $n |"
      for k in ms_step ms_data ms_forward ms_backward ms_communication ms_optimizer; do
        row="$row $(median_after "$OUT/pt135m_phases_${n}gpu.metrics.jsonl" "$k" "$PT_SKIP") |"
      done
      PH_ROWS+=("$row")
      emit "{\"check\": \"pretrain_135m_phases\", \"gpus\": $n, \"tokens_per_s\": $(median_after "$OUT/pt135m_phases_${n}gpu.metrics.jsonl" tokens_per_s "$PT_SKIP"), $(phase_json "$OUT/pt135m_phases_${n}gpu.metrics.jsonl")}"
    else
      FAILED+=("pretrain_phases_${n}gpu")
    fi
  done
fi

if [[ "$RECIPE" == 0 ]]; then  # pretraining scaling only
  { printf '%s\n' "${PT_ROWS[@]}"; printf '%s\n' "${PH_ROWS[@]}"; } > "$MD"
  cat "$MD" >&2
  [[ ${#FAILED[@]} == 0 ]] && emit "{\"check\": \"summary\", \"pass\": true, \"seconds\": $(elapsed)}" && exit 0
  emit "{\"check\": \"summary\", \"pass\": false, \"failed\": \"${FAILED[*]}\", \"seconds\": $(elapsed)}"
  exit 1
fi

# --- 3. the recipe at Llama-3-8B shape (#10) -------------------------------------------------
# Two runs (1 GPU, NP GPUs) of S + S steps of ACCUM micro-batches per GPU each, plus start-up.
if [[ -z "$STEPS" ]]; then
  STEPS=$(calc 's = int((l - 2 * u - 30) / (4 * a * t)); if (s > 40) s = 40; print s' \
    l="$(left)" u="$STARTUP_S" a="$ACCUM" t="$SEC_PER_MICRO")
  if [[ "$STEPS" -lt $(( SKIP + 3 )) ]]; then
    emit "{\"check\": \"recipe_steps\", \"pass\": false, \"why\": \"$(left) s left, not enough for $(( SKIP + 3 )) steps per stage at ~$SEC_PER_MICRO s per micro-batch; rerun on the warm machine (build kept) or pass --steps\"}"
    STEPS=$(( SKIP + 3 ))
  fi
fi
[[ "$DRY" == 1 ]] && STEPS=4
emit "{\"check\": \"recipe_steps\", \"steps_per_stage\": $STEPS, \"accum_per_gpu\": $ACCUM, \"warmup_skipped\": $SKIP, \"seconds_left\": $(left), \"sec_per_micro_assumed\": $SEC_PER_MICRO}"
recipe_config() {  # FILE RUN_DIR GLOBAL_BATCH
  cat > "$1" <<EOF
# The two-stage Lizard recipe at $(basename "$MODEL_INCLUDE" .yaml) shape, random weights (the
# teacher is the model of seed 0, the same in both stages), random tokens (scripts/recipe_scale.sh).
include: $MODEL_INCLUDE
seed: 0
device: $DEVICE
dtype: $DTYPE
loss_on: all
data: {path: $RUNS/data_v$VOCAB/train.h5, val_fraction: 0.0, seq_len: $SEQ, micro_batch: 1, global_batch: $3}
eval: {every: 0}
checkpoint: {keep_last: 1}
metrics: {log_every: 1}
lizard: {${LIZARD_EXTRA}preset: paper}
stages:
  - name: distill
    stage: distill
    out_dir: $2/distill
    optimizer: {lr: 1.0e-3}
    schedule: {steps: $STEPS, warmup: 0.1}
  - name: finetune
    stage: finetune
    out_dir: $2/finetune
    model: {init_from: $2/distill/checkpoints}
    optimizer: {lr: 5.0e-4}
    schedule: {steps: $STEPS, warmup: 0.1}
EOF
}
declare -A TPS WALL MEMA MEMG LOOP
recipe_run() {  # NP
  local n="$1" name="recipe_${1}gpu" dir="$RUNS/recipe_${1}gpu"
  rm -rf "$dir"
  recipe_config "$OUT/$name.yaml" "$dir" $(( n * ACCUM ))
  local budget; budget=$(left)
  [[ "$n" == 1 ]] && budget=$(( budget / 2 + 30 ))  # leave the N-GPU run its share
  [[ "$budget" -lt 30 ]] && budget=30
  train "$n" "$name" "$OUT/$name.yaml" "$budget"
  local rc=$?
  WALL[$n]=$RUN_WALL
  MEMG[$n]=$(mem_peaks "$name")
  local loop=0 st f
  for st in distill finetune; do
    f="$dir/$st/metrics.jsonl"
    cp "$f" "$OUT/$name.$st.metrics.jsonl" 2>/dev/null
    TPS[$n,$st]=$(median_after "$f" tokens_per_s "$SKIP")
    MEMA[$n,$st]=$(max_of "$f" memory_gib)
    LOOP[$n,$st]=$(last_of "$f" elapsed_s)
    emit "{\"check\": \"recipe_run\", \"gpus\": $n, \"stage\": \"$st\", \"steps_done\": $(steps_in "$f"), \"tokens_per_s\": ${TPS[$n,$st]}, \"loss_last\": $(last_of "$f" loss), \"loop_s\": ${LOOP[$n,$st]}, \"allocator_peak_gib_rank0\": ${MEMA[$n,$st]}, \"rc\": $rc}"
  done
  emit "{\"check\": \"recipe_wall\", \"gpus\": $n, \"wall_s\": ${WALL[$n]}, \"gpu_peak_gib\": ${MEMG[$n]}, \"rc\": $rc}"
  return $rc
}
recipe_run 1 || FAILED+=(recipe_1gpu)
recipe_run "$NP" || FAILED+=(recipe_${NP}gpu)

# --- 4. efficiency and the 8-GPU projection --------------------------------------------------
ROWS=()
TOTAL8=0
for st in distill finetune; do
  a=${TPS[1,$st]}; b=${TPS[$NP,$st]}
  res=$(calc 'if (a == "null" || b == "null" || a <= 0) { print "null null null null null null"; exit }
    e = b / (n * a); e8 = exp(log(e) * 3 / (log(n) / log(2))); t8 = 8 * a * e8
    printf "%.1f %.1f %.4f %.4f %.0f %.0f", a, b / n, e, e8, t8, 20e6 / t8' a="$a" b="$b" n="$NP")
  read -r pg1 pgn eff eff8 tps8 sec8 <<< "$res"
  emit "{\"check\": \"recipe_scaling\", \"stage\": \"$st\", \"gpus\": [1, $NP], \"tokens_per_s_per_gpu\": [$pg1, $pgn], \"efficiency\": $eff, \"projected_efficiency_8\": $eff8, \"projected_tokens_per_s_8\": $tps8, \"projected_s_for_20M_tokens_8\": $sec8, \"formula\": \"eff8 = eff^(3/log2 N); tok/s(8) = 8 x tok/s/GPU(1) x eff8; time = 20e6 / tok/s(8)\"}"
  [[ "$sec8" != null ]] && TOTAL8=$(( TOTAL8 + sec8 ))
  ROWS+=("| $st | $pg1 | $pgn | $eff | ${MEMA[1,$st]} / ${MEMA[$NP,$st]} | $eff8 | $sec8 |")
done
# Start-up of the N run: its wall time less the two stages' step loops.
STARTUP_N=$(calc 'if (d == "null" || f == "null") print "null"; else printf "%.0f", w - d - f' \
  w="${WALL[$NP]:-0}" d="${LOOP[$NP,distill]:-null}" f="${LOOP[$NP,finetune]:-null}")
RECIPE8=$(calc 'if (s == "null" || t == 0) print "null"; else printf "%.0f", t + s' s="$STARTUP_N" t="$TOTAL8")
emit "{\"check\": \"recipe_projection_8\", \"seconds_20M_tokens_both_stages\": $TOTAL8, \"startup_s_measured_np\": $STARTUP_N, \"recipe_s\": $RECIPE8, \"recipe_min\": $(calc 'if (s == "null") print "null"; else printf "%.1f", s / 60' s="$RECIPE8")}"

{
  echo "<!-- scripts/recipe_scale.sh, $(date -u +%Y-%m-%d), $GPU_NAME x $NP, commit $COMMIT, LIZARD_ATTENTION_KERNELS=${LIZARD_ATTENTION_KERNELS:-default} -->"
  echo
  echo "Recipe at $MODEL_LABEL shape (random weights and tokens, seq $SEQ, micro-batch 1, $ACCUM micro-batch(es) per GPU per step, $STEPS steps per stage, medians after step $SKIP):"
  echo
  echo "| stage | tokens/s per GPU, 1 GPU | tokens/s per GPU, $NP GPUs | efficiency 1 -> $NP | allocator peak GiB rank 0 (1 / $NP GPUs) | projected efficiency 1 -> 8 | projected s for 20M tokens on 8 GPUs |"
  echo "|---|---|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
  echo
  echo "Whole recipe run ($STEPS + $STEPS steps, start-up included): 1 GPU ${WALL[1]:-?} s (nvidia-smi peak GiB ${MEMG[1]:-?}), $NP GPUs ${WALL[$NP]:-?} s (peak GiB per GPU ${MEMG[$NP]:-?})."
  echo "Projection to 8 GPUs (eff8 = eff^(3 / log2 $NP), tokens/s(8) = 8 x tokens/s per GPU on 1 GPU x eff8, 20M tokens per stage, plus the $NP-GPU run's start-up of ${STARTUP_N} s): ${RECIPE8} s."
  if [[ ${#PT_ROWS[@]} -gt 0 ]]; then
    echo
    echo "| workload | GPUs | tokens/s 1 GPU | tokens/s N GPUs | efficiency | target |"
    echo "|---|---|---|---|---|---|"
    printf '%s\n' "${PT_ROWS[@]}"
  fi
  if [[ ${#PH_ROWS[@]} -gt 0 ]]; then
    echo
    echo "Where a pretraining step's time goes (metrics.phases: CUDA events on the compute stream, median ms after step $PT_SKIP):"
    echo
    echo "| GPUs | step | data | forward | backward | communication (exposed) | optimizer |"
    echo "|---|---|---|---|---|---|---|"
    printf '%s\n' "${PH_ROWS[@]}"
  fi
} > "$MD"
cat "$MD" >&2

echo "recipe_scale.sh: $(elapsed) s in all" >&2
if [[ ${#FAILED[@]} == 0 ]]; then
  emit "{\"check\": \"summary\", \"pass\": true, \"seconds\": $(elapsed)}"
else
  emit "{\"check\": \"summary\", \"pass\": false, \"failed\": \"${FAILED[*]}\", \"seconds\": $(elapsed)}"
  exit 1
fi
