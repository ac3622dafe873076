#include <gtest/gtest.h>

#include <cmath>

#include "lizard/autograd/functions.h"
#include "lizard/autograd/nn_functions.h"
#include "lizard/ops/elementwise.h"
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

// ---- dx with the running gradient sum folded in (dx_acc) ----

TEST(RmsNormAcc, MatchesUnfusedCompositionF64F32) {
  // Awkward shapes: one element, odd widths, a batch dim, a width past one SIMD-ish block.
  for (const Shape& s : {Shape{1, 1}, Shape{3, 5}, Shape{2, 3, 7}, Shape{4, 33}, Shape{1, 129}}) {
    Tensor x = rand(s, 31), w = rand({s.back()}, 32, DType::F64, 0.5, 1.5);
    Tensor dy = rand(s, 33), acc = rand(s, 34, DType::F64, -4, 4);
    Tensor rstd = ops::rmsnorm(x, w, 1e-5).rstd;
    const ops::RmsNormGrads plain = ops::rmsnorm_backward(dy, x, w, rstd);
    const ops::RmsNormGrads fused = ops::rmsnorm_backward(dy, x, w, rstd, true, true, acc);
    // f64: the fused sum and the unfused composition differ only in the order of one add.
    EXPECT_LT(rel_err(fused.dx, ops::add(plain.dx, acc)), 1e-14) << shape_str(s);
    EXPECT_LT(rel_err(fused.dw, plain.dw), 1e-15) << shape_str(s) << " dw untouched by acc";
    // acc is only read.
    EXPECT_EQ(rel_err(acc, rand(s, 34, DType::F64, -4, 4)), 0.0);
    // f32 storage: a handful of f32 roundings of O(1) values against the f64 reference.
    auto f = [](const Tensor& t) { return t.to(DType::F32); };
    Tensor rstd32 = ops::rmsnorm(f(x), f(w), 1e-5).rstd;
    const ops::RmsNormGrads f32 =
        ops::rmsnorm_backward(f(dy), f(x), f(w), rstd32, true, false, f(acc));
    EXPECT_EQ(f32.dx.dtype(), DType::F32);
    EXPECT_FALSE(f32.dw.defined());
    Tensor want = test::rmsnorm_dx_plus_acc(dy, x, w, rstd, acc);
    EXPECT_LT(rel_err(f32.dx, want), 1e-6) << shape_str(s);
  }
}

// bf16 is the CPU reference of the CUDA rounding contract: dx + acc rounded once. Each element
// lies within half a bf16 ulp of the exact sum (relative 2^-8), plus 2^-24 for the f64 -> f32
// step of the conversion; the unfused composition (dx rounded, then the sum rounded) does not.
TEST(RmsNormAcc, Bf16RoundsTheSumOnce) {
  const Shape s{6, 200};
  Tensor x = rand(s, 41, DType::BF16), w = rand({s.back()}, 42, DType::BF16, 0.5, 1.5);
  Tensor dy = rand(s, 43, DType::BF16);
  // acc close to -dx: the sum cancels, where a rounded dx loses most of the result's digits.
  Tensor x64 = x.to(DType::F64), w64 = w.to(DType::F64), dy64 = dy.to(DType::F64);
  Tensor rstd = ops::rmsnorm(x64, w64, 1e-5).rstd;
  Tensor dx64 = ops::rmsnorm_backward(dy64, x64, w64, rstd, true, false).dx;
  Tensor acc = ops::add(ops::affine(dx64, -1.0, 0.0), rand(s, 44, DType::F64, -0.02, 0.02))
                   .to(DType::BF16);
  Tensor fused = ops::rmsnorm_backward(dy, x, w, rstd, true, false, acc).dx;
  ASSERT_EQ(fused.dtype(), DType::BF16);
  const auto exact = test::rmsnorm_dx_plus_acc(dy, x, w, rstd, acc).to_vector();
  const auto got = fused.to_vector();
  Tensor dx_bf = ops::rmsnorm_backward(dy, x, w, rstd, true, false).dx;
  auto dxr = dx_bf.to_vector(), av = acc.to_vector();
  int64_t unfused_outside = 0;
  for (size_t i = 0; i < exact.size(); ++i) {
    const double bound = (std::ldexp(1.0, -8) + std::ldexp(1.0, -24)) * std::fabs(exact[i]);
    EXPECT_LE(std::fabs(got[i] - exact[i]), bound) << "element " << i;
    const double unfused = static_cast<float>(bf16(static_cast<float>(dxr[i] + av[i])));
    if (std::fabs(unfused - exact[i]) > bound) ++unfused_outside;
  }
  // The bound discriminates: the two-rounding composition breaks it on many elements.
  EXPECT_GT(unfused_outside, static_cast<int64_t>(exact.size() / 10));
}

TEST(RmsNormAcc, BadRunningSumIsAnError) {
  Tensor x = rand({3, 4}, 1), w = rand({4}, 2), dy = rand({3, 4}, 3);
  Tensor rstd = Tensor::ones({3}, DType::F64);
  EXPECT_THROW(ops::rmsnorm_backward(dy, x, w, rstd, true, true, rand({4, 3}, 4)), Error);
  EXPECT_THROW(ops::rmsnorm_backward(dy, x, w, rstd, true, true, rand({3, 4}, 4, DType::F32)),
               Error);
  EXPECT_THROW(ops::rmsnorm_backward(dy, x, w, rstd, false, true, rand({3, 4}, 4)), Error);
}

// The node's accumulating backward: folds the engine's running sum (folded[0]), returns
// dx + partial, and leaves the weight gradient as backward() gives it.
TEST(RmsNormAcc, NodeFoldsThePartialSum) {
  using autograd::Var;
  Var x0(rand({5, 9}, 51), true), w(rand({9}, 52, DType::F64, 0.5, 1.5), true);
  Var x = autograd::scale(x0, 1.5);  // a node edge: the engine offers partial sums only there
  Var y = autograd::rmsnorm(x, w, 1e-5);
  Tensor g = rand({5, 9}, 53), partial = rand({5, 9}, 54);
  std::vector<bool> folded(2, false);
  auto plain = y.grad_fn()->backward(g);
  auto fused = y.grad_fn()->backward_accumulate(g, {partial, Tensor()}, folded);
  EXPECT_TRUE(folded[0]);
  EXPECT_FALSE(folded[1]);
  EXPECT_LT(rel_err(fused[0], ops::add(plain[0], partial)), 1e-14);
  EXPECT_LT(rel_err(fused[1], plain[1]), 1e-15);
  // A running sum that does not fit (another dtype) is left to the engine.
  std::vector<bool> folded2(2, false);
  auto kept = y.grad_fn()->backward_accumulate(g, {partial.to(DType::F32), Tensor()}, folded2);
  EXPECT_FALSE(folded2[0]);
  EXPECT_LT(rel_err(kept[0], plain[0]), 1e-15);
}

// Through the engine: x feeds the norm and a residual add that runs first in backward, so the
// norm folds the residual's gradient. Finite differences over x0 and w, at awkward shapes.
TEST(RmsNormAcc, ResidualGraphByFiniteDifferences) {
  for (const Shape& s : {Shape{1, 1}, Shape{3, 5}, Shape{2, 3, 7}}) {
    check_gradients(
        [](const std::vector<autograd::Var>& v) {
          autograd::Var x = autograd::scale(v[0], 0.75);
          return autograd::add(x, autograd::rmsnorm(x, v[1], 1e-5));
        },
        {rand(s, 61), rand({s.back()}, 62, DType::F64, 0.5, 1.5)});
  }
}
