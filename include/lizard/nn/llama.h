// LlamaForCausalLM (Llama 2/3, Mistral, Qwen2): embeddings, decoder layers, final norm and
// LM head, with Hugging Face parameter names so safetensors load by name.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <mutex>
#include <vector>

#include "lizard/nn/attention.h"
#include "lizard/nn/layers.h"
#include "lizard/nn/llama_config.h"

namespace lizard::nn {

/// A forward hook: receives a module's dotted name and its output (debugging, e.g. finding the
/// first module whose output goes non-finite).
using ModuleProbe = std::function<void(const std::string& module, const Var& output)>;

class DecoderLayer : public Module {
 public:
  DecoderLayer(const LlamaConfig& cfg, std::unique_ptr<Attention> attn, DType dtype, Device device);
  /// x [B, T, d] -> x + attn(norm(x)) then + mlp(norm(.)); both residual adds ride in the
  /// o_proj and down_proj GEMMs (Linear::forward_add). `probe`, when set, sees the outputs of
  /// "self_attn" and "mlp" (names relative to the layer); that path keeps separate adds (the
  /// same values up to one bf16 rounding of the module outputs).
  Var forward(const Var& x, const ops::RopeTable& rope, bool teacher,
              bool recompute_mix = false, const ModuleProbe* probe = nullptr) const;
  RMSNorm* input_layernorm;
  Attention* self_attn;
  RMSNorm* post_attention_layernorm;
  SwiGLUMLP* mlp;
};

/// The transformer body: embed_tokens, layers, norm (HF's `model.` prefix).
class LlamaModel : public Module {
 public:
  LlamaModel(const LlamaConfig& cfg, const AttentionFactory& attn, const LoraSpec& lora,
             DType dtype, Device device);
  Embedding* embed_tokens;
  std::vector<DecoderLayer*> layers;
  RMSNorm* norm;
};

/// Options of one forward pass.
struct ForwardOptions {
  bool teacher = true;     ///< softmax attention everywhere (the original model)
  bool recompute = false;  ///< checkpoint each decoder layer (activation recomputation)
  /// Checkpoint only the student attention mixing of each linearized layer (cheaper than
  /// `recompute`; ignored when `recompute` is on, which already covers it).
  bool recompute_attention = false;
  /// When set, receives the hidden state entering each layer (detached), layer order.
  std::vector<Var>* layer_inputs = nullptr;
  /// When set, sees every module's output in forward order: model.embed_tokens,
  /// model.layers.<i>.self_attn, model.layers.<i>.mlp, model.norm, then lm_head (forward()
  /// only). Not called inside recompute scopes.
  const ModuleProbe* probe = nullptr;
};

class LlamaForCausalLM : public Module {
 public:
  /// Parameters start at zero (RMSNorm weights at one): load them or call init_random.
  LlamaForCausalLM(const LlamaConfig& cfg, const AttentionFactory& attn = {},
                   const LoraSpec& lora = {}, DType dtype = DType::F32,
                   Device device = Device::cpu());
  /// ids i32 [B, T] -> final hidden states [B, T, d] (after the last norm).
  Var hidden(const Tensor& ids, const ForwardOptions& opt = {}) const;
  /// ids i32 [B, T] -> logits [B, T, V].
  Var forward(const Tensor& ids, const ForwardOptions& opt = {}) const;
  /// LM head on hidden states [..., d] -> [..., V] (tied embeddings use embed_tokens.weight).
  Var logits(const Var& hidden) const;
  /// GPT-style initialisation: Normal(0, std) for matrices (output projections scaled by
  /// 1/sqrt(2 L)), ones for norms; deterministic in seed, and the same base weights whatever
  /// adapters or Lizard attentions the model carries (those keep their own init).
  void init_random(uint64_t seed, double std = 0.02);
  /// The RoPE table for positions 0..T-1 on `device` (cached per T and device).
  const ops::RopeTable& rope(int64_t T, Device device) const;
  const LlamaConfig& config() const { return cfg_; }

  LlamaModel* model;
  Linear* lm_head = nullptr;  ///< null when tie_word_embeddings

 private:
  LlamaConfig cfg_;
  mutable std::mutex rope_mu_;
  mutable std::map<std::pair<int64_t, int>, std::unique_ptr<ops::RopeTable>> rope_cache_;
};

}  // namespace lizard::nn
