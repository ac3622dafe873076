// A leaf's first gradient is taken without a copy only when nothing else can see it: a fresh
// tensor that node gave to no one else is adopted (same data pointer), while a tensor shared
// with another leaf, a node buffer or the caller is copied, so in-place accumulation into the
// leaf later never changes what the others hold.
#include <gtest/gtest.h>

#include "lizard/autograd/functions.h"
#include "lizard/ops/elementwise.h"
#include "test_util.h"

using namespace lizard;
using namespace lizard::autograd;
using lizard::test::rand;

namespace {

// y = a + b (elementwise; both the same shape) whose backward sends ONE tensor to every input:
// a copy of grad_out * k made here (fresh), or, with share_out, grad_out itself. `sent` keeps
// the data pointer of what it returned.
struct Fanout : Node {
  double k = 1.0;
  const void* sent = nullptr;
  const char* name() const override { return "fanout"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    Tensor t = g.clone();
    if (k != 1.0) t = ops::affine(t, k);
    sent = t.raw();
    return std::vector<Tensor>(edges.size(), t);
  }
};

// y = x (a copy) whose backward returns a fresh gradient: grad_out * 2.
struct Fresh : Node {
  const void* sent = nullptr;
  const char* name() const override { return "fresh"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    Tensor t = ops::affine(g, 2.0);
    sent = t.raw();
    return {t};
  }
};

Var fanout(const std::vector<Var>& in, std::shared_ptr<Fanout>& node, double k = 1.0) {
  node = std::make_shared<Fanout>();
  node->k = k;
  Tensor out = in[0].data().clone();
  for (size_t i = 1; i < in.size(); ++i) out = ops::add(out, in[i].data());
  return make_result(out, in, node);
}

std::vector<double> vec(const Tensor& t) { return t.to_vector(); }

}  // namespace

TEST(LeafGradAdopt, FreshGradientIsAdoptedWithoutACopy) {
  Var w(rand({5, 3}, 1), true);
  auto node = std::make_shared<Fresh>();
  Var y = make_result(w.data().clone(), {w}, node);
  y.backward(Tensor::full({5, 3}, 0.25, DType::F64));
  ASSERT_TRUE(w.grad().defined());
  EXPECT_EQ(w.grad().raw(), node->sent) << "a gradient nobody else holds must be taken as is";
  EXPECT_EQ(vec(w.grad()), std::vector<double>(15, 0.5));
}

TEST(LeafGradAdopt, TensorSharedByTwoLeavesIsCopiedForOne) {
  // One tensor reaches both leaves: the first must copy it (the second still holds it); the
  // second may adopt it. A second backward adds into both in place: each must get its own sum.
  Var a(rand({7}, 2), true), b(rand({7}, 3), true);
  for (int pass = 0; pass < 2; ++pass) {
    std::shared_ptr<Fanout> node;
    Var y = fanout({a, b}, node, pass == 0 ? 1.0 : 3.0);
    y.backward(Tensor::ones({7}, DType::F64));
    EXPECT_NE(a.grad().raw(), b.grad().raw()) << "pass " << pass;
  }
  EXPECT_EQ(vec(a.grad()), std::vector<double>(7, 4.0)) << "1 + 3: sharing would give 7 or 10";
  EXPECT_EQ(vec(b.grad()), std::vector<double>(7, 4.0));
}

TEST(LeafGradAdopt, TensorSharedWithANodeBufferIsCopied) {
  // Fanout's inputs: the node h = 3 b first (its buffer aliases the tensor, no copy), then the
  // leaf a. The leaf must not take the tensor h's backward still reads.
  Var a(rand({4097}, 4), true), b(rand({4097}, 5), true);
  Var h = scale(b, 3.0);
  std::shared_ptr<Fanout> node;
  Var y = fanout({h, a}, node);
  y.backward(Tensor::full({4097}, 0.5, DType::F64));
  EXPECT_NE(a.grad().raw(), node->sent) << "the leaf aliases h's node buffer";
  EXPECT_EQ(vec(a.grad()), std::vector<double>(4097, 0.5));
  EXPECT_EQ(vec(b.grad()), std::vector<double>(4097, 1.5));
}

TEST(LeafGradAdopt, CallersGradientOfALeafRootIsCopied) {
  // backward(grads) on a leaf: the caller keeps its tensor, which later accumulation into the
  // leaf must not change.
  Var x(rand({1}, 6), true);
  Tensor seed = Tensor::full({1}, 2.0, DType::F64);
  x.backward(seed);
  EXPECT_NE(x.grad().raw(), seed.raw());
  x.backward(seed);
  EXPECT_EQ(vec(x.grad()), std::vector<double>{4.0});
  EXPECT_EQ(vec(seed), std::vector<double>{2.0}) << "the caller's gradient was written";
}

TEST(LeafGradAdopt, AccumulateCopiesViewsAndSharedTensors) {
  // Directly: a tensor another handle shares, a view into a larger storage, and a fresh one.
  Tensor fresh = rand({3, 4}, 7);
  const void* p = fresh.raw();
  Tensor acc;
  accumulate(acc, std::move(fresh));
  EXPECT_EQ(acc.raw(), p) << "sole owner: adopted";

  Tensor shared = rand({3, 4}, 8), other = shared;
  Tensor acc2;
  accumulate(acc2, std::move(shared));
  EXPECT_NE(acc2.raw(), other.raw());
  accumulate(acc2, Tensor::ones({3, 4}, DType::F64));
  EXPECT_EQ(vec(other), vec(rand({3, 4}, 8))) << "in-place accumulation reached another handle";

  Tensor big = rand({6, 4}, 9);
  Tensor acc3;
  accumulate(acc3, big.slice(0, 0, 3));  // a view: its storage is twice its size
  EXPECT_NE(acc3.raw(), big.raw());
  EXPECT_EQ(acc3.storage()->bytes(), acc3.nbytes()) << "the copy must not keep `big` alive";
}
