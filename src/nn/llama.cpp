#include "lizard/nn/llama.h"

#include <cmath>

#include "lizard/autograd/checkpoint.h"
#include "lizard/autograd/functions.h"
#include "lizard/nn/lizard_attention.h"

namespace lizard::nn {

namespace ag = lizard::autograd;

DecoderLayer::DecoderLayer(const LlamaConfig& cfg, std::unique_ptr<Attention> attn, DType dtype,
                           Device device) {
  input_layernorm = register_module(
      "input_layernorm", std::make_unique<RMSNorm>(cfg.hidden_size, cfg.rms_norm_eps, dtype, device));
  self_attn = register_module("self_attn", std::move(attn));
  post_attention_layernorm = register_module(
      "post_attention_layernorm",
      std::make_unique<RMSNorm>(cfg.hidden_size, cfg.rms_norm_eps, dtype, device));
  mlp = register_module("mlp", std::make_unique<SwiGLUMLP>(cfg.hidden_size, cfg.intermediate_size,
                                                           dtype, device));
}

Var DecoderLayer::forward(const Var& x, const ops::RopeTable& rope, bool teacher,
                          bool recompute_mix, const ModuleProbe* probe) const {
  if (probe) {
    // A probe sees each module's own output, so this path keeps the separate residual adds.
    Var a = self_attn->forward(input_layernorm->forward(x), rope, teacher, recompute_mix);
    (*probe)("self_attn", a);
    Var h = ag::add(x, a);
    Var m = mlp->forward(post_attention_layernorm->forward(h));
    (*probe)("mlp", m);
    return ag::add(h, m);
  }
  // The residual adds ride in o_proj's and down_proj's GEMMs (beta = 1): no add kernel, one
  // rounding of the fp32 sum, and the residual's gradient is the output gradient itself.
  Var h = self_attn->forward(input_layernorm->forward(x), rope, teacher, recompute_mix, x);
  return mlp->forward(post_attention_layernorm->forward(h), h);
}

LlamaModel::LlamaModel(const LlamaConfig& cfg, const AttentionFactory& attn, const LoraSpec& lora,
                       DType dtype, Device device) {
  embed_tokens = register_module(
      "embed_tokens", std::make_unique<Embedding>(cfg.vocab_size, cfg.hidden_size, dtype, device));
  for (int64_t i = 0; i < cfg.num_hidden_layers; ++i) {
    std::unique_ptr<Attention> a =
        attn ? attn(cfg, lora, i) : std::make_unique<Attention>(cfg, lora, i, dtype, device);
    layers.push_back(register_module("layers." + std::to_string(i),
                                     std::make_unique<DecoderLayer>(cfg, std::move(a), dtype, device)));
  }
  norm = register_module("norm",
                         std::make_unique<RMSNorm>(cfg.hidden_size, cfg.rms_norm_eps, dtype, device));
}

LlamaForCausalLM::LlamaForCausalLM(const LlamaConfig& cfg, const AttentionFactory& attn,
                                   const LoraSpec& lora, DType dtype, Device device)
    : cfg_(cfg) {
  LZ_CHECK(cfg.head_dim % 2 == 0, "head_dim must be even for RoPE, got ", cfg.head_dim);
  model = register_module("model", std::make_unique<LlamaModel>(cfg, attn, lora, dtype, device));
  if (!cfg.tie_word_embeddings)
    lm_head = register_module(
        "lm_head", std::make_unique<Linear>(cfg.hidden_size, cfg.vocab_size, false, dtype, device));
  // Vars carry their full dotted names (optimizer state and checkpoints are keyed by them).
  for (auto& [name, v] : named_parameters()) v.set_name(name);
}

const ops::RopeTable& LlamaForCausalLM::rope(int64_t T, Device device) const {
  std::lock_guard<std::mutex> lock(rope_mu_);
  const int key_dev = device.is_cpu() ? -1 : device.index;
  auto& slot = rope_cache_[{T, key_dev}];
  if (!slot)
    slot = std::make_unique<ops::RopeTable>(
        ops::rope_table(cfg_.head_dim, cfg_.rope_theta, cfg_.rope_scaling, T, device));
  return *slot;
}

Var LlamaForCausalLM::hidden(const Tensor& ids, const ForwardOptions& opt) const {
  LZ_CHECK(ids.dim() == 2, "model input ids must be [B, T], got ", ids.desc());
  const int64_t T = ids.size(1);
  Var x = model->embed_tokens->forward(ids);
  if (opt.probe) (*opt.probe)("model.embed_tokens", x);
  const ops::RopeTable& rt = rope(T, x.device());
  for (size_t i = 0; i < model->layers.size(); ++i) {
    const DecoderLayer* layer = model->layers[i];
    if (opt.layer_inputs) opt.layer_inputs->push_back(x.detach());
    if (opt.recompute && ag::grad_enabled()) {
      const bool teacher = opt.teacher;
      x = ag::checkpoint(
          [layer, &rt, teacher](const std::vector<Var>& in) { return layer->forward(in[0], rt, teacher); },
          {x});
    } else if (opt.probe) {
      const std::string prefix = "model.layers." + std::to_string(i) + ".";
      const ModuleProbe named = [&](const std::string& m, const Var& v) { (*opt.probe)(prefix + m, v); };
      x = layer->forward(x, rt, opt.teacher, opt.recompute_attention, &named);
    } else {
      x = layer->forward(x, rt, opt.teacher, opt.recompute_attention);
    }
  }
  Var out = model->norm->forward(x);
  if (opt.probe) (*opt.probe)("model.norm", out);
  return out;
}

Var LlamaForCausalLM::logits(const Var& h) const {
  if (lm_head) return lm_head->forward(h);
  Shape out = h.shape();
  out.back() = cfg_.vocab_size;
  Var h2 = ag::reshape(h, {-1, cfg_.hidden_size});
  return ag::reshape(ag::matmul(h2, model->embed_tokens->weight(), false, true), out);
}

Var LlamaForCausalLM::forward(const Tensor& ids, const ForwardOptions& opt) const {
  Var out = logits(hidden(ids, opt));
  if (opt.probe) (*opt.probe)("lm_head", out);
  return out;
}

void LlamaForCausalLM::init_random(uint64_t seed, double std) {
  uint64_t offset = 0;
  const double out_std = std / std::sqrt(2.0 * static_cast<double>(cfg_.num_hidden_layers));
  for (auto& [name, v] : named_parameters()) {
    const Tensor& d = v.data();
    if (name.find("norm") != std::string::npos && d.dim() == 1) {
      v.set_data(Tensor::ones(d.shape(), d.dtype(), d.device()));
    } else if (is_lora_parameter(name) || is_lizard_parameter(name)) {
      // Adapters and Lizard parameters keep their own initialisation and take no stream: the
      // base weights of a seed are then the same for pretrain, distill and finetune models
      // (a finetune stage rebuilds its random teacher's base bit for bit).
      continue;
    } else if (d.dim() == 2) {
      const bool out_proj = name.find("o_proj") != std::string::npos ||
                            name.find("down_proj") != std::string::npos;
      // Drawn on the parameter's device (the same Philox stream): an 8B model's weights
      // would take a minute to draw on one host core.
      v.set_data(Tensor::normal(d.shape(), 0.0, out_proj ? out_std : std, seed, offset, DType::F32,
                                d.device())
                     .to(d.dtype()));
    } else if (name.find("bias") != std::string::npos) {
      v.set_data(Tensor::zeros(d.shape(), d.dtype(), d.device()));
    }
    ++offset;
  }
}

}  // namespace lizard::nn
