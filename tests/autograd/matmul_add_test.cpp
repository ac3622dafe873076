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

namespace {
// Identity on each of its inputs; folds an offered running sum when `fold` (adding it itself),
// and records which inputs were offered one.
struct Folder : Node {
  bool fold = true;
  std::vector<bool> offered;
  const char* name() const override { return "folder"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    return std::vector<Tensor>(edges.size(), g);
  }
  std::vector<Tensor> backward_accumulate(const Tensor& g, const std::vector<Tensor>& partial,
                                          std::vector<bool>& folded) override {
    std::vector<Tensor> r(edges.size(), g);
    offered.assign(edges.size(), false);
    for (size_t i = 0; i < edges.size(); ++i)
      if (partial[i].defined()) {
        offered[i] = true;
        if (fold) {
          r[i] = ops::add(partial[i], g);
          folded[i] = true;
        }
      }
    return r;
  }
};
struct PassThrough : Node {
  const char* name() const override { return "pass"; }
  std::vector<Tensor> backward(const Tensor& g) override { return {g}; }
};
}  // namespace

TEST(AutogradMatmulAdd, EngineOffersRunningSumsAndTakesFoldedTotals) {
  for (bool fold : {true, false}) {
    Var x(rand({3, 2}, 20), true);
    Var h = make_result(x.data().clone(), {x}, std::make_shared<PassThrough>());
    auto f1 = std::make_shared<Folder>(), f2 = std::make_shared<Folder>();
    f1->fold = f2->fold = fold;
    Var y1 = make_result(h.data().clone(), {h}, f1), y2 = make_result(h.data().clone(), {h}, f2);
    Tensor g1 = rand({3, 2}, 21), g2 = rand({3, 2}, 22);
    backward({y1, y2}, {g1, g2});
    // Whichever consumer runs second is offered the first one's share; the total counts each
    // share once whether it folds it or leaves the add to the engine.
    EXPECT_NE(f1->offered[0], f2->offered[0]);
    EXPECT_LE(test::rel_err(x.grad(), ops::add(g1, g2)), 1e-15) << "fold " << fold;
  }
}

TEST(AutogradMatmulAdd, EngineOffersNoRunningSumToAnInputOnTwoEdges) {
  Var x(rand({4}, 23), true);
  Var h = make_result(x.data().clone(), {x}, std::make_shared<PassThrough>());
  auto fa = std::make_shared<Folder>(), fs = std::make_shared<Folder>();
  Var ya = make_result(h.data().clone(), {h}, fa);
  Var ys = make_result(h.data().clone(), {h, h}, fs);  // h on both edges
  Tensor ga = rand({4}, 24), gs = rand({4}, 25);
  backward({ya, ys}, {ga, gs});
  ASSERT_EQ(fs->offered.size(), 2u);
  EXPECT_FALSE(fs->offered[0] || fs->offered[1]) << "a folded sum would count twice";
  EXPECT_LE(test::rel_err(x.grad(), ops::add(ga, ops::affine(gs, 2.0))), 1e-15);
}

TEST(AutogradMatmulAdd, ProjectionsOfOneInputFoldTheirInputGradients) {
  // Three projections of one (non-leaf) input, as q/k/v: each dx GEMM after the first adds
  // the running sum as its C. Same gradients as separate matmuls summed by adds, including a
  // batched input whose weight gradient needs sum_to (no fold there).
  Tensor x0 = rand({2, 5, 6}, 26);
  std::vector<Tensor> w0 = {rand({4, 6}, 27), rand({3, 6}, 28), rand({6, 6}, 29)};
  Tensor g0 = rand({2, 5, 4}, 30), g1 = rand({2, 5, 3}, 31), g2 = rand({2, 5, 6}, 32);
  auto grads = [&](bool fused) {
    Var x(x0, true);
    Var h = scale(x, 1.5);
    std::vector<Var> w, y;
    for (int i = 0; i < 3; ++i) {
      w.emplace_back(w0[i], true);
      y.push_back(fused ? matmul_add(h, w[i], Var(), 1.0, false, true) : matmul(h, w[i], false, true));
    }
    backward(y, {g0, g1, g2});
    return std::vector<Tensor>{x.grad(), w[0].grad(), w[1].grad(), w[2].grad()};
  };
  const auto f = grads(true), u = grads(false);
  for (size_t i = 0; i < f.size(); ++i) EXPECT_LE(test::rel_err(f[i], u[i]), 1e-14) << i;
}
