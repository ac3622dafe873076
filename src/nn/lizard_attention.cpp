#include "lizard/nn/lizard_attention.h"

#include <algorithm>

namespace lizard::nn {

LizardAttention::LizardAttention(const LlamaConfig& cfg, const LoraSpec& lora, int64_t layer,
                                 const ops::LizardConfig& lcfg, DType dtype, Device device)
    : Attention(cfg, lora, layer, dtype, device), lcfg_(lcfg.resolved()) {
  lcfg_.validate();
  ops::LizardParams init = ops::lizard_init_params(lcfg_, cfg.num_attention_heads, cfg.head_dim,
                                                   cfg.hidden_size, DType::F32);
  auto reg = [&](const char* name, const Tensor& t) {
    Var v = register_parameter(std::string("lizard.") + name, Var(t.to(device)));
    v.set_tag(ParamTag::Trainable);
    return v;
  };
  p_.wq = reg("feature_map_q", init.wq);
  p_.wk = reg("feature_map_k", init.wk);
  p_.w_g = reg("gate_weight", init.w_g);
  p_.b_g = reg("gate_bias", init.b_g);
  if (init.tau.defined()) p_.tau = reg("sinks", init.tau);
  p_.alpha = reg("alpha", init.alpha);
}

Var LizardAttention::student_mix(const Var& x, const QKV& qkv, const ops::RopeTable& rope) const {
  const bool wr = lcfg_.use_window_rope();
  return autograd::lizard_attention(lcfg_, qkv.q, qkv.k, qkv.v, x, p_, wr ? rope.cos : Tensor(),
                                    wr ? rope.sin : Tensor());
}

AttentionFactory lizard_factory(const ops::LizardConfig& lcfg, std::vector<int64_t> softmax_layers,
                                DType dtype, Device device) {
  return [lcfg, softmax_layers, dtype, device](const LlamaConfig& cfg, const LoraSpec& lora,
                                               int64_t layer) -> std::unique_ptr<Attention> {
    if (std::find(softmax_layers.begin(), softmax_layers.end(), layer) != softmax_layers.end())
      return std::make_unique<Attention>(cfg, lora, layer, dtype, device);
    return std::make_unique<LizardAttention>(cfg, lora, layer, lcfg, dtype, device);
  };
}

}  // namespace lizard::nn
