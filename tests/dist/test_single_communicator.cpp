// The single-process communicator, launch-environment detection, options and logging.
#include <gtest/gtest.h>

#include <cstdlib>
#include <sstream>

#include "lizard/dist/communicator.h"
#include "lizard/dist/logging.h"
#include "dist/fake_pair.h"
#include "test_util.h"

namespace lizard::dist {
namespace {

using test::ScopedEnv;  // tests share the process: each restores what it set

// Clears every variable detect_launch_env reads, so the test sees only what it sets.
void clear_launch_env(ScopedEnv& env) {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK",
                        "OMPI_COMM_WORLD_LOCAL_SIZE", "PMI_SIZE", "PMI_RANK", "MPI_LOCALRANKID",
                        "MPI_LOCALNRANKS"})
    env.set(v, nullptr);
}

TEST(SingleCommunicator, IdentityCollectivesEveryDtype) {
  auto comm = make_single_communicator();
  EXPECT_EQ(comm->rank(), 0);
  EXPECT_EQ(comm->world_size(), 1);
  EXPECT_EQ(comm->local_rank(), 0);
  EXPECT_EQ(comm->local_size(), 1);
  EXPECT_STREQ(comm->backend(), "single");
  for (DType dt : {DType::F32, DType::BF16, DType::F64}) {
    // Odd size and a size-1 tensor: the sum over one rank is the tensor itself, bit for bit.
    for (int64_t n : {1, 13}) {
      Tensor t = test::rand({n}, 11 + n, dt);
      Tensor before = t.clone();
      comm->all_reduce_sum(t);
      EXPECT_EQ(test::max_abs_diff(t, before), 0.0);
      comm->all_reduce_sum_async(t)->wait();
      EXPECT_EQ(test::max_abs_diff(t, before), 0.0);
      comm->broadcast(t, 0);
      EXPECT_EQ(test::max_abs_diff(t, before), 0.0);
    }
  }
  comm->barrier();
  auto all = comm->all_gather_bytes({1, 2, 3});
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0], (std::vector<uint8_t>{1, 2, 3}));
  EXPECT_EQ(comm->all_gather_string("abc"), std::vector<std::string>{"abc"});
  EXPECT_NO_THROW(comm->check_same_on_all_ranks("config hash", "x"));
}

TEST(SingleCommunicator, RejectsWrongTensors) {
  auto comm = make_single_communicator();
  Tensor i = Tensor::zeros({3}, DType::I32);
  EXPECT_THROW(comm->all_reduce_sum(i), Error);  // not a float
  EXPECT_NO_THROW(comm->broadcast(i, 0));        // broadcast takes any dtype
  Tensor nc = test::rand({3, 4}, 1, DType::F32).transpose(0, 1);
  EXPECT_THROW(comm->all_reduce_sum(nc), Error);  // not contiguous
  Tensor t = test::rand({3}, 1, DType::F32);
  EXPECT_THROW(comm->broadcast(t, 1), Error);  // no rank 1
  Tensor undefined;
  EXPECT_THROW(comm->all_reduce_sum(undefined), Error);
  auto gpu_comm = make_single_communicator(Device::cuda(0));
  EXPECT_EQ(gpu_comm->device(), Device::cuda(0));
  EXPECT_THROW(gpu_comm->all_reduce_sum(t), Error);  // a CPU tensor to a GPU communicator
}

TEST(LaunchEnv, OpenMpiVariables) {
  ScopedEnv env;
  clear_launch_env(env);
  env.set("OMPI_COMM_WORLD_SIZE", "4");
  env.set("OMPI_COMM_WORLD_RANK", "3");
  env.set("OMPI_COMM_WORLD_LOCAL_RANK", "1");
  env.set("OMPI_COMM_WORLD_LOCAL_SIZE", "2");
  LaunchEnv e = detect_launch_env();
  EXPECT_EQ(e.world_size, 4);
  EXPECT_EQ(e.rank, 3);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.local_size, 2);
  EXPECT_TRUE(e.distributed());
}

TEST(LaunchEnv, PmiVariablesAndNone) {
  ScopedEnv env;
  clear_launch_env(env);
  LaunchEnv none = detect_launch_env();
  EXPECT_EQ(none.world_size, 1);
  EXPECT_EQ(none.rank, 0);
  EXPECT_FALSE(none.distributed());
  env.set("PMI_SIZE", "2");
  env.set("PMI_RANK", "1");
  env.set("MPI_LOCALRANKID", "0");
  LaunchEnv e = detect_launch_env();
  EXPECT_EQ(e.world_size, 2);
  EXPECT_EQ(e.rank, 1);
  EXPECT_EQ(e.local_rank, 0);
  EXPECT_EQ(e.local_size, -1);  // unknown until MPI is up
  env.set("PMI_RANK", "2");     // rank outside the world
  EXPECT_THROW(detect_launch_env(), InputError);
}

TEST(MakeCommunicator, SingleProcessWithoutLauncher) {
  ScopedEnv env;
  clear_launch_env(env);
  auto comm = make_communicator(Device::cpu());
  EXPECT_STREQ(comm->backend(), "single");
  EXPECT_EQ(comm->world_size(), 1);
}

TEST(CommOptions, TimeoutFromEnvironment) {
  ScopedEnv env;
  env.set("LIZARD_DIST_TIMEOUT_S", nullptr);
  EXPECT_EQ(CommOptions().timeout_s, 600.0);
  env.set("LIZARD_DIST_TIMEOUT_S", "12.5");
  EXPECT_EQ(CommOptions().timeout_s, 12.5);
  // A typo must not silently turn the watchdog off.
  env.set("LIZARD_DIST_TIMEOUT_S", "10s");
  EXPECT_THROW(CommOptions(), InputError);
  env.set("LIZARD_DIST_TIMEOUT_S", "-1");
  EXPECT_THROW(CommOptions(), InputError);
}

// A communicator that only claims a rank (two ranks on one node), for the logging rule.
using FakeRank = test::FakePair;
constexpr int kOneNode = 2;

TEST(Logging, OnlyRankZeroUnlessAsked) {
  ScopedEnv env;
  env.set("LIZARD_LOG_ALL_RANKS", nullptr);
  FakeRank r0(0, kOneNode), r1(1, kOneNode);
  std::ostringstream a, b;
  EXPECT_TRUE(log_rank0(r0, "loss 1.5", a));
  EXPECT_FALSE(log_rank0(r1, "loss 1.5", b));
  EXPECT_EQ(a.str(), "loss 1.5\n");
  EXPECT_EQ(b.str(), "");
  std::ostringstream c;
  log_every_rank(r1, "gpu 1", c);
  EXPECT_EQ(c.str(), "[rank 1/2] gpu 1\n");
  env.set("LIZARD_LOG_ALL_RANKS", "1");
  std::ostringstream d;
  EXPECT_TRUE(log_rank0(r1, "loss 1.5", d));
  EXPECT_EQ(d.str(), "[rank 1/2] loss 1.5\n");
}

TEST(CheckSame, NamesTheDifferingRank) {
  // FakeRank gathers its own value twice: equal. A gather of different values must throw.
  FakeRank r0(0, kOneNode);
  EXPECT_NO_THROW(r0.check_same_on_all_ranks("world size", "2"));
  class Differ final : public test::FakePair {
   public:
    std::vector<std::vector<uint8_t>> all_gather_bytes(const std::vector<uint8_t>& m) override {
      return {m, {'o', 't', 'h', 'e', 'r'}};
    }
  } differ;
  try {
    differ.check_same_on_all_ranks("config hash", "abc");
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("config hash differs between ranks: rank 0 has 'abc', "
                                         "rank 1 has 'other'"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace lizard::dist
