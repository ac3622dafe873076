// dist::SparseRowGrad on one process: the id lists, the choice between the row exchange and
// the all-reduce, and DataParallel taking the embedding out of the buckets, against a fake
// peer that holds the same gradient (so every sum is known: twice this rank's). The real
// multi-process checks are in tests/dist/sparse_row_grad_check.h (MPI and NCCL binaries).
#include <gtest/gtest.h>

#include "dist/fake_pair.h"
#include "lizard/autograd/functions.h"
#include "lizard/autograd/nn_functions.h"
#include "lizard/dist/data_parallel.h"
#include "lizard/dist/sparse_row_grad.h"
#include "test_util.h"

namespace lizard::dist {
namespace {

TEST(SparseRowIds, SortedUniqueOverEveryTensorAndIdType) {
  const Tensor a = Tensor::from_data(std::vector<int32_t>{9, 3, 3, 0, 9, 4}, {2, 3});
  const Tensor b = Tensor::from_data(std::vector<int64_t>{4, 11, 1}, {3});
  EXPECT_EQ(sorted_unique_ids({a, b}, 12, "embed"), (std::vector<int32_t>{0, 1, 3, 4, 9, 11}));
  EXPECT_TRUE(sorted_unique_ids({}, 12, "embed").empty());
}

TEST(SparseRowIds, AnIdOutsideTheTableNamesItAndTheTable) {
  const Tensor a = Tensor::from_data(std::vector<int32_t>{2, 12}, {2});
  try {
    sorted_unique_ids({a}, 12, "model.embed_tokens.weight");
    FAIL() << "no error for id 12 of a 12-row table";
  } catch (const InputError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("model.embed_tokens.weight"), std::string::npos) << m;
    EXPECT_NE(m.find("token id 12"), std::string::npos) << m;
    EXPECT_NE(m.find("[0, 12)"), std::string::npos) << m;
  }
  const Tensor neg = Tensor::from_data(std::vector<int32_t>{-1}, {1});
  EXPECT_THROW(sorted_unique_ids({neg}, 12, "e"), InputError);
}

// An embedding [V, D] whose gradient holds random values on the rows of `ids` only (what
// backward of a lookup gives).
autograd::Var embedding_with_grad(int64_t V, int64_t D, const std::vector<int32_t>& ids) {
  autograd::Var w(test::rand({V, D}, 3, DType::F32), true);
  w.set_name("embed");
  const auto n = static_cast<int64_t>(ids.size());
  autograd::Var y = autograd::embedding(w, Tensor::from_data(ids, {n}));
  autograd::sum(autograd::mul(y, autograd::Var(test::rand({n, D}, 4, DType::F32)))).backward();
  return w;
}

TEST(SparseRowGrad, RowExchangeWithAPeerOfTheSameRowsDoublesThemAndSkipsTheAllReduce) {
  const int64_t V = 23, D = 5;
  const std::vector<int32_t> ids{7, 0, 22, 7, 13};
  autograd::Var w = embedding_with_grad(V, D, ids);
  const Tensor local = w.grad().clone();
  test::FakePair peer(1);
  SparseRowGrad ex(peer, w);
  ex.set_rows({Tensor::from_data(ids, {5})});
  EXPECT_TRUE(ex.sparse());  // 2 ranks x 4 rows < 2 x 23
  EXPECT_EQ(ex.counts(), (std::vector<int64_t>{4, 4}));
  ex.launch();
  ex.finish(4.0);
  // Both ranks' rows (the same values) added into zeros in rank order, times 1/4: a + a is
  // exact and so is the scaling by a power of two, so the result is local / 2 to the bit.
  EXPECT_EQ(test::max_abs_diff(w.grad(), ops::affine(local, 0.5)), 0.0);
  EXPECT_TRUE(peer.reduced.empty()) << "the row exchange must not all-reduce the table";
}

TEST(SparseRowGrad, IdsCoveringMostOfTheTableAllReduceItInstead) {
  // 2 ranks x 12 rows >= 2 x 12: the all-gather would move more than a ring all-reduce.
  const int64_t V = 12, D = 3;
  std::vector<int32_t> ids;
  for (int32_t v = 0; v < V; ++v) ids.push_back((5 * v) % 12);
  autograd::Var w = embedding_with_grad(V, D, ids);
  const Tensor local = w.grad().clone();
  test::FakePair peer(0);
  SparseRowGrad ex(peer, w);
  ex.set_rows({Tensor::from_data(ids, {V})});
  EXPECT_FALSE(ex.sparse());
  ex.launch();
  ex.finish(2.0);
  EXPECT_EQ(peer.reduced, (std::vector<int64_t>{V * D}));
  EXPECT_EQ(test::max_abs_diff(w.grad(), local), 0.0);  // (a + a) / 2
}

TEST(SparseRowGrad, OneProcessKeepsItsGradientAndAnUndefinedOneIsZero) {
  auto single = make_single_communicator();
  autograd::Var w = embedding_with_grad(9, 4, {8, 1});
  const Tensor local = w.grad().clone();
  SparseRowGrad ex(*single, w);
  ex.set_rows({Tensor::from_data(std::vector<int32_t>{1, 8}, {2})});
  ex.launch();
  ex.finish(1.0);
  EXPECT_EQ(test::max_abs_diff(w.grad(), local), 0.0);
  // A step in which this rank's lookup never ran backward: zeros, not an error.
  w.zero_grad();
  ex.set_rows({Tensor::from_data(std::vector<int32_t>{3}, {1})});
  ex.launch();
  ex.finish(1.0);
  EXPECT_EQ(test::max_abs_diff(w.grad(), Tensor::zeros({9, 4})), 0.0);
}

TEST(SparseRowGrad, LaunchWithoutTheStepsIdsIsAnError) {
  auto single = make_single_communicator();
  autograd::Var w = embedding_with_grad(9, 4, {2});
  SparseRowGrad ex(*single, w);
  EXPECT_THROW(ex.launch(), Error);
  ex.set_rows({Tensor::from_data(std::vector<int32_t>{2}, {1})});
  ex.launch();
  ex.finish(1.0);
  EXPECT_THROW(ex.launch(), Error) << "set_rows is due again every step";
  // A frozen table has no gradient to exchange.
  autograd::Var frozen(Tensor::zeros({4, 2}), false);
  EXPECT_THROW(SparseRowGrad(*single, frozen), Error);
}

TEST(DataParallelSparseRows, TheEmbeddingLeavesTheBucketsAndIsExchangedAsRows) {
  const int64_t V = 30, D = 4;
  const std::vector<int32_t> ids{3, 29, 3, 11};
  autograd::Var w(test::rand({V, D}, 5, DType::F32), true), m(test::rand({D, 2}, 6, DType::F32), true);
  w.set_name("embed");
  m.set_name("proj");
  test::FakePair peer(0);
  DataParallelOptions o;
  o.sparse_rows = w;
  DataParallel dp(peer, {w, m}, o);
  ASSERT_NE(dp.sparse_rows(), nullptr);
  dp.set_step_ids({Tensor::from_data(ids, {1, 4})});
  autograd::Var h = autograd::embedding(w, Tensor::from_data(ids, {4}));
  autograd::sum(autograd::matmul(h, m)).backward();
  const Tensor gw = w.grad().clone(), gm = m.grad().clone();
  dp.finish_grad_sync();
  // Only the projection went through the buckets' all-reduce.
  EXPECT_EQ(peer.reduced, (std::vector<int64_t>{D * 2}));
  EXPECT_EQ(test::max_abs_diff(w.grad(), ops::affine(gw, 2.0)), 0.0);
  EXPECT_EQ(test::max_abs_diff(m.grad(), ops::affine(gm, 2.0)), 0.0);
  // The ids are due every step: a step without them is an error, not a silent dense sum.
  autograd::sum(autograd::matmul(autograd::embedding(w, Tensor::from_data(ids, {4})), m)).backward();
  EXPECT_THROW(dp.finish_grad_sync(), Error);
}

TEST(DataParallelSparseRows, ATableThatIsNotAParameterIsAnError) {
  autograd::Var w(Tensor::zeros({4, 2}), true), m(Tensor::zeros({2}), true);
  auto single = make_single_communicator();
  DataParallelOptions o;
  o.sparse_rows = w;
  EXPECT_THROW(DataParallel(*single, {m}, o), Error);
}

}  // namespace
}  // namespace lizard::dist
