// The NCCL communicator and the bucketer on 2+ GPUs. Run on the GPU machine:
//   NCCL_NVLS_ENABLE=0 mpirun -np 2 --oversubscribe [--allow-run-as-root] build/bin/test_dist_nccl
// Skips (with a message) without mpirun or with fewer visible GPUs than ranks on the node.
// Every rank runs every test; checks around collectives use EXPECT so no rank skips one.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <set>

#include "lizard/core/cuda_runtime.h"
#include "lizard/dist/communicator.h"
#include "lizard/dist/data_parallel.h"
#include "lizard/dist/gradient_bucketer.h"
#include "dist/overlapped_dp_check.h"
#include "dist/sparse_row_grad_check.h"
#include "test_util.h"

namespace lizard::dist {
namespace {

Communicator* g_comm = nullptr;       // created in main() when the machine can run these
const char* g_skip_reason = nullptr;  // else why not

#define LZ_REQUIRE_NCCL_WORLD()                              \
  do {                                                       \
    if (!g_comm) GTEST_SKIP() << g_skip_reason;              \
  } while (0)

Communicator& comm() { return *g_comm; }

Tensor input_of(int r, int64_t n, uint64_t salt, DType dt) {
  return test::rand({n}, salt * 1000 + static_cast<uint64_t>(r), dt);
}

TEST(NcclCommunicator, TopologyAndNvlsOff) {
  LZ_REQUIRE_NCCL_WORLD();
  EXPECT_STREQ(comm().backend(), "nccl");
  EXPECT_EQ(comm().device(), Device::cuda(comm().local_rank() % cuda_device_count()));
  const char* nvls = std::getenv("NCCL_NVLS_ENABLE");
  ASSERT_NE(nvls, nullptr);
  EXPECT_STREQ(nvls, "0");
  // One GPU per rank: no (host, physical GPU) pair may repeat across ranks.
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  char bus[64] = {0};
  cudaDeviceGetPCIBusId(bus, sizeof(bus), comm().device().index);
  auto all = comm().all_gather_string(std::string(host) + "/" + bus);
  ASSERT_EQ(static_cast<int>(all.size()), comm().world_size());
  std::set<std::string> distinct(all.begin(), all.end());
  EXPECT_EQ(distinct.size(), all.size()) << "two ranks share a GPU";
}

TEST(NcclCommunicator, AllReduceSumMatchesF64SumEveryDtype) {
  LZ_REQUIRE_NCCL_WORLD();
  const Device dev = comm().device();
  for (DType dt : {DType::F32, DType::F64, DType::BF16}) {
    for (int64_t n : {int64_t{1}, int64_t{7}, (int64_t{1} << 20) + 3}) {
      Tensor t = input_of(comm().rank(), n, 1 + n, dt).to(dev);
      Tensor expect = Tensor::zeros({n}, DType::F64);
      for (int r = 0; r < comm().world_size(); ++r)
        expect = ops::add(expect, input_of(r, n, 1 + n, dt).to(DType::F64));
      comm().all_reduce_sum(t);
      // Rounding of N-1 adds in the dtype: f32 ~N 2^-24, f64 ~N 2^-53, bf16 one 2^-8 per add.
      const double tol = dt == DType::F64 ? 1e-14 : dt == DType::F32 ? 1e-6 : 8e-3;
      EXPECT_LT(test::rel_err(t.to(Device::cpu()).to(DType::F64), expect), tol)
          << dtype_name(dt) << " n=" << n;
    }
  }
}

TEST(NcclCommunicator, AsyncReduceIsOrderedBeforeLaterComputeWork) {
  LZ_REQUIRE_NCCL_WORLD();
  const Device dev = comm().device();
  const int64_t n = int64_t{1} << 22;  // 16 MiB: long enough to still run when wait() returns
  Tensor t = Tensor::full({n}, comm().rank() + 1, DType::F32, dev);
  auto work = comm().all_reduce_sum_async(t);
  work->wait();  // compute stream now waits for the communication stream
  // A copy queued on the compute stream after wait() must see the reduced values.
  Tensor seen = t.clone().to(Device::cpu());
  const double want = comm().world_size() * (comm().world_size() + 1) / 2.0;
  auto v = seen.to_vector();
  EXPECT_EQ(v.front(), want);
  EXPECT_EQ(v.back(), want);
}

TEST(NcclCommunicator, BroadcastFromEveryRoot) {
  LZ_REQUIRE_NCCL_WORLD();
  for (int root = 0; root < comm().world_size(); ++root) {
    Tensor f = input_of(comm().rank(), 9, 50, DType::F32).to(comm().device());
    comm().broadcast(f, root);
    EXPECT_EQ(test::max_abs_diff(f.to(Device::cpu()), input_of(root, 9, 50, DType::F32)), 0.0)
        << "root " << root;
  }
}

TEST(NcclGradientBucketer, AllReduceEqualsTheMeanComputedOnOneRank) {
  LZ_REQUIRE_NCCL_WORLD();
  const Device dev = comm().device();
  std::vector<std::pair<Shape, DType>> spec = {{{3, 5}, DType::F32}, {{1}, DType::F32},
                                               {{33}, DType::BF16},  {{4, 7}, DType::F32},
                                               {{1000, 3}, DType::F32}};
  std::vector<autograd::Var> ps;
  for (size_t i = 0; i < spec.size(); ++i) {
    autograd::Var v(Tensor::zeros(spec[i].first, spec[i].second, dev), true);
    v.set_name("p" + std::to_string(i));
    ps.push_back(v);
  }
  GradientBucketer b(comm(), ps, 1024);
  auto grad_of = [&](size_t i, int r) {
    return test::rand(ps[i].shape(), 300 + 10 * i + r, ps[i].dtype());
  };
  for (size_t i = 0; i < ps.size(); ++i) ps[i].set_grad(grad_of(i, comm().rank()).to(dev));
  b.start(comm().world_size());
  for (size_t i = ps.size(); i-- > 0;) b.mark_ready(i);  // backward order: overlapped launches
  b.wait();
  for (size_t i = 0; i < ps.size(); ++i) {
    Tensor expect = Tensor::zeros(ps[i].shape(), DType::F64);
    for (int r = 0; r < comm().world_size(); ++r)
      expect = ops::add(expect, grad_of(i, r).to(DType::F64));
    expect = ops::affine(expect, 1.0 / comm().world_size());
    const double tol = ps[i].dtype() == DType::BF16 ? 1.2e-2 : 1e-6;
    EXPECT_LT(test::rel_err(ps[i].grad().to(Device::cpu()).to(DType::F64), expect), tol)
        << ps[i].name();
  }
}

// The trainer's path on GPUs: buckets launched from autograd's leaf-ready hook while backward
// runs (communication stream), then waited; the result equals the sum of every rank's
// gradient, each recomputed here with the same kernels. ZeRO-1's sync gives every rank its
// owners' values.
TEST(NcclDataParallel, OverlappedBackwardSumsGradientsAndZero1Syncs) {
  LZ_REQUIRE_NCCL_WORLD();
  // 4 KiB buckets: several of them.
  test::check_overlapped_data_parallel(comm(),
                                       {/*rows=*/8, /*a=*/64, /*b=*/48, /*c=*/16}, /*bucket_bytes=*/4096);
}

TEST(NcclCommunicator, AllGatherInRankOrderOutOfAndInPlace) {
  LZ_REQUIRE_NCCL_WORLD();
  test::check_all_gather(comm());
}

// The input-embedding gradient exchanged as rows (dist.sparse_embedding_grad) on GPUs: the
// gather (cuda::embedding_forward) and scatter-add (cuda/sparse_rows.cu) kernels, ncclAllGather
// in place on the communication stream. D = 300 > one block of 256 threads per row.
TEST(NcclSparseRowGrad, ExchangedGradientEqualsTheDenseAllReduce) {
  LZ_REQUIRE_NCCL_WORLD();
  for (DType dt : {DType::F32, DType::BF16})
    test::check_sparse_row_grad(comm(), dt, /*V=*/1031, /*D=*/300);
}

TEST(NcclSparseRowGrad, DataParallelSumsTheEmbeddingOutsideTheBuckets) {
  LZ_REQUIRE_NCCL_WORLD();
  test::check_data_parallel_sparse_rows(comm(), /*V=*/41, /*D=*/33);
}

}  // namespace
}  // namespace lizard::dist

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  using namespace lizard;
  const dist::LaunchEnv env = dist::detect_launch_env();
  std::unique_ptr<dist::Communicator> comm;
  // Decided from facts every rank of a node sees alike, so all ranks skip or none does.
  if (!env.distributed()) {
    dist::g_skip_reason = "not launched by mpirun with 2+ ranks: skipped";
  } else if (!cuda_available()) {
    dist::g_skip_reason = "no GPU visible: skipped (needs CUDA and 2 GPUs)";
  } else if (env.local_size > 0 && cuda_device_count() < env.local_size) {
    dist::g_skip_reason = "fewer GPUs than ranks on this node: skipped";
  } else {
    comm = dist::make_nccl_communicator();
    dist::g_comm = comm.get();
  }
  const int rc = RUN_ALL_TESTS();
  int n_failed = rc != 0 ? 1 : 0;
  if (comm) {
    Tensor failed = Tensor::full({1}, n_failed, DType::F32, comm->device());
    comm->all_reduce_sum(failed);
    n_failed = static_cast<int>(failed.to(Device::cpu()).item());
  }
  comm.reset();
  return n_failed > 0 ? 1 : 0;
}
