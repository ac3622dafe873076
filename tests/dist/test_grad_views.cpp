// Gradients as views of the all-reduce buffers (DataParallel::prepare_grads,
// GradientBucketer::attach_grad_views): backward accumulates into the buckets in place, the
// reduction copies nothing in or out, and every gradient is the same bits as on the copying
// path, over several steps (the buffers must be zeroed between steps) and with accumulation.
#include <gtest/gtest.h>

#include "lizard/autograd/functions.h"
#include "lizard/dist/data_parallel.h"
#include "lizard/ops/elementwise.h"
#include "dist/fake_pair.h"
#include "test_util.h"

namespace lizard::dist {
namespace {

using autograd::Var;

using test::named_leaf;

// Awkward sizes (7 x 5, 5 x 3, 13, 1) so bucket slices start at odd offsets; w1 is used twice
// (its gradient is a sum of two contributions, the second added in place into the view).
struct Model {
  Var w1 = named_leaf({7, 5}, 11, "w1"), w2 = named_leaf({5, 3}, 12, "w2"),
      b = named_leaf({13}, 13, "b"), s = named_leaf({1}, 14, "s");
  std::vector<Var> params() const { return {w1, w2, b, s}; }
  Var loss(uint64_t seed) const {
    Var x(test::rand({4, 7}, seed, DType::F32));
    Var z = autograd::matmul(autograd::matmul(x, w1), w2);
    Var t = autograd::add(autograd::sum(autograd::mul(z, z)), autograd::sum(autograd::mul(w1, w1)));
    return autograd::add(autograd::add(t, autograd::sum(autograd::mul(b, b))),
                         autograd::sum(autograd::mul(s, s)));
  }
};

// One training step as the trainer runs it: drop the gradients, prepare, `accum` backwards
// (the last one launching buckets from the leaf-ready hook), finish; then a fake update so
// the next step sees other weights. Returns the reduced gradients.
std::vector<Tensor> step(DataParallel& dp, Model& m, int accum, uint64_t seed) {
  for (Var& p : m.params()) p.zero_grad();
  dp.prepare_grads();
  for (int i = 0; i < accum; ++i) {
    Var l = m.loss(seed + static_cast<uint64_t>(i));
    if (i + 1 == accum) {
      dp.begin_grad_sync();
      autograd::backward({l}, {}, false, [&](autograd::VarImpl* v) { dp.on_leaf_ready(v); });
    } else {
      l.backward();
    }
  }
  dp.finish_grad_sync();
  std::vector<Tensor> out;
  for (Var& p : m.params()) {
    out.push_back(p.grad().clone());
    Tensor d = p.data();
    d.copy_(ops::add(d, ops::affine(p.grad(), -1e-3)));
  }
  return out;
}

TEST(GradViews, SameBitsAsCopyingBucketsOverStepsAndAccumulation) {
  for (size_t bucket_bytes : {size_t{64}, size_t{1} << 20}) {  // several buckets, then one
    Model with, without;
    test::FakePair comm_with, comm_without;
    DataParallelOptions on, off;
    on.bucket_bytes = off.bucket_bytes = bucket_bytes;
    off.grad_views = false;
    DataParallel dp_with(comm_with, with.params(), on), dp_without(comm_without, without.params(), off);
    for (int s = 0; s < 3; ++s) {
      const int accum = 1 + s % 2;  // 1, 2, 1 micro-batches
      const std::vector<Tensor> a = step(dp_with, with, accum, 100 + 10 * s);
      const std::vector<Tensor> b = step(dp_without, without, accum, 100 + 10 * s);
      for (size_t i = 0; i < a.size(); ++i)
        EXPECT_EQ(test::max_abs_diff(a[i], b[i]), 0.0)
            << "bucket_bytes " << bucket_bytes << " step " << s << " " << with.params()[i].name();
      // The same number of all-reduces of the same sizes.
      EXPECT_EQ(comm_with.reduced, comm_without.reduced);
    }
  }
}

TEST(GradViews, GradientsLiveInTheBucketBuffersAndStayThere) {
  Model m;
  test::FakePair comm;
  DataParallelOptions o;
  o.bucket_bytes = 64;
  DataParallel dp(comm, m.params(), o);
  for (Var& p : m.params()) p.zero_grad();
  EXPECT_EQ(dp.prepare_grads(), 4u);
  std::vector<const void*> at;
  for (Var& p : m.params()) {
    ASSERT_TRUE(p.grad().defined()) << p.name();
    EXPECT_EQ(test::max_abs_diff(p.grad(), Tensor::zeros(p.shape(), DType::F32)), 0.0) << p.name();
    at.push_back(p.grad().raw());
  }
  dp.begin_grad_sync();
  autograd::backward({m.loss(5)}, {}, false, [&](autograd::VarImpl* v) { dp.on_leaf_ready(v); });
  dp.finish_grad_sync();
  // Backward added into the views and the reduction wrote back into them: same memory.
  for (size_t i = 0; i < at.size(); ++i) EXPECT_EQ(m.params()[i].grad().raw(), at[i]) << i;
  // A parameter that already holds a gradient keeps it (it is copied into its bucket).
  for (Var& p : m.params()) p.zero_grad();
  m.b.set_grad(Tensor::full({13}, 1.0, DType::F32));
  EXPECT_EQ(dp.prepare_grads(), 3u);
  dp.begin_grad_sync();
  autograd::backward({m.loss(6)}, {}, false, [&](autograd::VarImpl* v) { dp.on_leaf_ready(v); });
  dp.finish_grad_sync();
  // b: (1 + 2 b) summed over the fake pair's two equal ranks.
  const Tensor want_b = ops::affine(ops::add(Tensor::full({13}, 1.0, DType::F32), ops::affine(m.b.data(), 2.0)), 2.0);
  EXPECT_EQ(test::max_abs_diff(m.b.grad(), want_b), 0.0);
  // Switched off: no views.
  Model n;
  DataParallelOptions off;
  off.grad_views = false;
  DataParallel dp_off(comm, n.params(), off);
  for (Var& p : n.params()) p.zero_grad();
  EXPECT_EQ(dp_off.prepare_grads(), 0u);
  for (Var& p : n.params()) EXPECT_FALSE(p.grad().defined());
}

TEST(GradViews, DivisorScalesIntoTheViews) {
  // The bucketer alone with a divisor: grad = (2 x grad) / 4 written back into the views.
  Model m, ref;
  test::FakePair comm;
  GradientBucketer b(comm, m.params(), 64);
  for (Var& p : m.params()) p.zero_grad();
  EXPECT_EQ(b.attach_grad_views(), 4u);
  std::vector<const void*> at;
  for (Var& p : m.params()) at.push_back(p.grad().raw());
  m.loss(9).backward();
  ref.loss(9).backward();
  b.all_reduce(4.0);
  for (size_t i = 0; i < at.size(); ++i) {
    EXPECT_EQ(m.params()[i].grad().raw(), at[i]) << i;
    // (2 g) x 0.25 in f32: exact (powers of two).
    EXPECT_EQ(test::max_abs_diff(m.params()[i].grad(), ops::affine(ref.params()[i].grad(), 0.5)), 0.0) << i;
  }
}

}  // namespace
}  // namespace lizard::dist
