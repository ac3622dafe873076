#include <gtest/gtest.h>

#include <cmath>

#include "lizard/autograd/nn_functions.h"
#include "lizard/ops/rope.h"
#include "test_util.h"

using namespace lizard;
using lizard::test::check_gradients;
using lizard::test::rand;
using lizard::test::rel_err;

namespace {

// Llama-3 scaling written as masks over the whole frequency vector (the way transformers
// expresses it with torch.where), not branch by branch as the library does.
std::vector<double> llama3_oracle(int64_t dim, double base, double factor, double lo, double hi,
                                  double old_len) {
  const double pi = std::acos(-1.0);
  std::vector<double> inv, wavelen, scaled, out;
  for (int64_t i = 0; i < dim; i += 2) inv.push_back(std::pow(base, -double(i) / dim));
  for (double f : inv) wavelen.push_back(2 * pi / f);
  const double low_wl = old_len / lo, high_wl = old_len / hi;
  for (size_t i = 0; i < inv.size(); ++i) scaled.push_back(wavelen[i] > low_wl ? inv[i] / factor : inv[i]);
  for (size_t i = 0; i < inv.size(); ++i) {
    const double smooth = (old_len / wavelen[i] - lo) / (hi - lo);
    const double smoothed = (1 - smooth) * scaled[i] / factor + smooth * scaled[i];
    const bool medium = !(wavelen[i] < high_wl) && !(wavelen[i] > low_wl);
    out.push_back(medium ? smoothed : scaled[i]);
  }
  return out;
}

Tensor rope_oracle(const Tensor& x, const std::vector<double>& inv, const std::vector<int64_t>& pos) {
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), D = x.size(3), h2 = D / 2;
  auto xv = x.to_vector();
  std::vector<double> y(xv.size());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < D; ++i) {
          const int64_t o = ((b * T + t) * H + h) * D;
          // rotate_half(x) = [-x2, x1]; y = x cos + rotate_half(x) sin, angle repeated twice.
          const double a = pos[t] * inv[i % h2];
          const double rot = i < h2 ? -xv[o + i + h2] : xv[o + i - h2];
          y[o + i] = xv[o + i] * std::cos(a) + rot * std::sin(a);
        }
  return Tensor::from_vector(y, x.shape(), DType::F64);
}

}  // namespace

TEST(Rope, DefaultFrequencies) {
  auto inv = ops::rope_inv_freq(8, 10000.0, nn::RopeScaling{});
  ASSERT_EQ(inv.size(), 4u);
  EXPECT_DOUBLE_EQ(inv[0], 1.0);
  EXPECT_NEAR(inv[1], 0.1, 1e-15);
  EXPECT_NEAR(inv[3], 1e-3, 1e-15);
}

TEST(Rope, Llama3FrequenciesMatchIndependentImplementation) {
  // Llama-3.1 (head_dim 128, theta 5e5, factor 8, 1/4, 8192) and Llama-3.2 (factor 32).
  for (double factor : {8.0, 32.0}) {
    nn::RopeScaling sc;
    sc.type = "llama3";
    sc.factor = factor;
    sc.low_freq_factor = 1.0;
    sc.high_freq_factor = 4.0;
    sc.original_max_position_embeddings = 8192;
    auto got = ops::rope_inv_freq(128, 500000.0, sc);
    auto want = llama3_oracle(128, 500000.0, factor, 1.0, 4.0, 8192.0);
    ASSERT_EQ(got.size(), want.size());
    int scaled = 0, kept = 0, blended = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_NEAR(got[i], want[i], 1e-15 * std::abs(want[i])) << "frequency " << i;
      const double base = std::pow(500000.0, -2.0 * i / 128);
      if (got[i] == base) ++kept;
      else if (std::abs(got[i] - base / factor) < 1e-18) ++scaled;
      else ++blended;
    }
    // All three regimes occur at these settings, so the test exercises each branch.
    EXPECT_GT(kept, 0);
    EXPECT_GT(scaled, 0);
    EXPECT_GT(blended, 0);
  }
  nn::RopeScaling bad;
  bad.type = "yarn";
  EXPECT_THROW(ops::rope_inv_freq(64, 1e4, bad), InputError);
  EXPECT_THROW(ops::rope_inv_freq(7, 1e4, nn::RopeScaling{}), InputError);
}

TEST(Rope, TableAtArbitraryPositions) {
  nn::RopeScaling sc;
  sc.type = "llama3";
  const std::vector<int64_t> pos{0, 5, 4096, 131071};
  ops::RopeTable tab = ops::rope_table(16, 500000.0, sc, Tensor::from_data(pos, {4}));
  auto inv = ops::rope_inv_freq(16, 500000.0, sc);
  ASSERT_EQ(tab.cos.shape(), (Shape{4, 8}));
  auto c = tab.cos.to_vector(), s = tab.sin.to_vector();
  for (int64_t t = 0; t < 4; ++t)
    for (int64_t i = 0; i < 8; ++i) {
      // One f32 rounding of a value in [-1, 1]: 6e-8; the angle itself is formed in double.
      EXPECT_NEAR(c[t * 8 + i], std::cos(pos[t] * inv[i]), 1e-7);
      EXPECT_NEAR(s[t * 8 + i], std::sin(pos[t] * inv[i]), 1e-7);
    }
}

TEST(Rope, ApplyMatchesRotateHalfOracleAndInverts) {
  struct Case { int64_t B, T, H, D; };
  for (Case c : {Case{1, 1, 1, 2}, Case{2, 5, 3, 8}, Case{1, 7, 2, 6}}) {
    ops::RopeTable tab = ops::rope_table(c.D, 100.0, nn::RopeScaling{}, c.T + 3);  // extra rows
    Tensor x = rand({c.B, c.T, c.H, c.D}, 21);
    std::vector<int64_t> pos(c.T);
    for (int64_t t = 0; t < c.T; ++t) pos[t] = t;
    Tensor y = ops::rope_apply(x, tab);
    // cos/sin are f32 in the table: 1e-7 relative.
    EXPECT_LT(rel_err(y, rope_oracle(x, ops::rope_inv_freq(c.D, 100.0, {}), pos)), 2e-7);
    // Rotation then the inverse rotation with the same table is the identity up to f64 rounding
    // (cos^2 + sin^2 of the f32 values is 1 within 1e-7).
    EXPECT_LT(rel_err(ops::rope_apply(y, tab, true), x), 3e-7);
    // Position 0 is the identity.
    EXPECT_EQ(y.slice(1, 0, 1).contiguous().to_vector(), x.slice(1, 0, 1).contiguous().to_vector());
  }
  EXPECT_THROW(ops::rope_apply(rand({1, 4, 1, 4}, 1), ops::rope_table(4, 1e4, {}, 3)), Error);
}

TEST(Rope, GradientByFiniteDifferences) {
  ops::RopeTable tab = ops::rope_table(4, 50.0, nn::RopeScaling{}, 5);
  check_gradients([&](const std::vector<autograd::Var>& v) { return autograd::rope(v[0], tab); },
                  {rand({2, 5, 3, 4}, 22)});
}
