// The analytic cost of one training step: model FLOPs per token (for MFU) and the memory a
// step needs (weights, optimizer state, activations kept for backward, logits), per stage and
// recomputation mode. `lizard bench step` prints both next to what it measures; the trainer's
// MFU uses the same FLOP count.
//
// FLOP conventions (those of the PyTorch anchor in ANCHORS.md, so MFUs compare):
//   N = every parameter of the base model, embeddings included (LlamaConfig::num_parameters);
//   a matmul of an [m, k] by a [k, n] is 2 m k n; backward is twice the forward;
//   causal softmax attention per token and layer: forward 4 T/2 H D (QK^T and PV over T/2 keys
//   on average), so forward + backward 6 T/2 H D; recomputation is not counted (model FLOPs).
//   pretrain: 6 N + softmax attention (fwd+bwd).
//   finetune: 4 N (forward 2 N, activation gradients 2 N; the frozen base gets no
//     weight-gradient GEMMs) + 6 N_lora + student attention fwd+bwd (3 x forward) per layer.
//   distill: 2 N_layers (the teacher's decoder layers only: no LM head, the embedding is a
//     lookup) + teacher softmax attention forward + Lizard attention fwd+bwd per layer.
// Lizard attention forward per token and head (DESIGN.md section 3, chunk C, feature width
// 2F, window w): feature maps 2 x 2 D F; intra-chunk scores 2 (2F) C/2 and P[V|1]
// 2 (C/2)(D+1); inter-chunk read 2 (2F)(D+1); state update 2 (2F)(D+1); window 4 w D
// (scores and PV over w keys); plus the gate 2 d per token (per head with a per-head gate).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "lizard/nn/llama_config.h"
#include "lizard/ops/lizard_config.h"

namespace lizard::train {

/// Activation recomputation: none; the Lizard attention's per-chunk states and feature maps only
/// (the backward reruns the feature maps and the state sweep); the student attention; every
/// decoder layer.
enum class RecomputeMode { None, States, Attention, Layer };
/// "none" | "states" | "attention" | "layer" (InputError naming `what` otherwise).
RecomputeMode recompute_mode_from_name(const std::string& s, const std::string& what = "recompute");
const char* name_of(RecomputeMode m);

/// What one step trains, at which shape.
struct StepShape {
  nn::LlamaConfig arch;
  std::string stage = "finetune";  ///< pretrain | distill | finetune
  ops::LizardConfig lizard;        ///< resolved
  std::vector<int64_t> softmax_layers;  ///< layers kept softmax in the student
  int64_t seq_len = 2048;
  int64_t micro_batch = 1;
  int64_t lora_r = 8;
  std::vector<std::string> lora_targets{"q", "k", "v"};
  bool train_lizard_params = false;  ///< finetune: Lizard parameters train too
  int64_t dtype_bytes = 2;           ///< compute / frozen-weight dtype (bf16: 2)
  RecomputeMode recompute = RecomputeMode::None;
};

/// Model FLOPs per token, split by term (they sum to `total`).
struct FlopsPerToken {
  double dense = 0;              ///< 2N, 4N or 6N part (see the header comment)
  double lora = 0;               ///< 6 x LoRA parameters (finetune)
  double teacher_attention = 0;  ///< softmax attention of the teacher / softmax layers
  double student_attention = 0;  ///< Lizard attention, forward + backward
  double total = 0;
  std::string formula;  ///< the formula in words, for reports
};

FlopsPerToken step_flops_per_token(const StepShape& s);

/// Whether RecomputeMode::States really drops the per-chunk states (and feature maps) for this
/// shape: only the CUDA tensor-core Lizard backward rebuilds them (and only its forward keeps
/// the feature maps), so bf16 compute and its shapes (head dim and feature dim multiples of
/// 16, head dim <= 128, 2F <= 256: tc_supported in cuda/lizard_attention_tc.cuh). Elsewhere
/// the forward keeps the states whatever the mode says.
bool lizard_states_recomputable(const StepShape& s);

/// Forward FLOPs of one Lizard attention layer per token (all heads; see the header comment).
double lizard_attention_forward_flops(const ops::LizardConfig& c, int64_t H, int64_t D,
                                      int64_t d_model);
/// Forward FLOPs of one causal softmax attention layer per token at length T (window 0 = full).
double softmax_attention_forward_flops(int64_t T, int64_t H, int64_t D, int64_t window = 0);

/// Parameter counts of the trainable parts.
int64_t lora_parameter_count(const StepShape& s);
int64_t lizard_parameter_count(const StepShape& s);  ///< all linearized layers together

/// Bytes a step needs on one device, by kind. An estimate from the tensors the tape keeps
/// (listed in step_cost.cpp); the caching allocator's rounding, cuBLAS workspaces and
/// temporaries inside one op come on top, so the measured peak is somewhat higher.
struct MemoryEstimate {
  double weights = 0;                ///< every parameter in its dtype (Lizard parameters fp32)
  double trainable_state = 0;        ///< gradients, fp32 master copies, AdamW m and v
  double activations_per_layer = 0;  ///< kept from forward to backward by one layer
  double activations = 0;            ///< all layers
  /// One layer's backward: its activations rebuilt under recomputation plus the CUDA Lizard
  /// backward's scratch (dstates, dphi, recomputed phi, f32 gradients).
  double recompute_transient = 0;
  double logits = 0;  ///< LM-head logits and their gradient (finetune/pretrain)
  /// weights + trainable_state + activations + max(recompute_transient, logits): the logits
  /// are freed before the layers' backward starts.
  double total = 0;
};

MemoryEstimate estimate_step_memory(const StepShape& s);

}  // namespace lizard::train
