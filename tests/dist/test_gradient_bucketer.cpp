// GradientBucketer on one process: bucket assignment, flatten/scatter round trip, ordered
// launching, and the divisor.
#include <gtest/gtest.h>

#include "lizard/autograd/functions.h"
#include "lizard/dist/gradient_bucketer.h"
#include "dist/fake_pair.h"
#include "test_util.h"

namespace lizard::dist {
namespace {

using autograd::Var;

Var param(const Shape& s, DType dt, const std::string& name, bool trainable = true) {
  Var v(Tensor::zeros(s, dt), trainable);
  v.set_name(name);
  return v;
}

// The parameters of the assignment tests: sizes chosen against a 64-byte cap (16 f32).
std::vector<Var> sample_params() {
  return {param({10}, DType::F32, "p0"),     param({3, 5}, DType::F32, "p1"),
          param({1}, DType::F32, "p2"),      param({7}, DType::F64, "p3"),
          param({100}, DType::F32, "p4"),    param({4}, DType::F32, "frozen", false),
          param({2, 3}, DType::BF16, "p6")};
}

// Records the all-reduces it is asked for and acts as two ranks holding equal gradients
// (sum = 2x), so the bucketer's full path runs with a known answer.
using TwoEqualRanks = test::FakePair;

TEST(GradientBucketer, ReverseOrderBucketsByBytesAndDtype) {
  auto comm = make_single_communicator();
  GradientBucketer b(*comm, sample_params(), 64);
  // Frozen is dropped: indices are p0 p1 p2 p3 p4 p6 -> 0..5.
  ASSERT_EQ(b.num_params(), 6u);
  EXPECT_EQ(b.param(5).name(), "p6");
  // Walking backwards from p6 with a 64-byte cap:
  //   p6 bf16 on the CPU -> f32 buffer, 24 B                      -> bucket 0
  //   p4 400 B does not fit after 24 B, and is over the cap alone  -> bucket 1
  //   p3 f64 (another dtype)                                      -> bucket 2
  //   p2 4 B f32, then p1 60 B (4 + 60 = 64 fits exactly)          -> bucket 3
  //   p0 40 B (64 + 40 > 64)                                       -> bucket 4
  ASSERT_EQ(b.num_buckets(), 5u);
  EXPECT_EQ(b.bucket_params(0), (std::vector<size_t>{5}));
  EXPECT_EQ(b.bucket_params(1), (std::vector<size_t>{4}));
  EXPECT_EQ(b.bucket_params(2), (std::vector<size_t>{3}));
  EXPECT_EQ(b.bucket_params(3), (std::vector<size_t>{2, 1}));
  EXPECT_EQ(b.bucket_params(4), (std::vector<size_t>{0}));
  EXPECT_EQ(b.bucket_dtype(0), DType::F32);
  EXPECT_EQ(b.bucket_dtype(2), DType::F64);
  EXPECT_EQ(b.bucket_numel(3), 16);
  EXPECT_EQ(b.bucket_of(1), 3u);
  // The default cap (25 MiB) holds these in one bucket per dtype run.
  GradientBucketer big(*comm, sample_params());
  EXPECT_EQ(big.num_buckets(), 3u);  // f32(p6,p4) | f64(p3) | f32(p2,p1,p0)
}

TEST(GradientBucketer, FlattenScatterRoundTrip) {
  auto comm = make_single_communicator();
  auto ps = sample_params();
  GradientBucketer b(*comm, ps, 64);
  std::vector<Tensor> orig(b.num_params());
  for (size_t i = 0; i < b.num_params(); ++i) {
    Var p = b.param(i);
    if (p.name() == "p2") continue;  // unused this step: no gradient
    orig[i] = test::rand(p.shape(), 100 + i, p.dtype());
    p.set_grad(orig[i].clone());
  }
  for (size_t k = 0; k < b.num_buckets(); ++k) {
    Tensor flat = b.flatten(k);
    ASSERT_EQ(flat.shape(), Shape{b.bucket_numel(k)});
    // The buffer is the bucket's gradients end to end, in bucket order (checks the offsets).
    std::vector<double> expect;
    for (size_t i : b.bucket_params(k)) {
      if (!orig[i].defined()) {
        expect.insert(expect.end(), b.param(i).data().numel(), 0.0);
      } else {
        auto v = orig[i].to_vector();
        expect.insert(expect.end(), v.begin(), v.end());
      }
    }
    EXPECT_EQ(flat.to_vector(), expect) << "bucket " << k;
    // Clear the used gradients (p2 keeps none: unflatten must create it).
    for (size_t i : b.bucket_params(k))
      if (orig[i].defined()) Var(b.param(i)).set_grad(Tensor::zeros(b.param(i).shape(),
                                                                          b.param(i).dtype()));
    // 0.25 is a power of two: the scaled values are exact in every dtype.
    b.unflatten(k, flat, 0.25);
  }
  for (size_t i = 0; i < b.num_params(); ++i) {
    const Var& p = b.param(i);
    ASSERT_TRUE(p.grad().defined()) << p.name();
    EXPECT_EQ(p.grad().shape(), p.shape());
    EXPECT_EQ(p.grad().dtype(), p.dtype()) << p.name();
    if (!orig[i].defined()) {
      EXPECT_EQ(test::max_abs_diff(p.grad(), Tensor::zeros(p.shape(), DType::F64)), 0.0);
    } else {
      EXPECT_EQ(test::max_abs_diff(p.grad(), ops::affine(orig[i].to(DType::F64), 0.25)), 0.0)
          << p.name();
    }
  }
}

TEST(GradientBucketer, AllReduceDividesByTheGivenNormaliser) {
  TwoEqualRanks comm;
  GradientBucketer b(comm, sample_params(), 64);
  std::vector<Tensor> orig(b.num_params());
  for (size_t i = 0; i < b.num_params(); ++i) {
    orig[i] = test::rand(b.param(i).shape(), 7 + i, b.param(i).dtype());
    Var(b.param(i)).set_grad(orig[i].clone());
  }
  // Two equal ranks summed, divided by a token count of 6: grad * 2 / 6 = grad / 3.
  b.all_reduce(6.0);
  EXPECT_EQ(comm.reduced.size(), b.num_buckets());
  for (size_t i = 0; i < b.num_params(); ++i) {
    Tensor expect = ops::affine(orig[i].to(DType::F64), 1.0 / 3.0);
    // f32: one rounding of x*2 (exact) and one of *(1/6) -> 2^-23 relative; bf16 rounds the
    // result to 8 bits -> 2^-8; f64 exact to 1e-15.
    const double tol = b.param(i).dtype() == DType::BF16 ? 4e-3
                       : b.param(i).dtype() == DType::F32 ? 3e-7 : 1e-15;
    EXPECT_LT(test::rel_err(b.param(i).grad().to(DType::F64), expect), tol) << b.param(i).name();
  }
  // The buffers are reused: a second step gives the same answer from fresh gradients.
  for (size_t i = 0; i < b.num_params(); ++i) Var(b.param(i)).set_grad(orig[i].clone());
  b.all_reduce(2.0);
  for (size_t i = 0; i < b.num_params(); ++i)
    EXPECT_EQ(test::max_abs_diff(b.param(i).grad(), orig[i]), 0.0) << b.param(i).name();
}

TEST(GradientBucketer, LaunchesCompleteBucketsInBucketOrder) {
  TwoEqualRanks comm;
  GradientBucketer b(comm, sample_params(), 64);
  for (size_t i = 0; i < b.num_params(); ++i)
    Var(b.param(i)).set_grad(Tensor::ones(b.param(i).shape(), b.param(i).dtype()));
  b.start(2.0);
  // p0 (bucket 4) first: its bucket is complete but buckets 0..3 are not launched yet.
  b.mark_ready(0);
  EXPECT_TRUE(comm.reduced.empty());
  b.mark_ready(5);  // completes bucket 0 (p6) -> launches it alone
  EXPECT_EQ(comm.reduced, (std::vector<int64_t>{6}));
  b.mark_ready(4);  // bucket 1
  b.mark_ready(3);  // bucket 2
  b.mark_ready(2);  // half of bucket 3: waits for p1
  EXPECT_EQ(comm.reduced, (std::vector<int64_t>{6, 100, 7}));
  EXPECT_THROW(b.mark_ready(2), Error);  // twice in one step
  EXPECT_THROW(b.wait(), Error);         // p1 never marked
  b.mark_ready(1);                       // bucket 3, then the waiting bucket 4
  EXPECT_EQ(comm.reduced, (std::vector<int64_t>{6, 100, 7, 16, 10}));
  b.wait();
  for (size_t i = 0; i < b.num_params(); ++i)
    EXPECT_EQ(test::max_abs_diff(b.param(i).grad(),
                                 Tensor::ones(b.param(i).shape(), DType::F64)), 0.0);
}

TEST(GradientBucketer, RejectsBadInput) {
  auto comm = make_single_communicator();
  Var leaf = param({3}, DType::F32, "w");
  Var nonleaf = autograd::scale(leaf, 2.0);
  EXPECT_THROW(GradientBucketer(*comm, {nonleaf}), Error);
  Var ints(Tensor::zeros({3}, DType::I32), false);  // frozen: ignored, not an error
  EXPECT_NO_THROW(GradientBucketer(*comm, {ints}));
  GradientBucketer b(*comm, {leaf});
  EXPECT_THROW(b.start(0.0), Error);
  EXPECT_THROW(b.mark_ready(0), Error);  // before start
  leaf.set_grad(Tensor::zeros({4}));
  b.start(1.0);
  EXPECT_THROW(b.mark_ready(0), Error);  // gradient shape differs from the parameter's
}

}  // namespace
}  // namespace lizard::dist
