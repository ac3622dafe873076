// The side stream of cuda/side_stream.cuh: a fork's side stream starts after the work queued
// on the compute stream before it, and the compute stream waits for the side stream's work at
// the join; disabled forks keep everything on the compute stream; LIZARD_STREAMS is checked;
// a failed CUDA status is an error naming the call.
#include <gtest/gtest.h>

#ifdef LIZARD_WITH_CUDA
#include <cuda_runtime.h>

#include <string>

#include "lizard/core/cuda_runtime.h"
#include "lizard/core/error.h"
#include "gpu_test_util.h"
#include "../../cuda/side_stream.cuh"

namespace lizard::test {
namespace {

TEST(SideStream, SwitchIsReadFromTheEnvironment) {
  {
    ScopedEnv e("LIZARD_STREAMS", nullptr);
    EXPECT_TRUE(cuda::side_streams_enabled());
  }
  {
    ScopedEnv e("LIZARD_STREAMS", "1");
    EXPECT_FALSE(cuda::side_streams_enabled());
  }
  ScopedEnv e("LIZARD_STREAMS", "3");
  try {
    cuda::side_streams_enabled();
    FAIL() << "LIZARD_STREAMS=3 accepted";
  } catch (const InputError& err) {
    EXPECT_NE(std::string(err.what()).find("LIZARD_STREAMS"), std::string::npos) << err.what();
  }
}

// The status check the side stream's calls go through (cuda::check_status): success passes, a
// failure throws an Error naming the call and CUDA's description. Needs no GPU.
TEST(SideStream, CheckStatusNamesTheCallAndTheError) {
  EXPECT_NO_THROW(cuda::check_status(int(cudaSuccess), "side stream cudaEventRecord (fork)"));
  try {
    cuda::check_status(int(cudaErrorInvalidValue), "side stream cudaEventRecord (fork)");
    FAIL() << "a failed status was accepted";
  } catch (const Error& err) {
    const std::string m = err.what();
    EXPECT_NE(m.find("side stream cudaEventRecord (fork)"), std::string::npos) << m;
    EXPECT_NE(m.find(cudaGetErrorString(cudaErrorInvalidValue)), std::string::npos) << m;
  }
}

// 64 MiB copies behind a queue of fills of the same buffer: if the side stream did not wait
// for the fork point it would copy an older fill (the previous round's value), and if the
// compute stream did not wait at the join, the read back (queued on the compute stream) or the
// next round's fills would overtake the copy.
TEST(SideStreamGpu, ForkWaitsForTheComputeStreamAndJoinWaitsForTheSide) {
  LZ_REQUIRE_GPU();
  const int64_t n = int64_t(16) << 20;
  Tensor a = Tensor::empty({n}, DType::F32, Device::cuda());
  Tensor b = Tensor::zeros({n}, DType::F32, Device::cuda());
  auto main = static_cast<cudaStream_t>(cuda::context(0).stream);
  for (int round = 1; round <= 4; ++round) {
    for (int k = 0; k < 8; ++k) a.fill_(round * 100 + k);  // the last fill wins: round*100 + 7
    {
      cuda::StreamFork fork(main, 0, true);
      ASSERT_NE(fork.side(), main);
      ASSERT_EQ(cudaMemcpyAsync(b.raw(), a.raw(), size_t(n) * 4, cudaMemcpyDeviceToDevice, fork.side()),
                cudaSuccess);
      fork.join();
    }
    a.fill_(-1.0);  // after the join: must not reach the copy
    const std::vector<double> got = b.to_vector();
    const double want = round * 100 + 7;
    EXPECT_EQ(got.front(), want) << "round " << round;
    EXPECT_EQ(got[n / 2], want) << "round " << round;
    EXPECT_EQ(got.back(), want) << "round " << round;
  }
}

TEST(SideStreamGpu, DisabledForkStaysOnTheComputeStream) {
  LZ_REQUIRE_GPU();
  auto main = static_cast<cudaStream_t>(cuda::context(0).stream);
  cuda::StreamFork off(main, 0, false);
  EXPECT_EQ(off.side(), main);
  off.fork();
  EXPECT_EQ(off.side(), main);
  off.join();
  // a deferred fork uses the compute stream until fork(), and forks do not nest
  cuda::StreamFork later(main, 0, true, /*start=*/false);
  EXPECT_EQ(later.side(), main);
  EXPECT_THROW(cuda::StreamFork(main, 0, true), Error);
  later.fork();
  EXPECT_NE(later.side(), main);
  later.join();
  cuda::StreamFork again(main, 0, true);  // the joined fork released the context's events
  EXPECT_NE(again.side(), main);
}

}  // namespace
}  // namespace lizard::test
#endif  // LIZARD_WITH_CUDA
