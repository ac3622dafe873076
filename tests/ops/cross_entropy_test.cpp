#include <gtest/gtest.h>

#include <cmath>

#include "lizard/autograd/nn_functions.h"
#include "lizard/core/error.h"
#include "lizard/ops/cross_entropy.h"
#include "test_util.h"

using namespace lizard;
using lizard::test::check_gradients;
using lizard::test::rand;

namespace {

// Mean over counted rows of log(sum exp z) - z[t], written from the definition in f64.
double ce_oracle(const Tensor& logits, const std::vector<int64_t>& t) {
  const int64_t N = logits.size(0), V = logits.size(1);
  const auto z = logits.to_vector();
  double total = 0;
  int64_t count = 0;
  for (int64_t n = 0; n < N; ++n) {
    if (t[n] < 0) continue;
    double s = 0;
    for (int64_t v = 0; v < V; ++v) s += std::exp(z[n * V + v]);
    total += std::log(s) - z[n * V + t[n]];
    ++count;
  }
  return count ? total / count : 0.0;
}

Tensor ids(const std::vector<int64_t>& t) {
  return Tensor::from_data(t, {static_cast<int64_t>(t.size())});
}

}  // namespace

TEST(CrossEntropy, MatchesDefinitionWithIgnoredRows) {
  const std::vector<int64_t> t = {3, -1, 0, 6, -100, 2, 5};  // V = 7: 5 counted rows
  const Tensor logits = rand({7, 7}, 11, DType::F64, -4, 4);
  const ops::CrossEntropyOut r = ops::cross_entropy(logits, ids(t));
  EXPECT_EQ(r.count, 5);
  EXPECT_NEAR(r.loss.item(), ce_oracle(logits, t), 1e-12);  // f64 throughout
}

// The trainer passes the batch's host copy so a CUDA forward never reads the targets back; the
// result must be the same, and the host copy is checked as strictly as the targets themselves.
TEST(CrossEntropy, HostTargetsGiveTheSameResultAndAreChecked) {
  const std::vector<int64_t> t = {1, -1, 4, 0};
  const Tensor logits = rand({4, 5}, 12, DType::F64, -3, 3);
  const ops::CrossEntropyOut a = ops::cross_entropy(logits, ids(t));
  const ops::CrossEntropyOut b = ops::cross_entropy(logits, ids(t), ids(t));
  EXPECT_EQ(a.count, b.count);
  EXPECT_EQ(a.loss.item(), b.loss.item());
  EXPECT_THROW(ops::cross_entropy(logits, ids(t), ids({1, -1, 5, 0})), InputError);  // 5 >= V
  EXPECT_THROW(ops::cross_entropy(logits, ids(t), ids({1, -1, 4})), Error);          // size
}

TEST(CrossEntropy, GradientMatchesFiniteDifferences) {
  const std::vector<int64_t> t = {2, -1, 0, 3, 3};
  const Tensor targets = ids(t);
  check_gradients(
      [&](const std::vector<autograd::Var>& v) {
        return autograd::cross_entropy(v[0], targets, targets).loss;
      },
      {rand({5, 4}, 13, DType::F64, -2, 2)}, 1e-6, 1e-7);
}
