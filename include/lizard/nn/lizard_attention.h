// The student attention of a linearized layer: the teacher's projections (frozen, shared
// names) plus the Lizard parameters under `self_attn.lizard.*` (feature maps, gate, sinks,
// alpha), mixing tokens with ops::lizard_attention (DESIGN.md sections 2-3).
#pragma once
#include "lizard/autograd/lizard_function.h"
#include "lizard/nn/attention.h"

namespace lizard::nn {

class LizardAttention : public Attention {
 public:
  /// Lizard parameters start at their initial values (ops::lizard_init_params), fp32.
  LizardAttention(const LlamaConfig& cfg, const LoraSpec& lora, int64_t layer,
                  const ops::LizardConfig& lcfg, DType dtype, Device device);
  /// RoPE-free Lizard mixing (RoPE only in the window branch with window_rope).
  Var student_mix(const Var& x, const QKV& qkv, const ops::RopeTable& rope) const override;
  bool is_linearized() const override { return true; }
  const ops::LizardConfig& lizard_config() const { return lcfg_; }
  const autograd::LizardParamVars& lizard_params() const { return p_; }

 private:
  ops::LizardConfig lcfg_;
  autograd::LizardParamVars p_;
};

/// True for the Lizard parameters of a layer (`...self_attn.lizard.*`).
inline bool is_lizard_parameter(const std::string& name) {
  return name.find(".lizard.") != std::string::npos;
}

/// An AttentionFactory that makes LizardAttention for every layer except `softmax_layers`.
AttentionFactory lizard_factory(const ops::LizardConfig& lcfg, std::vector<int64_t> softmax_layers,
                                DType dtype, Device device);

}  // namespace lizard::nn
