// Test helpers of the Lizard attention suites: random problems and a finite-difference check
// that walks every element of every input and parameter.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "lizard/ops/lizard_attention_oracle.h"
#include "test_util.h"

namespace lizard::test {

struct LizardCase {
  ops::LizardConfig cfg;
  ops::LizardInputs in;
  ops::LizardParams p;
};

/// RoPE tables [T, D/2] for positions 0..T-1, theta 10000 (HF layout).
inline std::pair<Tensor, Tensor> rope_tables(int64_t T, int64_t D, DType dt) {
  std::vector<double> c(T * (D / 2)), s(c.size());
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < D / 2; ++i) {
      const double ang = t * std::pow(10000.0, -2.0 * i / D);
      c[t * (D / 2) + i] = std::cos(ang);
      s[t * (D / 2) + i] = std::sin(ang);
    }
  return {Tensor::from_vector(c, {T, D / 2}, dt), Tensor::from_vector(s, {T, D / 2}, dt)};
}

/// A random problem: inputs uniform in [-1, 1) (q, k scaled by qk_scale), parameters random
/// around their init so every gradient is non-trivial; the gate bias sets the gate level.
inline LizardCase make_case(const ops::LizardConfig& cfg, int64_t B, int64_t T, int64_t H,
                            int64_t Hkv, int64_t D, int64_t dm, uint64_t seed,
                            DType dt = DType::F64, double qk_scale = 1.0, double bias = 0.5) {
  LizardCase c;
  c.cfg = cfg;
  const int64_t F = cfg.feature_dim;
  c.in.q = rand({B, T, H, D}, seed + 1, dt, -qk_scale, qk_scale);
  c.in.k = rand({B, T, Hkv, D}, seed + 2, dt, -qk_scale, qk_scale);
  c.in.v = rand({B, T, Hkv, D}, seed + 3, dt);
  c.in.x = rand({B, T, dm}, seed + 4, dt);
  if (cfg.use_window_rope()) std::tie(c.in.cos, c.in.sin) = rope_tables(T, D, dt);
  c.p = ops::lizard_init_params(cfg, H, D, dm, dt);
  c.p.wq = rand({H, D, F}, seed + 5, dt);
  c.p.wk = rand({H, D, F}, seed + 6, dt);
  c.p.w_g = rand(c.p.w_g.shape(), seed + 7, dt);
  c.p.b_g = rand(c.p.b_g.shape(), seed + 8, dt, bias - 0.5, bias + 0.5);
  if (c.p.tau.defined()) c.p.tau = rand(c.p.tau.shape(), seed + 9, dt);
  c.p.alpha = Tensor::from_vector({cfg.combine == ops::Combine::Convex ? -0.6 : 0.7}, {1}, dt);
  return c;
}

/// Pointers to every differentiable tensor of a case, with its gradient and name.
inline std::vector<std::pair<std::string, std::pair<Tensor*, Tensor*>>> grad_slots(
    LizardCase& c, ops::LizardGrads& g) {
  std::vector<std::pair<std::string, std::pair<Tensor*, Tensor*>>> v = {
      {"q", {&c.in.q, &g.dq}},       {"k", {&c.in.k, &g.dk}},     {"v", {&c.in.v, &g.dv}},
      {"x", {&c.in.x, &g.dx}},       {"wq", {&c.p.wq, &g.dwq}},   {"wk", {&c.p.wk, &g.dwk}},
      {"w_g", {&c.p.w_g, &g.dw_g}},  {"b_g", {&c.p.b_g, &g.db_g}}, {"alpha", {&c.p.alpha, &g.dalpha}}};
  if (c.p.tau.defined()) v.push_back({"tau", {&c.p.tau, &g.dtau}});
  return v;
}

/// sum(w * y) in f64.
inline double weighted(const Tensor& y, const Tensor& w) {
  auto a = y.to_vector(), b = w.to_vector();
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

/// Central differences of sum(w * oracle(case)) for every element of every input and parameter,
/// against lizard_oracle_backward. Returns the number of elements checked.
inline int64_t check_oracle_gradients(LizardCase c, double tol, const std::string& what) {
  Tensor w = rand(ops::lizard_oracle_forward(c.cfg, c.in, c.p).shape(), 4242, DType::F64);
  ops::LizardGrads g = ops::lizard_oracle_backward(c.cfg, c.in, c.p, w);
  int64_t n = 0;
  // eps 1e-6 in f64: truncation ~eps^2 |f'''| ~ 1e-12, cancellation ~1e-16 |f| / eps ~ 1e-10.
  const double eps = 1e-6;
  for (auto& [name, slot] : grad_slots(c, g)) {
    Tensor* x = slot.first;
    Tensor* gx = slot.second;
    EXPECT_TRUE(gx->defined()) << what << ": no gradient for " << name;
    if (!gx->defined()) continue;
    EXPECT_EQ(gx->shape(), x->shape()) << what << ": " << name;
    const Tensor orig = x->clone();
    auto base = orig.to_vector(), ga = gx->to_vector();
    for (size_t i = 0; i < base.size(); ++i) {
      auto at = [&](double delta) {
        auto vv = base;
        vv[i] += delta;
        *x = Tensor::from_vector(vv, orig.shape(), orig.dtype());
        return weighted(ops::lizard_oracle_forward(c.cfg, c.in, c.p), w);
      };
      const double num = (at(eps) - at(-eps)) / (2 * eps);
      EXPECT_LE(std::abs(ga[i] - num) / (1 + std::abs(num)), tol)
          << what << ": d/d" << name << "[" << i << "] analytic " << ga[i] << " numeric " << num;
      ++n;
    }
    *x = orig;
  }
  return n;
}

}  // namespace lizard::test
