#include <gtest/gtest.h>

#include "lizard/autograd/nn_functions.h"
#include "lizard/ops/embedding.h"
#include "test_util.h"

using namespace lizard;
using lizard::test::check_gradients;
using lizard::test::rand;

namespace {
// Independent gather: out[n*D + d] = w[id*D + d].
std::vector<double> gather(const std::vector<double>& w, const std::vector<int64_t>& ids, int64_t D) {
  std::vector<double> out;
  for (int64_t id : ids)
    for (int64_t d = 0; d < D; ++d) out.push_back(w[id * D + d]);
  return out;
}
}  // namespace

TEST(Embedding, ForwardMatchesGatherForBothIdTypesAndShapes) {
  const int64_t V = 7, D = 5;
  Tensor w = rand({V, D}, 1);
  const std::vector<int64_t> ids{6, 0, 3, 3, 1, 6};
  for (DType wt : {DType::F64, DType::F32}) {
    Tensor ids64 = Tensor::from_data(ids, {2, 3});
    std::vector<int32_t> i32(ids.begin(), ids.end());
    Tensor ids32 = Tensor::from_data(i32, {2, 3});
    for (const Tensor& idt : {ids64, ids32}) {
      Tensor out = ops::embedding(w.to(wt), idt);
      EXPECT_EQ(out.shape(), (Shape{2, 3, D}));
      EXPECT_EQ(out.dtype(), wt);
      // A gather is a copy: exact in either dtype.
      EXPECT_EQ(out.to_vector(), gather(w.to(wt).to_vector(), ids, D));
    }
  }
  // A scalar id gives a [D] row.
  Tensor one = ops::embedding(w, Tensor::from_data(std::vector<int64_t>{4}, {}));
  EXPECT_EQ(one.shape(), (Shape{D}));
  EXPECT_EQ(one.to_vector(), gather(w.to_vector(), {4}, D));
}

TEST(Embedding, OutOfRangeIdIsAnErrorNamingIt) {
  Tensor w = rand({10, 3}, 2);
  try {
    ops::embedding(w, Tensor::from_data(std::vector<int32_t>{1, 10, 2}, {3}));
    FAIL() << "no error for id 10 with V = 10";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("10"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("position 1"), std::string::npos) << e.what();
  }
  EXPECT_THROW(ops::embedding(w, Tensor::from_data(std::vector<int64_t>{-1}, {1})), InputError);
  EXPECT_THROW(ops::embedding(w, Tensor::zeros({2}, DType::F32)), Error);
}

TEST(Embedding, BackwardSumsRepeatedIdsDeterministically) {
  const int64_t V = 6, D = 3;
  const std::vector<int64_t> ids{2, 5, 2, 0, 2};
  Tensor dy = rand({5, D}, 3);
  Tensor dw = ops::embedding_backward(dy, Tensor::from_data(ids, {5}), V);
  std::vector<double> want(V * D, 0.0), g = dy.to_vector();
  for (size_t n = 0; n < ids.size(); ++n)
    for (int64_t d = 0; d < D; ++d) want[ids[n] * D + d] += g[n * D + d];
  EXPECT_EQ(dw.shape(), (Shape{V, D}));
  // Summed in order of n, as the oracle does: equal bit for bit, rows never hit stay 0.
  EXPECT_EQ(dw.to_vector(), want);
  Tensor again = ops::embedding_backward(dy, Tensor::from_data(ids, {5}), V);
  EXPECT_EQ(again.to_vector(), dw.to_vector());
}

TEST(Embedding, GradientByFiniteDifferences) {
  Tensor ids = Tensor::from_data(std::vector<int32_t>{1, 1, 0, 3, 1, 2}, {3, 2});
  check_gradients([&](const std::vector<autograd::Var>& v) { return autograd::embedding(v[0], ids); },
                  {rand({4, 3}, 4)});
}

TEST(Embedding, FrozenWeightRecordsNothing) {
  autograd::Var w(rand({4, 2}, 5), false);
  autograd::Var y = autograd::embedding(w, Tensor::from_data(std::vector<int64_t>{0, 3}, {2}));
  EXPECT_FALSE(y.requires_grad());
  EXPECT_EQ(y.grad_fn(), nullptr);
}
