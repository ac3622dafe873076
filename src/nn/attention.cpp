#include "lizard/nn/attention.h"

#include <cmath>

#include "lizard/autograd/checkpoint.h"
#include "lizard/autograd/functions.h"
#include "lizard/autograd/lora_fused.h"
#include "lizard/autograd/nn_functions.h"
#include "lizard/core/env.h"
#include "lizard/ops/shape_ops.h"

namespace lizard::nn {

namespace ag = lizard::autograd;

Attention::Attention(const LlamaConfig& cfg, const LoraSpec& lora, int64_t layer, DType dtype,
                     Device device)
    : cfg_(cfg) {
  const int64_t d = cfg.hidden_size, H = cfg.num_attention_heads, Hkv = cfg.num_key_value_heads,
                D = cfg.head_dim;
  LZ_CHECK(H % Hkv == 0, "num_attention_heads ", H, " is not a multiple of num_key_value_heads ",
           Hkv);
  const bool bias = cfg.attention_bias;
  auto mk = [&](int64_t in, int64_t out, bool b, bool target, uint64_t which) {
    return make_linear(in, out, b, target && lora.config ? &*lora.config : nullptr, lora.seed,
                       static_cast<uint64_t>(layer) * 16 + which, dtype, device);
  };
  q_proj = register_module("q_proj", mk(d, H * D, bias, lora.targets.q, 0));
  k_proj = register_module("k_proj", mk(d, Hkv * D, bias, lora.targets.k, 1));
  v_proj = register_module("v_proj", mk(d, Hkv * D, bias, lora.targets.v, 2));
  o_proj = register_module("o_proj", mk(H * D, d, false, lora.targets.o, 3));
  // q, k, v adapters alike (rank, alpha) and without dropout (a dropped-out x differs per
  // adapter): one down-projection GEMM for the three.
  const auto* lq = dynamic_cast<const LoRALinear*>(q_proj);
  const auto* lk = dynamic_cast<const LoRALinear*>(k_proj);
  const auto* lv = dynamic_cast<const LoRALinear*>(v_proj);
  fuse_lora_ = lq && lk && lv;
  for (const LoRALinear* l : {lq, lk, lv})
    fuse_lora_ = fuse_lora_ && l->lora_config().r == lq->lora_config().r &&
                 l->lora_config().alpha == lq->lora_config().alpha && l->lora_config().dropout == 0;
  if (fuse_lora_) pack_lora_a();
}

std::vector<Var> Attention::lora_a_weights() const {
  return {static_cast<const LoRALinear*>(q_proj)->lora_a(),
          static_cast<const LoRALinear*>(k_proj)->lora_a(),
          static_cast<const LoRALinear*>(v_proj)->lora_a()};
}

void Attention::pack_lora_a() const {
  std::vector<Var> as = lora_a_weights();
  std::vector<Tensor> parts;
  for (const Var& a : as) parts.push_back(a.data());
  lora_a_cat_ = ops::concat(parts, 0);
  int64_t at = 0;
  for (Var& a : as) {
    const int64_t r = a.size(0);
    a.set_data(lora_a_cat_.slice(0, at, at + r));
    at += r;
  }
}

namespace {
// LIZARD_LORA_FUSED=0 runs the q, k, v adapters one by one (A/B timing of the fusion); unset,
// empty or 1 fuses them; any other value is an error naming the variable (`lizard bench step`
// records the value with its numbers).
bool lora_fusion_disabled() { return env_switch("LIZARD_LORA_FUSED", "1", "0"); }
}  // namespace

QKV Attention::project(const Var& x) const {
  const int64_t B = x.size(0), T = x.size(1);
  const int64_t H = cfg_.num_attention_heads, Hkv = cfg_.num_key_value_heads, D = cfg_.head_dim;
  // One flattened x for the three projections: their input gradients then meet in one
  // buffer, where each projection's dx GEMM adds onto the others' sum (beta = 1).
  const Var x2 = ag::reshape(x, {B * T, x.size(2)});
  if (fuse_lora_ && !lora_fusion_disabled()) {
    // (Var handles share their parameter: a re-pack below shows through `as`)
    const std::vector<Var> as = lora_a_weights();
    std::vector<Tensor> parts;
    for (const Var& a : as) parts.push_back(a.data());
    // Loading replaces parameter data (Var::set_data): pack the new data once, so every step
    // reads the adapters in place rather than concatenating them (lora_fused would concat).
    if (!ag::is_row_split(lora_a_cat_, parts)) pack_lora_a();
    std::vector<Var> bs, bases;
    for (const Linear* l : {q_proj, k_proj, v_proj}) {
      const auto* lora = static_cast<const LoRALinear*>(l);
      bs.push_back(lora->lora_b());
      bases.push_back(lora->base_forward_2d(x2));
    }
    const double scale = static_cast<const LoRALinear*>(q_proj)->lora_scale();
    const std::vector<Var> y = ag::lora_fused(x2, as, bs, bases, scale, lora_a_cat_);
    return {ag::reshape(y[0], {B, T, H, D}), ag::reshape(y[1], {B, T, Hkv, D}),
            ag::reshape(y[2], {B, T, Hkv, D})};
  }
  return {ag::reshape(q_proj->forward(x2), {B, T, H, D}),
          ag::reshape(k_proj->forward(x2), {B, T, Hkv, D}),
          ag::reshape(v_proj->forward(x2), {B, T, Hkv, D})};
}

Var Attention::softmax_mix(const QKV& qkv, const ops::RopeTable& rope) const {
  Var q = ag::rope(qkv.q, rope);
  Var k = ag::rope(qkv.k, rope);
  const double scale = 1.0 / std::sqrt(static_cast<double>(cfg_.head_dim));
  return ag::causal_attention(q, k, qkv.v, scale, cfg_.sliding_window).o;
}

Var Attention::output(const Var& heads, const Var& residual) const {
  const int64_t B = heads.size(0), T = heads.size(1);
  Var flat = ag::reshape(heads, {B, T, heads.size(2) * heads.size(3)});
  return residual.defined() ? o_proj->forward_add(flat, residual) : o_proj->forward(flat);
}

Var Attention::forward(const Var& x, const ops::RopeTable& rope, bool teacher, bool recompute_mix,
                       const Var& residual) const {
  QKV qkv = project(x);
  if (teacher) return output(softmax_mix(qkv, rope), residual);
  if (recompute_mix && is_linearized() && ag::grad_enabled()) {
    const Attention* self = this;
    Var y = ag::checkpoint(
        [self, &rope](const std::vector<Var>& in) {
          return self->student_mix(in[0], QKV{in[1], in[2], in[3]}, rope);
        },
        {x, qkv.q, qkv.k, qkv.v});
    return output(y, residual);
  }
  return output(student_mix(x, qkv, rope), residual);
}

}  // namespace lizard::nn
