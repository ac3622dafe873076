// autograd::matmul_add: finite-difference gradients (alpha != 1, every transpose, batch
// broadcast), dc handed on as dy itself, and no GEMM for a frozen operand.
#include <gtest/gtest.h>

#include "lizard/autograd/functions.h"
#include "lizard/ops/matmul.h"
#include "test_util.h"

using namespace lizard;
using namespace lizard::autograd;
using lizard::test::rand;

TEST(AutogradMatmulAdd, GradientsMatchFiniteDifferencesAllTransposes) {
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      // a batched [2, 3, 5] (op(a) [2, 3, 5]) against a 2-D b: db sums over the batch.
      Tensor a = ta ? rand({2, 5, 3}, 1) : rand({2, 3, 5}, 1);
      Tensor b = tb ? rand({4, 5}, 2) : rand({5, 4}, 2);
      Tensor c = rand({2, 3, 4}, 3);
      test::check_gradients(
          [&](const std::vector<Var>& v) { return matmul_add(v[0], v[1], v[2], -1.7, ta, tb); },
          {a, b, c});
    }
}

namespace {
// Records the gradient it receives (to see whether it is a copy).
struct Recorder : Node {
  Tensor seen;
  const char* name() const override { return "recorder"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    seen = g;
    return {Tensor()};
  }
};
}  // namespace

TEST(AutogradMatmulAdd, ResidualGradientIsTheOutputGradientItself) {
  Var x(rand({4, 6}, 4), true), w(rand({3, 6}, 5), false);
  Var leaf(rand({4, 3}, 6), true);
  auto rec = std::make_shared<Recorder>();
  Var c = make_result(leaf.data().clone(), {leaf}, rec);  // a non-leaf c with a known node
  Var y = matmul_add(x, w, c, 0.5, false, true);
  Tensor g = rand({4, 3}, 7);
  y.backward(g);
  ASSERT_TRUE(rec->seen.defined());
  EXPECT_EQ(rec->seen.raw(), g.raw()) << "dc must be dy itself, not a copy";
  // And x's gradient carries alpha: dx = 0.5 g w.
  EXPECT_LE(test::rel_err(x.grad(), ops::matmul(g, w.data(), false, false, 0.5)), 1e-15);
}

TEST(AutogradMatmulAdd, FrozenWeightCostsNoGemm) {
  Var x(rand({5, 8}, 8), true), w(rand({7, 8}, 9)), c(rand({5, 7}, 10), true);
  w.set_tag(ParamTag::Frozen);
  Var y = matmul_add(x, w, c, 2.0, false, true);
  const int64_t before = ops::gemm_count();
  y.backward(rand({5, 7}, 11));
  EXPECT_EQ(ops::gemm_count() - before, 1);  // dx only
  EXPECT_FALSE(w.grad().defined());
  EXPECT_TRUE(c.grad().defined());
}
