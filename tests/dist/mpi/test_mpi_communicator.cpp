// The MPI communicator and the bucketer across real processes. Run under
//   mpirun -np 2 --oversubscribe [--allow-run-as-root] build/bin/test_dist_mpi
// (ctest does this: tests/CMakeLists.txt). Every rank runs every test, so every test issues
// the same collectives in the same order; checks use EXPECT (not ASSERT) around collectives so
// a failed check on one rank cannot leave the others waiting in a collective it skipped.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <thread>

#include "lizard/autograd/functions.h"
#include "lizard/dist/communicator.h"
#include "lizard/dist/data_parallel.h"
#include "lizard/dist/gradient_bucketer.h"
#include "dist/overlapped_dp_check.h"
#include "dist/sparse_row_grad_check.h"
#include "test_util.h"

namespace lizard::dist {
namespace {

// The communicator of this process, created in main() (one per process: MPI is initialised
// once). Read-only after creation.
Communicator* g_comm = nullptr;

Communicator& comm() { return *g_comm; }

// Rank r's input of a test: the same random stream every rank can regenerate, so each rank
// computes the expected sum itself in f64.
Tensor input_of(int r, int64_t n, uint64_t salt, DType dt) {
  return test::rand({n}, salt * 1000 + static_cast<uint64_t>(r), dt);
}

TEST(MpiCommunicator, Topology) {
  EXPECT_STREQ(comm().backend(), "mpi");
  EXPECT_GE(comm().world_size(), 2) << "run under mpirun -np 2 (or more)";
  if (const char* want = std::getenv("LIZARD_TEST_WORLD")) {
    EXPECT_EQ(comm().world_size(), std::atoi(want));
  }
  LaunchEnv env = detect_launch_env();
  EXPECT_EQ(env.world_size, comm().world_size());
  EXPECT_EQ(env.rank, comm().rank());
  // One node: the shared-memory split must agree with what mpirun exported.
  if (env.local_rank >= 0) {
    EXPECT_EQ(comm().local_rank(), env.local_rank);
  }
  if (env.local_size >= 0) {
    EXPECT_EQ(comm().local_size(), env.local_size);
  }
  EXPECT_EQ(comm().device(), Device::cpu());
  auto ranks = comm().all_gather_string(std::to_string(comm().rank()));
  ASSERT_EQ(static_cast<int>(ranks.size()), comm().world_size());
  for (int r = 0; r < comm().world_size(); ++r) EXPECT_EQ(ranks[r], std::to_string(r));
}

TEST(MpiCommunicator, AllReduceSumMatchesF64SumEveryDtype) {
  const int n_ranks = comm().world_size();
  for (DType dt : {DType::F32, DType::F64, DType::BF16}) {
    for (int64_t n : {1, 7, 4099}) {
      Tensor t = input_of(comm().rank(), n, 1 + n, dt);
      Tensor expect = Tensor::zeros({n}, DType::F64);
      for (int r = 0; r < n_ranks; ++r) {
        Tensor x = input_of(r, n, 1 + n, dt).to(DType::F64);  // what rank r holds, exactly
        expect = ops::add(expect, x);
      }
      comm().all_reduce_sum(t);
      EXPECT_EQ(t.dtype(), dt);
      // f32: (N-1) roundings of a sum of N values -> ~N * 2^-24; f64 likewise at 2^-53; bf16
      // is summed in f32 and rounded once to 8 bits -> 2^-8 = 3.9e-3.
      const double tol = dt == DType::F64 ? 1e-14 : dt == DType::F32 ? 1e-6 : 4e-3;
      EXPECT_LT(test::rel_err(t.to(DType::F64), expect), tol)
          << dtype_name(dt) << " n=" << n;
    }
  }
  // Small integers are exact in every dtype: 1 + 2 + ... + N, no tolerance.
  for (DType dt : {DType::F32, DType::F64, DType::BF16}) {
    Tensor t = Tensor::full({5}, comm().rank() + 1, dt);
    comm().all_reduce_sum_async(t)->wait();
    for (double v : t.to_vector()) EXPECT_EQ(v, n_ranks * (n_ranks + 1) / 2.0) << dtype_name(dt);
  }
}

TEST(MpiCommunicator, BroadcastFromEveryRoot) {
  for (int root = 0; root < comm().world_size(); ++root) {
    Tensor f = input_of(comm().rank(), 9, 50, DType::F32);
    Tensor i = Tensor::full({2, 3}, 100 * comm().rank() + 7, DType::I64);
    comm().broadcast(f, root);
    comm().broadcast(i, root);
    EXPECT_EQ(test::max_abs_diff(f, input_of(root, 9, 50, DType::F32)), 0.0) << "root " << root;
    for (double v : i.to_vector()) EXPECT_EQ(v, 100 * root + 7) << "root " << root;
  }
}

TEST(MpiCommunicator, BarrierWaitsForTheSlowestRank) {
  comm().barrier();  // line everyone up first
  const auto t0 = std::chrono::steady_clock::now();
  if (comm().rank() != 0) std::this_thread::sleep_for(std::chrono::milliseconds(300));
  comm().barrier();
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // Rank 0 did not sleep: it can only have spent this long inside the barrier. 0.25 s leaves
  // room for timer slack below the 0.3 s sleep.
  if (comm().rank() == 0) {
    EXPECT_GE(waited, 0.25);
  }
}

TEST(MpiCommunicator, AllGatherBytesOfDifferentSizes) {
  // Rank r sends r bytes of value r (rank 0 sends nothing): sizes and contents must survive.
  const int r = comm().rank();
  std::vector<uint8_t> mine(static_cast<size_t>(r), static_cast<uint8_t>(r));
  auto all = comm().all_gather_bytes(mine);
  ASSERT_EQ(static_cast<int>(all.size()), comm().world_size());
  for (int q = 0; q < comm().world_size(); ++q)
    EXPECT_EQ(all[q], std::vector<uint8_t>(static_cast<size_t>(q), static_cast<uint8_t>(q)));
  EXPECT_NO_THROW(comm().check_same_on_all_ranks("world size",
                                                 std::to_string(comm().world_size())));
  // Every rank sees every value, so every rank throws (no rank is left in a collective).
  EXPECT_THROW(comm().check_same_on_all_ranks("config hash", "rank" + std::to_string(r)),
               InputError);
}

// Parameters of odd shapes and mixed dtypes; a 256-byte cap gives several buckets.
std::vector<autograd::Var> make_params() {
  std::vector<std::pair<Shape, DType>> spec = {{{3, 5}, DType::F32}, {{1}, DType::F32},
                                               {{33}, DType::F32},   {{4, 7}, DType::F64},
                                               {{2, 3}, DType::BF16}, {{70}, DType::F32},
                                               {{9}, DType::F32}};
  std::vector<autograd::Var> ps;
  for (size_t i = 0; i < spec.size(); ++i) {
    autograd::Var v(Tensor::zeros(spec[i].first, spec[i].second), true);
    v.set_name("p" + std::to_string(i));
    ps.push_back(v);
  }
  return ps;
}

TEST(MpiGradientBucketer, AllReduceEqualsTheMeanComputedOnOneRank) {
  auto ps = make_params();
  GradientBucketer b(comm(), ps, 256);
  EXPECT_GE(b.num_buckets(), 3u);
  const int n_ranks = comm().world_size();
  auto grad_of = [&](size_t i, int r) {
    return test::rand(ps[i].shape(), 300 + 10 * i + r, ps[i].dtype());
  };
  for (size_t i = 0; i < ps.size(); ++i) ps[i].set_grad(grad_of(i, comm().rank()));
  // Incrementally, in forward order (the worst case for reverse-order buckets).
  b.start(n_ranks);
  for (size_t i = 0; i < b.num_params(); ++i) b.mark_ready(i);
  b.wait();
  for (size_t i = 0; i < ps.size(); ++i) {
    Tensor expect = Tensor::zeros(ps[i].shape(), DType::F64);
    for (int r = 0; r < n_ranks; ++r) expect = ops::add(expect, grad_of(i, r).to(DType::F64));
    expect = ops::affine(expect, 1.0 / n_ranks);
    const DType dt = ps[i].dtype();
    // As in AllReduceSum, plus one rounding of the division in the buffer's dtype.
    const double tol = dt == DType::F64 ? 1e-14 : dt == DType::F32 ? 1e-6 : 8e-3;
    EXPECT_LT(test::rel_err(ps[i].grad().to(DType::F64), expect), tol) << ps[i].name();
  }
}

// y = x W + c; loss = sum over tokens of sum_j (y - target)^2. Returns the parameters' grads
// after backward of loss / divisor over the rows [start::step] of x and target.
TEST(MpiGradientBucketer, DataParallelGradientsEqualOneProcessOnTheWholeBatch) {
  const int n_ranks = comm().world_size();
  const int64_t tokens = 7, d_in = 5, d_out = 3;  // 7 tokens: ranks get uneven shares
  Tensor x = test::rand({tokens, d_in}, 1, DType::F32);
  Tensor target = test::rand({tokens, d_out}, 2, DType::F32);
  Tensor w0 = test::rand({d_in, d_out}, 3, DType::F32);
  Tensor c0 = test::rand({d_out}, 4, DType::F32);
  auto run = [&](int64_t start, int64_t step, double divisor, autograd::Var& w,
                 autograd::Var& c) {
    Tensor xs = x.slice(0, start, tokens, step).contiguous();
    Tensor ts = target.slice(0, start, tokens, step).contiguous();
    autograd::Var y = autograd::add(autograd::matmul(autograd::Var(xs), w), c);
    autograd::Var loss = autograd::sum(autograd::square(autograd::sub(y, autograd::Var(ts))));
    autograd::scale(loss, 1.0 / divisor).backward();
  };
  // One process on the whole batch: the mean over all 7 tokens.
  autograd::Var w_ref(w0.clone(), true), c_ref(c0.clone(), true);
  run(0, 1, tokens, w_ref, c_ref);
  // This rank's rows r, r + N, ...: the per-rank SUM, normalised by the global token count.
  autograd::Var w(w0.clone(), true), c(c0.clone(), true);
  w.set_name("w");
  c.set_name("c");
  run(comm().rank(), n_ranks, 1.0, w, c);
  GradientBucketer b(comm(), {w, c});
  b.all_reduce(static_cast<double>(tokens));
  // f32 sums in a different order: a few ulps of the gradient's norm.
  EXPECT_LT(test::rel_err(w.grad(), w_ref.grad()), 1e-6);
  EXPECT_LT(test::rel_err(c.grad(), c_ref.grad()), 1e-6);
  // And the test can fail: without the all-reduce this rank holds only its own share.
  autograd::Var w_local(w0.clone(), true), c_local(c0.clone(), true);
  run(comm().rank(), n_ranks, tokens, w_local, c_local);
  EXPECT_GT(test::rel_err(w_local.grad(), w_ref.grad()), 1e-2);
}

// Run only by the ctest entry dist_mpi_watchdog (LIZARD_TEST_HANG=1, LIZARD_DIST_TIMEOUT_S=2):
// rank 1 "hangs", so the barrier on the other ranks must end the job through the watchdog
// with a message naming the operation; ctest matches that message.
// The trainer's path over real MPI: buckets launched (MPI_Iallreduce) from autograd's
// leaf-ready hook during backward, completed in finish; the result is the sum of every rank's
// gradient, each recomputed here. Then ZeRO-1's sync gives every rank its owners' values.
TEST(MpiDataParallel, OverlappedBackwardSumsGradientsAndZero1Syncs) {
  // 128-byte buckets (32 floats): one bucket per tensor or so.
  test::check_overlapped_data_parallel(comm(),
                                       {/*rows=*/6, /*a=*/12, /*b=*/9, /*c=*/5}, /*bucket_bytes=*/128);
}

TEST(MpiCommunicator, AllGatherInRankOrderOutOfAndInPlace) { test::check_all_gather(comm()); }

// The input-embedding gradient exchanged as rows (dist.sparse_embedding_grad): ranks with
// different, overlapping token sets, one row seen by rank 1 only, 2 accumulated micro-batches.
TEST(MpiSparseRowGrad, ExchangedGradientEqualsTheDenseAllReduce) {
  test::check_sparse_row_grad(comm(), DType::F32, /*V=*/41, /*D=*/7);
}

TEST(MpiSparseRowGrad, DataParallelSumsTheEmbeddingOutsideTheBuckets) {
  test::check_data_parallel_sparse_rows(comm(), /*V=*/41, /*D=*/5);
}

TEST(MpiWatchdog, HungRankAbortsTheJob) {
  if (!std::getenv("LIZARD_TEST_HANG")) GTEST_SKIP() << "set LIZARD_TEST_HANG=1 (ctest does)";
  if (comm().rank() == 1) std::this_thread::sleep_for(std::chrono::seconds(60));
  comm().barrier();
  ADD_FAILURE() << "the watchdog did not end the job";
}

// Prints only failures on ranks other than 0, prefixed with the rank, so output stays readable.
class FailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit FailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (r.failed())
      std::fprintf(stderr, "[rank %d] %s:%d: %s\n", rank_, r.file_name() ? r.file_name() : "?",
                   r.line_number(), r.summary());
  }

 private:
  int rank_;
};

}  // namespace
}  // namespace lizard::dist

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  auto comm = lizard::dist::make_mpi_communicator();
  lizard::dist::g_comm = comm.get();
  if (comm->rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new lizard::dist::FailurePrinter(comm->rank()));
  }
  const int rc = RUN_ALL_TESTS();
  // The job fails if any rank failed, and every rank says so.
  lizard::Tensor failed = lizard::Tensor::full({1}, rc != 0 ? 1.0 : 0.0, lizard::DType::F64);
  comm->all_reduce_sum(failed);
  const int n_failed = static_cast<int>(failed.item());
  if (comm->rank() == 0 && n_failed > 0) std::fprintf(stderr, "%d rank(s) failed\n", n_failed);
  comm.reset();  // MPI_Finalize before exit
  return n_failed > 0 ? 1 : 0;
}
