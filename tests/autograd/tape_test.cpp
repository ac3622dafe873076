#include <gtest/gtest.h>

#include "lizard/autograd/checkpoint.h"
#include "lizard/autograd/functions.h"
#include "lizard/ops/matmul.h"
#include "test_util.h"

using namespace lizard;
using namespace lizard::autograd;
using lizard::test::rand;

TEST(Autograd, TensorUsedTwice) {
  // y = x * x  ->  dy/dx = 2x
  Var x(Tensor::from_vector({1.5, -2.0, 3.0}, {3}, DType::F64), true);
  Var y = mul(x, x);
  y.backward();
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{3.0, -4.0, 6.0}));
}

TEST(Autograd, DiamondGraph) {
  // a = 2x, b = x^2, y = sum(a * b) = sum(2 x^3)  ->  dy/dx = 6 x^2
  Var x(Tensor::from_vector({1.0, -2.0, 0.5}, {3}, DType::F64), true);
  Var a = scale(x, 2.0);
  Var b = square(x);
  Var y = sum(mul(a, b));
  y.backward();
  auto g = x.grad().to_vector();
  EXPECT_DOUBLE_EQ(g[0], 6.0);
  EXPECT_DOUBLE_EQ(g[1], 24.0);
  EXPECT_DOUBLE_EQ(g[2], 1.5);
}

TEST(Autograd, AccumulatesAcrossBackwardCalls) {
  Var x(Tensor::from_vector({1.0, 2.0}, {2}, DType::F64), true);
  sum(scale(x, 3.0)).backward();
  sum(scale(x, 4.0)).backward();
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{7.0, 7.0}));
  x.zero_grad();
  sum(x).backward();
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{1.0, 1.0}));
}

TEST(Autograd, NoGradRecordsNothing) {
  Var x(Tensor::from_vector({1.0}, {1}, DType::F64), true);
  Var y;
  {
    NoGradGuard ng;
    y = mul(x, x);
  }
  EXPECT_FALSE(y.requires_grad());
  EXPECT_EQ(y.grad_fn(), nullptr);
}

TEST(Autograd, StopGradient) {
  // y = x * detach(x): dy/dx = detach(x) only.
  Var x(Tensor::from_vector({3.0}, {1}, DType::F64), true);
  Var y = mul(x, x.detach());
  y.backward();
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{3.0}));
}

TEST(Autograd, FrozenWeightCostsNoWeightGemm) {
  Var x(rand({4, 8}, 1), true);
  Var w_frozen(rand({8, 8}, 2));
  w_frozen.set_tag(ParamTag::Frozen);
  Var w_train(rand({8, 8}, 3));
  w_train.set_tag(ParamTag::Trainable);
  Var h = matmul(x, w_frozen);
  Var y = sum(matmul(h, w_train));
  const int64_t before = ops::gemm_count();
  y.backward();
  // Backward GEMMs: d(h) and d(w_train) through the trainable matmul, d(x) through the
  // frozen one; d(w_frozen) is never computed.
  EXPECT_EQ(ops::gemm_count() - before, 3);
  EXPECT_FALSE(w_frozen.grad().defined());
  EXPECT_TRUE(w_train.grad().defined());
  EXPECT_TRUE(x.grad().defined());
  // With x frozen too, only the trainable weight's GEMM and the chain to it run.
  Var x2(rand({4, 8}, 1));
  Var y2 = sum(matmul(matmul(x2, w_frozen), w_train));
  const int64_t before2 = ops::gemm_count();
  y2.backward();
  EXPECT_EQ(ops::gemm_count() - before2, 1);
}

TEST(Autograd, RecomputeEqualsNoRecompute) {
  Tensor xt = rand({3, 5}, 11), w1t = rand({5, 6}, 12), w2t = rand({6, 4}, 13);
  auto block = [](const std::vector<Var>& in) {
    return silu(matmul(silu(matmul(in[0], in[1])), in[2]));
  };
  Var x1(xt, true), a1(w1t, true), b1(w2t, true);
  sum(square(block({x1, a1, b1}))).backward();
  Var x2(xt, true), a2(w1t, true), b2(w2t, true);
  Var out = checkpoint([&](const std::vector<Var>& in) { return block({in[0], a2, b2}); }, {x2});
  EXPECT_EQ(out.grad_fn() != nullptr, true);
  sum(square(out)).backward();
  EXPECT_EQ(x1.grad().to_vector(), x2.grad().to_vector());
  EXPECT_EQ(a1.grad().to_vector(), a2.grad().to_vector());
  EXPECT_EQ(b1.grad().to_vector(), b2.grad().to_vector());
}

TEST(Autograd, MatmulGradientsAllTransposes) {
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      Tensor a = ta ? rand({2, 5, 3}, 1) : rand({2, 3, 5}, 1);
      Tensor b = tb ? rand({4, 5}, 2) : rand({5, 4}, 2);
      test::check_gradients(
          [&](const std::vector<Var>& v) { return matmul(v[0], v[1], ta, tb); }, {a, b});
    }
}
