// DataParallel and its autograd hook on one process: the leaf-ready callback fires once per
// leaf with the gradient already final; buckets are launched from inside backward; the
// ZeRO-1 plan is a balanced partition and sync_params broadcasts each tensor from its owner.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>

#include "lizard/autograd/functions.h"
#include "lizard/dist/data_parallel.h"
#include "lizard/ops/elementwise.h"
#include "dist/fake_pair.h"
#include "test_util.h"

namespace lizard::dist {
namespace {

using autograd::Var;

using test::named_leaf;

// A fake rank 0 of two ranks whose peer holds the same gradients (sum = 2x); records what it
// is asked to do, and how far backward had got when it was asked.
using RecordingPair = test::FakePair;

// loss = sum((x w1 w2)^2) + sum(w1 * w3) + sum(w4): w1 is used first in forward and again at
// the end, so its gradient is final only when backward has gone all the way down.
struct Graph {
  Tensor x = test::rand({3, 4}, 1, DType::F32);
  Var w1 = named_leaf({4, 5}, 2, "w1"), w2 = named_leaf({5, 2}, 3, "w2"), w3 = named_leaf({4, 5}, 4, "w3"),
      w4 = named_leaf({6}, 5, "w4");
  std::vector<Var> params() const { return {w1, w2, w3, w4}; }
  Var loss() const {
    Var z = autograd::matmul(autograd::matmul(Var(x), w1), w2);
    return autograd::add(autograd::add(autograd::sum(autograd::mul(z, z)),
                                       autograd::sum(autograd::mul(w1, w3))),
                         autograd::sum(w4));
  }
};

TEST(LeafReadyHook, FiresOncePerLeafWithTheFinalGradient) {
  Graph g;
  std::vector<std::string> order;
  std::map<std::string, Tensor> at_fire;
  autograd::backward({g.loss()}, {}, false, [&](autograd::VarImpl* l) {
    order.push_back(l->name);
    at_fire[l->name] = l->grad.clone();
  });
  ASSERT_EQ(order.size(), 4u);  // each leaf exactly once
  for (const Var& p : g.params()) {
    ASSERT_TRUE(at_fire.count(p.name())) << p.name();
    // Bit-equal: nothing was added to the gradient after the hook said it was final.
    EXPECT_EQ(test::max_abs_diff(at_fire[p.name()], p.grad()), 0.0) << p.name();
  }
  // w1 feeds the first matmul: it cannot be final before w2 is.
  const auto pos = [&](const char* n) { return std::find(order.begin(), order.end(), n) - order.begin(); };
  EXPECT_LT(pos("w2"), pos("w1"));
  // The same backward without a hook gives the same gradients (the hook does not perturb it).
  Graph h;
  h.loss().backward();
  for (size_t i = 0; i < 4; ++i)
    EXPECT_EQ(test::max_abs_diff(h.params()[i].grad(), g.params()[i].grad()), 0.0);
}

TEST(DataParallel, BucketsAreLaunchedFromInsideBackward) {
  Graph g;
  RecordingPair comm;
  DataParallelOptions o;
  o.bucket_bytes = 64;  // 16 floats: several buckets for these parameters
  DataParallel dp(comm, g.params(), o);
  Graph ref;
  ref.loss().backward();  // one process: the expected gradient is 2x this

  dp.begin_grad_sync();
  autograd::backward({g.loss()}, {}, false,
                     [&](autograd::VarImpl* l) { dp.on_leaf_ready(l); });
  const size_t during = comm.reduced.size();
  dp.finish_grad_sync();
  // Every bucket was complete at the end of backward, so every launch happened inside it.
  EXPECT_GT(during, 1u);
  EXPECT_EQ(during, comm.reduced.size());
  for (size_t i = 0; i < 4; ++i)
    EXPECT_EQ(test::max_abs_diff(g.params()[i].grad(), ops::affine(ref.params()[i].grad(), 2.0)),
              0.0)
        << g.params()[i].name();
}

TEST(DataParallel, WithoutOverlapReducesAfterBackward) {
  Graph g;
  RecordingPair comm;
  DataParallelOptions o;
  o.overlap = false;
  DataParallel dp(comm, g.params(), o);
  dp.begin_grad_sync();  // a no-op without overlap
  autograd::backward({g.loss()}, {}, false, [&](autograd::VarImpl* l) { dp.on_leaf_ready(l); });
  EXPECT_TRUE(comm.reduced.empty());
  dp.finish_grad_sync();
  EXPECT_EQ(comm.reduced.size(), 1u);  // one default-size bucket
}

TEST(Zero1, OwnersArePartitionBalancedAndDeterministic) {
  std::vector<Var> ps;
  const std::vector<int64_t> sizes{100, 7, 60, 50, 1, 40, 10, 10, 33};
  for (size_t i = 0; i < sizes.size(); ++i) ps.push_back(named_leaf({sizes[i]}, 10 + i, "p" + std::to_string(i)));
  for (int world : {1, 2, 3, 4, 12}) {
    const std::vector<int> owners = zero1_owners(ps, world);
    ASSERT_EQ(owners.size(), ps.size());
    std::vector<int64_t> load(world, 0);
    for (size_t i = 0; i < ps.size(); ++i) {
      ASSERT_GE(owners[i], 0);
      ASSERT_LT(owners[i], world);
      load[owners[i]] += sizes[i];
    }
    // Greedy largest-first bound: no rank above the mean plus the largest tensor.
    const double mean = 311.0 / world;
    EXPECT_LE(*std::max_element(load.begin(), load.end()), mean + 100) << "world " << world;
    EXPECT_EQ(owners, zero1_owners(ps, world));
  }
  // Two ranks, by hand: 100 -> r0, 60 -> r1, 50 -> r1, 40 -> r0, 33 -> r1, 10 -> r0, 10 -> r1,
  // 7 -> r0, 1 -> r1: loads 157 and 154.
  const std::vector<int> two = zero1_owners(ps, 2);
  EXPECT_EQ(two, (std::vector<int>{0, 0, 1, 1, 1, 0, 0, 1, 1}));
}

TEST(Zero1, OwnedParamsAndSyncFollowThePlan) {
  Graph g;
  RecordingPair comm;
  DataParallelOptions o;
  o.zero1 = true;
  DataParallel dp(comm, g.params(), o);
  const std::vector<int> owners = zero1_owners(g.params(), 2);
  std::vector<std::string> mine;
  for (const Var& p : dp.owned_params(g.params())) mine.push_back(p.name());
  std::vector<std::string> expect;
  for (size_t i = 0; i < 4; ++i)
    if (owners[i] == 0) expect.push_back(g.params()[i].name());
  EXPECT_EQ(mine, expect);
  EXPECT_FALSE(mine.empty());
  EXPECT_LT(mine.size(), 4u);
  dp.sync_params();
  EXPECT_EQ(comm.roots, owners);  // one broadcast per tensor, rooted at its owner, in order
  // Without zero1 every parameter is this rank's and nothing is broadcast.
  RecordingPair c2;
  DataParallel plain(c2, g.params(), {});
  EXPECT_EQ(plain.owned_params(g.params()).size(), 4u);
  plain.sync_params();
  EXPECT_TRUE(c2.roots.empty());
}

}  // namespace
}  // namespace lizard::dist
