// The oracle against a literal transcription of DESIGN.md section 2 and against finite
// differences for every input, parameter and switch that changes the maths.
#include <cmath>

#include "lizard_case.h"

namespace lizard::test {
namespace {

using ops::Combine;
using ops::FeatureActivation;
using ops::GateMode;
using ops::LizardConfig;

// A literal transcription of the formulas, written independently of the oracle: gates as
// products of sigmoids (not cumulative log sums), softmaxes without max-shift, RoPE from its
// definition, explicit GQA repeat. Only valid for small, tame inputs (it can overflow).
Tensor literal(const LizardConfig& cfg, const LizardCase& c) {
  const auto q = c.in.q.to_vector(), k = c.in.k.to_vector(), v = c.in.v.to_vector(),
             x = c.in.x.to_vector(), wq = c.p.wq.to_vector(), wk = c.p.wk.to_vector(),
             wg = c.p.w_g.to_vector(), bg = c.p.b_g.to_vector();
  const auto tau = c.p.tau.defined() ? c.p.tau.to_vector() : std::vector<double>{};
  const double alpha = c.p.alpha.item();
  const int64_t B = c.in.q.size(0), T = c.in.q.size(1), H = c.in.q.size(2), D = c.in.q.size(3);
  const int64_t Hkv = c.in.k.size(2), dm = c.in.x.size(2), F = cfg.feature_dim, w = cfg.window;
  const int64_t m = w > 0 ? cfg.sinks : 0;
  const bool per_head = cfg.gate_mode() == GateMode::PerHead;
  auto phi = [&](std::vector<double> u) {
    std::vector<double> r(2 * F);
    if (cfg.feature_activation == FeatureActivation::Softmax) {
      double s1 = 0, s2 = 0;
      for (int64_t i = 0; i < F; ++i) s1 += std::exp(u[i]), s2 += std::exp(-u[i]);
      for (int64_t i = 0; i < F; ++i) r[i] = std::exp(u[i]) / s1, r[F + i] = std::exp(-u[i]) / s2;
    } else {
      double mx = -1e300;
      for (int64_t i = 0; i < F; ++i) mx = std::max({mx, u[i], -u[i]});
      for (int64_t i = 0; i < F; ++i) r[i] = std::exp(u[i] - mx), r[F + i] = std::exp(-u[i] - mx);
    }
    return r;
  };
  auto rot = [&](std::vector<double> a, int64_t t) {
    if (!cfg.use_window_rope()) return a;
    std::vector<double> r(D);
    for (int64_t i = 0; i < D / 2; ++i) {
      const double th = t * std::pow(10000.0, -2.0 * i / D);
      r[i] = a[i] * std::cos(th) - a[i + D / 2] * std::sin(th);
      r[i + D / 2] = a[i + D / 2] * std::cos(th) + a[i] * std::sin(th);
    }
    return r;
  };
  std::vector<double> y(B * T * H * D);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t kvh = h / (H / Hkv), gh = per_head ? h : 0;
      auto vec = [&](const std::vector<double>& src, int64_t t, int64_t hh, int64_t nh) {
        return std::vector<double>(src.begin() + ((b * T + t) * nh + hh) * D,
                                   src.begin() + ((b * T + t) * nh + hh + 1) * D);
      };
      auto gamma = [&](int64_t t) {
        double zz = bg[gh];
        for (int64_t j = 0; j < dm; ++j) zz += x[(b * T + t) * dm + j] * wg[gh * dm + j];
        return 1.0 / (1.0 + std::exp(-zz));
      };
      auto feat = [&](const std::vector<double>& a, const std::vector<double>& W) {
        std::vector<double> u(F, 0.0);
        for (int64_t f = 0; f < F; ++f)
          for (int64_t i = 0; i < D; ++i) u[f] += a[i] * W[(h * D + i) * F + f];
        return phi(u);
      };
      for (int64_t t = 0; t < T; ++t) {
        const auto pq = feat(vec(q, t, h, H), wq);
        std::vector<double> num(D, 0.0), l(D, 0.0);
        double den = 0;
        for (int64_t s = 0; s <= t; ++s) {
          double decay = 1;
          for (int64_t r = s + 1; r <= t; ++r) decay *= gamma(r);
          const auto pk = feat(vec(k, s, kvh, Hkv), wk);
          double dot = 0;
          for (int64_t f = 0; f < 2 * F; ++f) dot += pq[f] * pk[f];
          den += decay * dot;
          for (int64_t j = 0; j < D; ++j) num[j] += decay * dot * v[((b * T + s) * Hkv + kvh) * D + j];
        }
        if (w > 0) {
          double wden = 0;
          for (int64_t j = 0; j < m; ++j) wden += std::exp(tau[(cfg.sinks_per_head ? h : 0) * m + j]);
          const auto qt = rot(vec(q, t, h, H), t);
          for (int64_t s = std::max<int64_t>(0, t - w + 1); s <= t; ++s) {
            const auto ks = rot(vec(k, s, kvh, Hkv), s);
            double cts = 0;
            for (int64_t j = 0; j < D; ++j) cts += qt[j] * ks[j] / std::sqrt(double(D));
            wden += std::exp(cts);
            for (int64_t j = 0; j < D; ++j) l[j] += std::exp(cts) * v[((b * T + s) * Hkv + kvh) * D + j];
          }
          for (auto& e : l) e /= wden;
        }
        for (int64_t j = 0; j < D; ++j) {
          const double g = num[j] / std::max(den, cfg.eps);
          y[((b * T + t) * H + h) * D + j] =
              w == 0 ? g
              : cfg.combine == Combine::Sum ? g + alpha * l[j]
                                          : (g + std::abs(alpha) * l[j]) / (1 + std::abs(alpha));
        }
      }
    }
  return Tensor::from_vector(y, c.in.q.shape(), DType::F64);
}

TEST(LizardOracle, EqualsLiteralFormulas) {
  int n = 0;
  for (int preset = 0; preset < 2; ++preset)
    for (int act = 0; act < 2; ++act)
      for (int cmb = 0; cmb < 2; ++cmb)
        for (int64_t w : {0, 2, 3})
          for (int64_t T : {1, 5}) {
          LizardConfig cfg;
          cfg.preset = preset ? ops::Preset::Plus : ops::Preset::Paper;
          cfg.feature_dim = 3;
          cfg.feature_activation = act ? FeatureActivation::Exp : FeatureActivation::Softmax;
          cfg.combine = cmb ? Combine::Convex : Combine::Sum;
          cfg.window = w;
          cfg.sinks = 2;
          cfg.sinks_per_head = preset == 1;
          auto c = make_case(cfg, 2, T, 4, 2, 4, 3, 100 + n);
          const Tensor y = ops::lizard_oracle_forward(cfg, c.in, c.p);
          // Both are f64 sums of the same terms in different orders: 1e-12 covers rounding.
          EXPECT_LE(rel_err(y, literal(cfg, c)), 1e-12) << cfg.str() << " T " << T;
          ++n;
        }
  EXPECT_EQ(n, 48);
}

TEST(LizardOracle, F32MatchesF64) {
  LizardConfig cfg;
  cfg.feature_dim = 8;
  cfg.window = 4;
  auto c = make_case(cfg, 1, 33, 4, 2, 8, 5, 7);
  auto c32 = c;
  for (Tensor* t : {&c32.in.q, &c32.in.k, &c32.in.v, &c32.in.x, &c32.p.wq, &c32.p.wk, &c32.p.w_g,
                    &c32.p.b_g, &c32.p.tau, &c32.p.alpha})
    *t = t->to(DType::F32);
  const Tensor y64 = ops::lizard_oracle_forward(cfg, c.in, c.p);
  const Tensor y32 = ops::lizard_oracle_forward(cfg, c32.in, c32.p);
  EXPECT_EQ(y32.dtype(), DType::F32);
  // fp32 rounding over sums of ~33 terms: ~1e-6 relative.
  EXPECT_LE(rel_err(y32, y64), 1e-5);
}

// Every combination of the switches that change the maths, with GQA 1 and 2, window off and
// shorter than T, at odd shapes. Each case checks every element of every gradient.
TEST(LizardOracle, GradientsAllSwitches) {
  int64_t checked = 0, cases = 0;
  for (int act = 0; act < 2; ++act)
    for (int gate = 0; gate < 2; ++gate)
      for (int sph = 0; sph < 2; ++sph)
        for (int cmb = 0; cmb < 2; ++cmb)
          for (int rope = 0; rope < 2; ++rope)
            for (int64_t w : {0, 3})
              for (int64_t T : {1, 5}) {
              if (w == 0 && (sph || rope)) continue;  // no window: sinks and RoPE do nothing
              LizardConfig cfg;
              cfg.feature_dim = 3;
              cfg.feature_activation = act ? FeatureActivation::Exp : FeatureActivation::Softmax;
              cfg.gate = gate ? GateMode::PerHead : GateMode::Shared;
              cfg.sinks_per_head = sph;
              cfg.combine = cmb ? Combine::Convex : Combine::Sum;
              cfg.window_rope = bool(rope);
              cfg.window = w;
              cfg.sinks = 2;
              const int64_t Hkv = (cases % 2) ? 1 : 2;  // GQA group 2 and 1 alternate
              auto c = make_case(cfg, 2, T, 2, Hkv, 4, 3, 1000 + cases);
              checked += check_oracle_gradients(c, 1e-7, cfg.str() + " T " + std::to_string(T));
              ++cases;
            }
  EXPECT_EQ(cases, 80);
  EXPECT_GT(checked, 40 * 200 + 40 * 40);
}

TEST(LizardOracle, GradientsWindowEdgeCases) {
  // w = 1 (only the token itself), w > T (all of the prefix), T = 1, no sinks, D = 2.
  struct E { int64_t w, m, T, D; };
  for (E e : {E{1, 2, 4, 2}, E{9, 1, 4, 2}, E{2, 0, 3, 4}, E{3, 3, 1, 4}}) {
    LizardConfig cfg;
    cfg.feature_dim = 2;
    cfg.window = e.w;
    cfg.sinks = e.m;
    cfg.window_rope = true;
    auto c = make_case(cfg, 1, e.T, 3, 1, e.D, 2, 77 + e.w);
    check_oracle_gradients(c, 1e-7, cfg.str());
  }
}

TEST(LizardOracle, ExtremeGatesStayFinite) {
  // Gate logits of -60 and +60: a = logsigmoid(z) must be -60 (not -inf) and ~-1e-26 (not 0
  // when it matters); the oracle's exp(b_t - b_s) then underflows to 0 without NaN.
  LizardConfig cfg;
  cfg.feature_dim = 4;
  cfg.window = 2;
  for (double bias : {-60.0, 60.0}) {
    auto c = make_case(cfg, 1, 9, 2, 1, 4, 2, 5, DType::F32, 1.0, bias);
    const auto y = ops::lizard_oracle_forward(cfg, c.in, c.p).to_vector();
    for (double e : y) ASSERT_TRUE(std::isfinite(e)) << "bias " << bias;
    Tensor dy = rand(c.in.q.shape(), 3, DType::F32);
    auto g = ops::lizard_oracle_backward(cfg, c.in, c.p, dy);
    for (double e : g.dx.to_vector()) ASSERT_TRUE(std::isfinite(e));
    for (double e : g.dq.to_vector()) ASSERT_TRUE(std::isfinite(e));
  }
}

TEST(LizardConfig, PresetsAndOverrides) {
  LizardConfig c;
  EXPECT_EQ(c.gate_mode(), GateMode::Shared);
  EXPECT_FALSE(c.use_window_rope());
  EXPECT_EQ(c.bias_init(), 0.0);
  c.preset = ops::Preset::Plus;
  EXPECT_EQ(c.gate_mode(), GateMode::PerHead);
  EXPECT_TRUE(c.use_window_rope());
  EXPECT_EQ(c.bias_init(), 3.0);
  c.window_rope = false;  // explicit field beats the preset
  c.gate_bias_init = 1.5;
  EXPECT_FALSE(c.use_window_rope());
  EXPECT_EQ(c.bias_init(), 1.5);
  EXPECT_EQ(c.resolved().gate, GateMode::PerHead);
  c.window = -1;
  EXPECT_THROW(c.validate(), InputError);
  EXPECT_THROW(ops::preset_from_name("papr"), InputError);
}

TEST(LizardOracle, ShapeErrorsNameTheTensor) {
  LizardConfig cfg;
  cfg.feature_dim = 3;
  auto c = make_case(cfg, 1, 4, 2, 1, 4, 3, 1);
  c.p.wk = Tensor::zeros({2, 4, 5}, DType::F64);
  try {
    ops::lizard_oracle_forward(cfg, c.in, c.p);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("wk"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace lizard::test
