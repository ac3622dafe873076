#include <gtest/gtest.h>

#include <cmath>

#include "lizard/autograd/nn_functions.h"
#include "lizard/ops/rmsnorm.h"
#include "test_util.h"

using namespace lizard;
using lizard::test::check_gradients;
using lizard::test::rand;
using lizard::test::rel_err;

namespace {
Tensor oracle(const Tensor& x, const Tensor& w, double eps, std::vector<double>* rstd) {
  const int64_t D = x.size(-1), N = x.numel() / D;
  auto xv = x.to_vector(), wv = w.to_vector();
  std::vector<double> y(xv.size());
  for (int64_t n = 0; n < N; ++n) {
    double ms = 0;
    for (int64_t d = 0; d < D; ++d) ms += xv[n * D + d] * xv[n * D + d] / D;
    const double r = 1.0 / std::sqrt(ms + eps);
    if (rstd) rstd->push_back(r);
    for (int64_t d = 0; d < D; ++d) y[n * D + d] = xv[n * D + d] * r * wv[d];
  }
  return Tensor::from_vector(y, x.shape(), DType::F64);
}
}  // namespace

TEST(RmsNorm, ForwardMatchesOracle) {
  for (const Shape& s : {Shape{1, 1}, Shape{3, 5}, Shape{2, 3, 7}, Shape{4}}) {
    Tensor x = rand(s, 11), w = rand({s.back()}, 12, DType::F64, 0.5, 1.5);
    std::vector<double> rstd;
    Tensor want = oracle(x, w, 1e-5, &rstd);
    ops::RmsNormOut r = ops::rmsnorm(x, w, 1e-5);
    EXPECT_LT(rel_err(r.y, want), 1e-14) << shape_str(s);
    EXPECT_LT(rel_err(r.rstd, Tensor::from_vector(rstd, {(int64_t)rstd.size()}, DType::F64)), 1e-14);
    // f32: a handful of roundings per element on values of order 1.
    ops::RmsNormOut r32 = ops::rmsnorm(x.to(DType::F32), w.to(DType::F32), 1e-5);
    EXPECT_EQ(r32.rstd.dtype(), DType::F32);
    EXPECT_LT(rel_err(r32.y, want), 1e-6) << shape_str(s);
  }
}

TEST(RmsNorm, EpsDominatesAZeroRow) {
  Tensor x = Tensor::zeros({2, 4}, DType::F64), w = Tensor::ones({4}, DType::F64);
  ops::RmsNormOut r = ops::rmsnorm(x, w, 1e-6);
  EXPECT_NEAR(r.rstd.to_vector()[0], 1000.0, 1e-9);
  for (double v : r.y.to_vector()) EXPECT_EQ(v, 0.0);
}

TEST(RmsNorm, GradientsByFiniteDifferences) {
  for (const Shape& s : {Shape{1, 1}, Shape{3, 5}, Shape{2, 1, 6}}) {
    check_gradients(
        [](const std::vector<autograd::Var>& v) { return autograd::rmsnorm(v[0], v[1], 1e-5); },
        {rand(s, 13), rand({s.back()}, 14)});
  }
}

TEST(RmsNorm, FrozenWeightGetsNoGradient) {
  check_gradients(
      [](const std::vector<autograd::Var>& v) { return autograd::rmsnorm(v[0], v[1], 1e-5); },
      {rand({3, 4}, 15), rand({4}, 16)}, 1e-6, 1e-6, {true, false});
  ops::RmsNormGrads g =
      ops::rmsnorm_backward(rand({3, 4}, 1), rand({3, 4}, 2), rand({4}, 3),
                            Tensor::ones({3}, DType::F64), /*need_dx=*/true, /*need_dw=*/false);
  EXPECT_TRUE(g.dx.defined());
  EXPECT_FALSE(g.dw.defined());
}

TEST(RmsNorm, ShapeMismatchIsAnError) {
  EXPECT_THROW(ops::rmsnorm(rand({2, 4}, 1), rand({5}, 2), 1e-5), Error);
}
