// Analytic FLOPs and memory of a training step (see include/lizard/train/step_cost.h).
#include "lizard/train/step_cost.h"

#include <algorithm>
#include <initializer_list>

#include "lizard/core/error.h"

namespace lizard::train {

RecomputeMode recompute_mode_from_name(const std::string& s, const std::string& what) {
  if (s == "none") return RecomputeMode::None;
  if (s == "states") return RecomputeMode::States;
  if (s == "attention") return RecomputeMode::Attention;
  if (s == "layer") return RecomputeMode::Layer;
  throw InputError(what + ": '" + s + "' is not one of none, states, attention, layer");
}

const char* name_of(RecomputeMode m) {
  switch (m) {
    case RecomputeMode::None: return "none";
    case RecomputeMode::States: return "states";
    case RecomputeMode::Attention: return "attention";
    case RecomputeMode::Layer: return "layer";
  }
  return "none";
}

namespace {

/// Whether layer l keeps softmax attention (lizard.softmax_layers; every layer in pretraining).
bool is_softmax_layer(const StepShape& s, int64_t l) {
  return s.stage == "pretrain" ||
         std::find(s.softmax_layers.begin(), s.softmax_layers.end(), l) != s.softmax_layers.end();
}

int64_t softmax_layer_count(const StepShape& s) {
  int64_t n = 0;
  for (int64_t l = 0; l < s.arch.num_hidden_layers; ++l) n += is_softmax_layer(s, l);
  return n;
}

}  // namespace

double lizard_attention_forward_flops(const ops::LizardConfig& c, int64_t H, int64_t D,
                                      int64_t d_model) {
  const double F = static_cast<double>(c.feature_dim), C = static_cast<double>(c.chunk);
  const double Dd = static_cast<double>(D), w = static_cast<double>(c.window);
  const double per_head = 2 * (2 * Dd * F)          // feature maps of q and k
                          + 2 * (2 * F) * (C / 2)    // intra-chunk scores (causal half)
                          + 2 * (C / 2) * (Dd + 1)   // intra-chunk P [V | 1]
                          + 2 * (2 * F) * (Dd + 1)   // read of the carried [S | z]
                          + 2 * (2 * F) * (Dd + 1)   // state update
                          + 4 * w * Dd;              // window scores and PV
  const double gates = c.gate_mode() == ops::GateMode::PerHead ? static_cast<double>(H) : 1.0;
  return static_cast<double>(H) * per_head + gates * 2 * static_cast<double>(d_model);
}

double softmax_attention_forward_flops(int64_t T, int64_t H, int64_t D, int64_t window) {
  double keys = static_cast<double>(T) / 2;
  if (window > 0) keys = std::min(keys, static_cast<double>(window));
  return 4 * keys * static_cast<double>(H) * static_cast<double>(D);
}

int64_t lora_parameter_count(const StepShape& s) {
  if (s.stage != "finetune") return 0;
  const nn::LlamaConfig& a = s.arch;
  const int64_t q = a.num_attention_heads * a.head_dim, kv = a.num_key_value_heads * a.head_dim;
  int64_t per_layer = 0;
  for (const std::string& t : s.lora_targets) {
    if (t == "q") per_layer += s.lora_r * (a.hidden_size + q);
    else if (t == "k" || t == "v") per_layer += s.lora_r * (a.hidden_size + kv);
    else if (t == "o") per_layer += s.lora_r * (q + a.hidden_size);
  }
  return per_layer * a.num_hidden_layers;
}

int64_t lizard_parameter_count(const StepShape& s) {
  if (s.stage == "pretrain") return 0;
  const nn::LlamaConfig& a = s.arch;
  const ops::LizardConfig& c = s.lizard;
  const int64_t H = a.num_attention_heads;
  const int64_t Hg = c.gate_mode() == ops::GateMode::PerHead ? H : 1;
  // Shapes of ops::lizard_init_params: wq, wk [H, D, F]; w_g [Hg, d]; b_g [Hg]; tau; alpha [1].
  int64_t per_layer = 2 * H * a.head_dim * c.feature_dim + Hg * a.hidden_size + Hg + 1;
  if (c.window > 0 && c.sinks > 0) per_layer += (c.sinks_per_head ? H : 1) * c.sinks;
  return per_layer * (a.num_hidden_layers - softmax_layer_count(s));
}

FlopsPerToken step_flops_per_token(const StepShape& s) {
  const nn::LlamaConfig& a = s.arch;
  const double N = static_cast<double>(a.num_parameters());
  const int64_t L = a.num_hidden_layers, H = a.num_attention_heads, D = a.head_dim;
  const int64_t l_soft = softmax_layer_count(s), l_lin = L - l_soft;
  const double soft_fwd = softmax_attention_forward_flops(s.seq_len, H, D, a.sliding_window);
  const double liz_fwd = lizard_attention_forward_flops(s.lizard, H, D, a.hidden_size);
  FlopsPerToken f;
  if (s.stage == "pretrain") {
    f.dense = 6 * N;
    f.teacher_attention = 3 * soft_fwd * static_cast<double>(L);
    f.formula = "6N + 3 x causal softmax attention forward (4 (T/2) H D per layer)";
  } else if (s.stage == "finetune") {
    f.dense = 4 * N;
    f.lora = 6 * static_cast<double>(lora_parameter_count(s));
    f.teacher_attention = 3 * soft_fwd * static_cast<double>(l_soft);
    f.student_attention = 3 * liz_fwd * static_cast<double>(l_lin);
    f.formula = "4N (frozen base: forward 2N + activation gradients 2N) + 6 N_lora + "
                "3 x Lizard attention forward per linearized layer (+ 3 x softmax attention "
                "forward per softmax layer)";
  } else if (s.stage == "distill") {
    const double embed = static_cast<double>(a.vocab_size * a.hidden_size);
    const double n_layers = N - embed * (a.tie_word_embeddings ? 1 : 2) -
                            static_cast<double>(a.hidden_size);
    // The teacher runs up to the last linearized layer's attention (DistillTask): that layer's
    // o_proj, norm and MLP and every layer after it are never computed.
    int64_t last = -1;
    for (int64_t l = 0; l < L; ++l)
      if (!is_softmax_layer(s, l)) last = l;
    const double per_layer = n_layers / static_cast<double>(L);
    const int64_t q = H * D, kv = a.num_key_value_heads * D;
    const double attn_in = static_cast<double>(a.hidden_size) * static_cast<double>(1 + q + 2 * kv) +
                           (a.attention_bias ? static_cast<double>(q + 2 * kv) : 0.0);
    f.dense = last < 0 ? 0.0 : 2 * (per_layer * static_cast<double>(last) + attn_in);
    f.teacher_attention = soft_fwd * static_cast<double>(last + 1);
    f.student_attention = 3 * liz_fwd * static_cast<double>(l_lin);
    f.formula = "2 N_layers (teacher decoder layers up to the last linearized layer's attention "
                "input projections, forward only; no LM head) + causal softmax attention forward "
                "(4 (T/2) H D) per teacher layer run + 3 x Lizard attention forward per "
                "linearized layer";
  } else {
    throw InputError("stage: '" + s.stage + "' is not one of pretrain, distill, finetune");
  }
  f.total = f.dense + f.lora + f.teacher_attention + f.student_attention;
  return f;
}

bool lizard_states_recomputable(const StepShape& s) {
  const int64_t D = s.arch.head_dim, F = s.lizard.feature_dim;
  return s.dtype_bytes == 2 && D % 16 == 0 && D <= 128 && F % 16 == 0 && 2 * F <= 256;
}

MemoryEstimate estimate_step_memory(const StepShape& s) {
  const nn::LlamaConfig& a = s.arch;
  const double e = static_cast<double>(s.dtype_bytes);
  const double d = static_cast<double>(a.hidden_size), I = static_cast<double>(a.intermediate_size);
  const double H = static_cast<double>(a.num_attention_heads);
  const double Hkv = static_cast<double>(a.num_key_value_heads), D = static_cast<double>(a.head_dim);
  const double V = static_cast<double>(a.vocab_size);
  const ops::LizardConfig& c = s.lizard;
  const double F = static_cast<double>(c.feature_dim);
  const double Hg = c.gate_mode() == ops::GateMode::PerHead ? H : 1.0;
  const double tokens = static_cast<double>(s.seq_len * s.micro_batch);
  const int64_t L = a.num_hidden_layers, l_soft = softmax_layer_count(s), l_lin = L - l_soft;
  const double n_lora = static_cast<double>(lora_parameter_count(s));
  const double n_lizard = static_cast<double>(lizard_parameter_count(s));

  MemoryEstimate m;
  m.weights = static_cast<double>(a.num_parameters()) * e + n_lora * e + n_lizard * 4;
  // Per trainable parameter: its gradient (param dtype), an fp32 master copy unless the
  // parameter is fp32, and AdamW's fp32 m and v.
  auto state_bytes = [](double pe) { return pe + (pe == 4 ? 0 : 4) + 8; };
  if (s.stage == "pretrain") {
    m.trainable_state = static_cast<double>(a.num_parameters()) * state_bytes(e);
  } else if (s.stage == "distill") {
    m.trainable_state = n_lizard * state_bytes(4);
  } else {
    m.trainable_state = n_lora * state_bytes(e) + (s.train_lizard_params ? n_lizard * state_bytes(4) : 0);
  }

  // Bytes per token kept by the tape. Attention inputs: q, k, v as the mixing reads them.
  const double qkv = (H + 2 * Hkv) * D * e;
  // The CUDA Lizard forward's saved statistics (ops::LizardSaved, f32): per-chunk [S|z]
  // states (chunks of ops::kCudaChunk tokens: the kernels' chunk, not lizard.chunk), [M|den]
  // rows, window stats, the gate's log-decay and logits.
  const double Ck = static_cast<double>(ops::kCudaChunk);
  const double states = H * 2 * F * (D + 1) / Ck * 4;  // RecomputeMode::States drops these
  // On the tensor cores the states come with the feature maps as bf16 hi + lo pairs of q and
  // k (ops::LizardSaved::phiq...: 4 x [H, 2F] bf16), dropped with them. (Also kept: the split
  // feature weights, 4 x H D F bf16 a layer, not per token: 4 MiB a layer at 8B, left out.)
  const bool tc = lizard_states_recomputable(s);
  const double phi_pair_bytes = 4 * H * 2 * F * 2;
  const double phi_pair = tc ? phi_pair_bytes : 0.0;
  const double kernel_state = states + phi_pair + (H * (D + 1) + 2 * H + 2 * Hg) * 4;
  // What the tape keeps of it, and what one layer's backward rebuilds on top of its scratch.
  const bool drop_states = s.recompute == RecomputeMode::States && tc;
  const double kept_state = drop_states ? kernel_state - states - phi_pair : kernel_state;
  const double rebuilt_state = drop_states ? states : 0.0;
  // Whether the tape keeps the mixing's saved tensors (the states too unless drop_states).
  const bool tape = s.recompute == RecomputeMode::None || s.recompute == RecomputeMode::States;
  // The CUDA Lizard backward's scratch for one layer (cuda/lizard_attention_bwd.cu), alive
  // together while that layer's backward runs: dstates (as the states), dO' [H, D+1] f32
  // and, on the tensor cores, its bf16 pair [H, D] x 2 (the dstate sweep's operand), dphi_q and
  // dphi_k [H, 2F] f32, phi_q and phi_k recomputed as bf16 hi + lo where the
  // forward did not keep them (drop_states, or the f32 kernels, which recompute f32 phi in
  // about the same room), du [H, F] bf16, the f32 gradients of q, k, v and their copies in the
  // compute dtype, and the gate input's gradient (written in the compute dtype directly).
  const double grads = (H * D + 2 * Hkv * D);
  const double phi_rebuilt = tc && !drop_states ? 0.0 : phi_pair_bytes;
  const double dO_pair = tc ? H * D * 4 : 0.0;
  const double bwd_scratch = states + H * (D + 1) * 4 + dO_pair + 2 * H * 2 * F * 4 +
                             phi_rebuilt + H * F * 2 + grads * (4 + e) + d * e;
  double kept = 0, transient = 0;
  if (s.stage == "distill") {
    // Teacher path has no tape. Per linearized layer: the student's inputs (normed x, q, k,
    // v), the teacher target y_t, and (without recompute) y_s for the MSE plus the kernel state.
    const double inputs = d * e + qkv + H * D * e;
    const double student = kernel_state + H * D * e;
    kept = (tape ? inputs + kept_state + H * D * e : inputs) * static_cast<double>(l_lin) / L;
    const double teacher_working = 3 * I * e + 4 * d * e;  // one layer's forward temporaries
    const double student_bwd = l_lin > 0 ? (tape ? rebuilt_state : student) + bwd_scratch : 0.0;
    transient = std::max(student_bwd, teacher_working);
  } else {
    // Outside the mixing. A matmul keeps its input only when its weight trains
    // (autograd::matmul), so with a frozen base only the LoRA targets' inputs stay:
    // the two norm inputs (2 d), the attention's normed input when q, k or v carries LoRA
    // (the MLP's normed input and the o_proj and down_proj inputs feed frozen weights),
    // SwiGLU's gate and up outputs (2 I), LoRA's x A^T (r per target). Pretraining trains
    // every weight and keeps all of them: 4 d + H D + 3 I.
    auto targets = [&](std::initializer_list<const char*> names) {
      for (const std::string& t : s.lora_targets)
        for (const char* n : names)
          if (t == n) return true;
      return false;
    };
    const bool all = s.stage == "pretrain";
    const double rest =
        2 * d * e + 2 * I * e +
        ((all || targets({"q", "k", "v"})) ? d * e : 0.0) + (all ? d * e + I * e : 0.0) +
        ((all || targets({"o"})) ? H * D * e : 0.0) +
        (all ? 0.0 : static_cast<double>(s.lora_r * static_cast<int64_t>(s.lora_targets.size())) * e);
    const double soft_saved = qkv + H * D * e + H * 4;  // rope'd q, k, v, output o, lse
    const double lin_layer = rest + qkv + (tape ? kept_state : 0);
    const double soft_layer = rest + soft_saved;
    const double avg = (lin_layer * static_cast<double>(l_lin) + soft_layer * static_cast<double>(l_soft)) / L;
    const double lin_bwd = l_lin > 0 ? bwd_scratch + rebuilt_state : 0.0;
    if (s.recompute == RecomputeMode::Layer) {
      kept = d * e;  // the checkpoint keeps the layer input only
      // The rebuilt layer; by the time its attention runs backward, the MLP's backward has
      // freed SwiGLU's two saved outputs (2 I).
      transient = std::max({lin_layer + kernel_state, lin_layer - 2 * I * e + kernel_state + lin_bwd, soft_layer});
    } else {
      kept = avg;
      transient = (s.recompute == RecomputeMode::Attention && l_lin > 0 ? kernel_state : 0) + lin_bwd;
    }
    // Logits (compute dtype) and their gradient, alive together while the cross-entropy and
    // LM head run backward, plus the final norm's and the LM head's inputs. They are freed
    // before the layers' backward starts, so the peak is the larger of this and a layer's
    // transient, not their sum.
    m.logits = tokens * (2 * V * e + 2 * d * e);
  }
  m.activations_per_layer = kept * tokens;
  m.activations = m.activations_per_layer * static_cast<double>(L);
  m.recompute_transient = transient * tokens;
  m.total = m.weights + m.trainable_state + m.activations + std::max(m.recompute_transient, m.logits);
  return m;
}

}  // namespace lizard::train
