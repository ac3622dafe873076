#include "lizard/ops/lizard_attention_types.h"

namespace lizard::ops {
namespace {
void expect_shape(const Tensor& t, const char* name, const Shape& want) {
  LZ_INPUT_CHECK(t.defined(), "lizard attention: ", name, " is missing (expected ",
                 shape_str(want), ")");
  LZ_INPUT_CHECK(t.shape() == want, "lizard attention: ", name, " has shape ",
                 shape_str(t.shape()), ", expected ", shape_str(want));
}
}  // namespace

LizardDims lizard_check_dims(const LizardConfig& cfg, const LizardInputs& in,
                             const LizardParams& p) {
  cfg.validate();
  LizardDims d;
  LZ_INPUT_CHECK(in.q.defined() && in.q.dim() == 4, "lizard attention: q must be [B, T, H, D], got ",
                 in.q.defined() ? shape_str(in.q.shape()) : "nothing");
  d.B = in.q.size(0);
  d.T = in.q.size(1);
  d.H = in.q.size(2);
  d.D = in.q.size(3);
  LZ_INPUT_CHECK(in.k.defined() && in.k.dim() == 4, "lizard attention: k must be [B, T, Hkv, D]");
  d.Hkv = in.k.size(2);
  LZ_INPUT_CHECK(d.Hkv >= 1 && d.H % d.Hkv == 0, "lizard attention: H = ", d.H,
                 " query heads must be a multiple of Hkv = ", d.Hkv, " kv heads");
  expect_shape(in.k, "k", {d.B, d.T, d.Hkv, d.D});
  expect_shape(in.v, "v", {d.B, d.T, d.Hkv, d.D});
  LZ_INPUT_CHECK(in.x.defined() && in.x.dim() == 3, "lizard attention: x must be [B, T, dm]");
  d.dm = in.x.size(2);
  expect_shape(in.x, "x (gate input)", {d.B, d.T, d.dm});
  d.F = cfg.feature_dim;
  d.Hg = cfg.gate_mode() == GateMode::Shared ? 1 : d.H;
  d.Ht = cfg.sinks_per_head ? d.H : 1;
  d.w = cfg.window;
  d.m = d.w > 0 ? cfg.sinks : 0;  // sinks live in the window branch's denominator
  expect_shape(p.wq, "wq", {d.H, d.D, d.F});
  expect_shape(p.wk, "wk", {d.H, d.D, d.F});
  expect_shape(p.w_g, "w_g", {d.Hg, d.dm});
  expect_shape(p.b_g, "b_g", {d.Hg});
  expect_shape(p.alpha, "alpha", {1});
  if (d.m > 0) expect_shape(p.tau, "tau (sink logits)", {d.Ht, d.m});
  if (cfg.use_window_rope() && d.w > 0) {
    LZ_INPUT_CHECK(d.D % 2 == 0, "lizard attention: window_rope needs an even head dim, got ", d.D);
    expect_shape(in.cos, "cos (RoPE table)", {d.T, d.D / 2});
    expect_shape(in.sin, "sin (RoPE table)", {d.T, d.D / 2});
  }
  return d;
}

LizardParams lizard_init_params(const LizardConfig& cfg, int64_t H, int64_t D, int64_t dm,
                                DType dtype) {
  cfg.validate();
  const int64_t F = cfg.feature_dim;
  std::vector<double> eye(H * D * F, 0.0);
  for (int64_t h = 0; h < H; ++h)
    for (int64_t i = 0; i < std::min(D, F); ++i) eye[(h * D + i) * F + i] = 1.0;
  const int64_t Hg = cfg.gate_mode() == GateMode::Shared ? 1 : H;
  LizardParams p;
  p.wq = Tensor::from_vector(eye, {H, D, F}, dtype);
  p.wk = Tensor::from_vector(eye, {H, D, F}, dtype);
  p.w_g = Tensor::zeros({Hg, dm}, dtype);
  p.b_g = Tensor::full({Hg}, cfg.bias_init(), dtype);
  if (cfg.window > 0 && cfg.sinks > 0) p.tau = Tensor::zeros({cfg.sinks_per_head ? H : 1, cfg.sinks}, dtype);
  p.alpha = Tensor::ones({1}, dtype);
  return p;
}

}  // namespace lizard::ops
