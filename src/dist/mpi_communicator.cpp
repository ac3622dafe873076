// The MPI communicator: CPU tensors over a duplicate of MPI_COMM_WORLD, every blocking call
// guarded by a Watchdog that aborts the job when it outlives the timeout.
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <thread>

#include "lizard/core/error.h"
#include "lizard/dist/communicator.h"
#include "lizard/dist/watchdog.h"

#ifdef LIZARD_WITH_MPI
// The C API only: the deprecated C++ bindings would need libmpi_cxx at link time.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace lizard::dist {

#ifdef LIZARD_WITH_MPI

namespace {

// Throws naming the call and MPI's own description of the failure.
void check_mpi(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  throw Error(str_cat("MPI ", what, " failed: ", std::string(msg, static_cast<size_t>(len))));
}

// LIZARD_TEST_FAULT=<rank>:<n>:<die|hang> (see communicator.h): which rank fails, when, how.
struct Fault {
  int rank = -1;
  int64_t at = 0;
  bool hang = false;
};

Fault parse_fault() {
  Fault f;
  const char* v = std::getenv("LIZARD_TEST_FAULT");
  if (!v || !*v) return f;
  int rank = -1;
  long long at = 0;
  char kind[8] = {0};
  const bool ok = std::sscanf(v, "%d:%lld:%7s", &rank, &at, kind) == 3 && rank >= 0 && at >= 1 &&
                  (std::strcmp(kind, "die") == 0 || std::strcmp(kind, "hang") == 0);
  LZ_INPUT_CHECK(ok, "LIZARD_TEST_FAULT='", v, "': expected <rank>:<n>:<die|hang>, e.g. 1:5:die");
  f.rank = rank;
  f.at = at;
  f.hang = std::strcmp(kind, "hang") == 0;
  return f;
}

class DoneWork final : public Work {
 public:
  void wait() override {}
};

// A nonblocking all-reduce in flight: wait() completes it under the watchdog.
class MpiWork final : public Work {
 public:
  MpiWork(MPI_Request req, Watchdog* watchdog, std::string op)
      : req_(req), watchdog_(watchdog), op_(std::move(op)) {}
  ~MpiWork() override {
    // A request must be completed before its buffer goes away, except while an exception
    // unwinds: the job is then being aborted (MPI_Abort) and a peer may never post its part.
    if (req_ != MPI_REQUEST_NULL && std::uncaught_exceptions() == 0) wait();
  }
  void wait() override {
    if (req_ == MPI_REQUEST_NULL) return;
    auto guard = watchdog_->arm(op_);
    check_mpi(MPI_Wait(&req_, MPI_STATUS_IGNORE), "MPI_Wait");
  }

 private:
  MPI_Request req_;
  Watchdog* watchdog_;
  std::string op_;
};

// MPI counts are int: large tensors go in pieces of at most this many elements.
constexpr int64_t kMaxCount = int64_t{1} << 30;

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(const CommOptions& opts) {
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    LZ_CHECK(!finalized, "MPI communicator: MPI was already finalized in this process "
             "(create one communicator per process and keep it for the whole run)");
    if (!initialized) {
      // MULTIPLE because the watchdog thread may call MPI_Abort while the main thread is
      // blocked in a collective.
      int provided = 0;
      check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided),
                "MPI_Init_thread");
      owns_mpi_ = true;
    }
    check_mpi(MPI_Comm_dup(MPI_COMM_WORLD, &comm_), "MPI_Comm_dup");
    // Errors come back as codes, so they become exceptions with a message.
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    MPI_Comm node;
    check_mpi(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node),
              "MPI_Comm_split_type");
    MPI_Comm_rank(node, &local_rank_);
    MPI_Comm_size(node, &local_size_);
    MPI_Comm_free(&node);
    fault_ = parse_fault();
    const int rank = rank_;
    watchdog_ = std::make_unique<Watchdog>(
        opts.timeout_s, [rank, timeout = opts.timeout_s](const std::string& op, double elapsed) {
          std::fprintf(stderr,
                       "lizard dist: rank %d: MPI %s did not complete within %.1f s "
                       "(timeout %.1f s): a rank died or hung; aborting the job\n",
                       rank, op.c_str(), elapsed, timeout);
          std::fflush(stderr);
          MPI_Abort(MPI_COMM_WORLD, 3);
        });
  }

  ~MpiCommunicator() override {
    watchdog_.reset();
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    MPI_Comm_free(&comm_);
    if (owns_mpi_) MPI_Finalize();
  }

  int rank() const override { return rank_; }
  int world_size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  int local_size() const override { return local_size_; }
  Device device() const override { return Device::cpu(); }
  const char* backend() const override { return "mpi"; }

  void all_reduce_sum(Tensor& t) override {
    inject_fault();
    reduce(t);
  }

  // MPI_Iallreduce for f32/f64 (the gradient buckets launched from backward); bf16 (summed
  // through an f32 copy) and tensors beyond one MPI count reduce synchronously.
  std::unique_ptr<Work> all_reduce_sum_async(Tensor& t) override {
    const DType d = t.dtype();
    if (d == DType::BF16 || t.numel() > kMaxCount) {
      all_reduce_sum(t);
      return std::make_unique<DoneWork>();
    }
    inject_fault();
    check(t, "all_reduce_sum_async");
    LZ_CHECK(d == DType::F32 || d == DType::F64, "all_reduce_sum_async: ", t.desc(),
             " must be f32, bf16 or f64");
    MPI_Request req = MPI_REQUEST_NULL;
    check_mpi(MPI_Iallreduce(MPI_IN_PLACE, t.raw(), static_cast<int>(t.numel()),
                             d == DType::F32 ? MPI_FLOAT : MPI_DOUBLE, MPI_SUM, comm_, &req),
              "MPI_Iallreduce");
    return std::make_unique<MpiWork>(req, watchdog_.get(),
                                     str_cat("all_reduce_sum (nonblocking) of ", t.desc()));
  }

  void abort_job(int code) override {
    std::fflush(stdout);
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
  }

 private:
  void inject_fault() {
    if (fault_.rank != rank_ || ++reduces_ != fault_.at) return;
    std::fprintf(stderr, "lizard dist: rank %d: LIZARD_TEST_FAULT: %s at all_reduce_sum #%lld\n",
                 rank_, fault_.hang ? "hanging" : "dying", static_cast<long long>(reduces_));
    std::fflush(stderr);
    if (!fault_.hang) std::_Exit(17);
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
  }

  void reduce(Tensor& t) {
    check(t, "all_reduce_sum");
    const DType d = t.dtype();
    LZ_CHECK(d == DType::F32 || d == DType::BF16 || d == DType::F64, "all_reduce_sum: ",
             t.desc(), " must be f32, bf16 or f64");
    if (d == DType::BF16) {
      // MPI has no bf16 sum: reduce an fp32 copy (also more accurate) and round once.
      Tensor f = t.to(DType::F32);
      reduce(f);
      t.copy_(f);
      return;
    }
    const MPI_Datatype type = d == DType::F32 ? MPI_FLOAT : MPI_DOUBLE;
    const size_t elem = dtype_size(d);
    auto guard = watchdog_->arm(str_cat("all_reduce_sum of ", t.desc()));
    char* p = static_cast<char*>(t.raw());
    for (int64_t off = 0; off < t.numel(); off += kMaxCount) {
      const int n = static_cast<int>(std::min(kMaxCount, t.numel() - off));
      check_mpi(MPI_Allreduce(MPI_IN_PLACE, p + off * elem, n, type, MPI_SUM, comm_),
                "MPI_Allreduce");
    }
  }


 public:
  void broadcast(Tensor& t, int root) override {
    check(t, "broadcast");
    LZ_CHECK(root >= 0 && root < size_, "broadcast: root ", root, " is not a rank of ", size_);
    auto guard = watchdog_->arm(str_cat("broadcast of ", t.desc(), " from rank ", root));
    char* p = static_cast<char*>(t.raw());
    const int64_t bytes = static_cast<int64_t>(t.nbytes());
    for (int64_t off = 0; off < bytes; off += kMaxCount) {
      const int n = static_cast<int>(std::min(kMaxCount, bytes - off));
      check_mpi(MPI_Bcast(p + off, n, MPI_BYTE, root, comm_), "MPI_Bcast");
    }
  }

  // Blocking (complete on return): the gathers of a step are few and come after backward.
  std::unique_ptr<Work> all_gather_async(const Tensor& in, Tensor& out) override {
    const bool in_place = check_all_gather(in, out);
    check(out, "all_gather");
    if (in.numel() == 0) return std::make_unique<DoneWork>();
    LZ_CHECK(in.numel() < INT_MAX, "all_gather: ", in.desc(), " is too large for one MPI call");
    // One MPI element per tensor element: any dtype, and counts up to 2^31 elements.
    MPI_Datatype elem = MPI_DATATYPE_NULL;
    check_mpi(MPI_Type_contiguous(static_cast<int>(dtype_size(in.dtype())), MPI_BYTE, &elem),
              "MPI_Type_contiguous");
    MPI_Type_commit(&elem);
    struct FreeType {
      MPI_Datatype* t;
      ~FreeType() { MPI_Type_free(t); }
    } free_elem{&elem};
    const int n = static_cast<int>(in.numel());
    auto guard = watchdog_->arm(str_cat("all_gather of ", in.desc()));
    check_mpi(MPI_Allgather(in_place ? MPI_IN_PLACE : in.raw(), n, elem, out.raw(), n, elem, comm_),
              "MPI_Allgather");
    return std::make_unique<DoneWork>();
  }

  void barrier() override {
    auto guard = watchdog_->arm("barrier");
    check_mpi(MPI_Barrier(comm_), "MPI_Barrier");
  }

  std::vector<std::vector<uint8_t>> all_gather_bytes(const std::vector<uint8_t>& mine) override {
    LZ_CHECK(mine.size() < static_cast<size_t>(INT_MAX), "all_gather_bytes: ", mine.size(),
             " bytes is not a small buffer");
    auto guard = watchdog_->arm(str_cat("all_gather_bytes of ", mine.size(), " bytes"));
    const int n = static_cast<int>(mine.size());
    std::vector<int> sizes(static_cast<size_t>(size_));
    check_mpi(MPI_Allgather(&n, 1, MPI_INT, sizes.data(), 1, MPI_INT, comm_), "MPI_Allgather");
    std::vector<int> displs(sizes.size());
    int64_t total = 0;
    for (size_t r = 0; r < sizes.size(); ++r) {
      LZ_CHECK(total + sizes[r] < INT_MAX, "all_gather_bytes: gathered buffers too large");
      displs[r] = static_cast<int>(total);
      total += sizes[r];
    }
    std::vector<uint8_t> flat(static_cast<size_t>(std::max<int64_t>(total, 1)));
    check_mpi(MPI_Allgatherv(mine.data(), n, MPI_BYTE, flat.data(), sizes.data(), displs.data(),
                             MPI_BYTE, comm_),
              "MPI_Allgatherv");
    std::vector<std::vector<uint8_t>> out(sizes.size());
    for (size_t r = 0; r < sizes.size(); ++r)
      out[r].assign(flat.begin() + displs[r], flat.begin() + displs[r] + sizes[r]);
    return out;
  }

 private:
  void check(const Tensor& t, const char* op) const {
    LZ_CHECK(t.defined(), op, ": undefined tensor");
    LZ_CHECK(t.device().is_cpu(), op, ": ", t.desc(),
             " is on a GPU; the MPI communicator takes CPU tensors (use NCCL for GPUs)");
    LZ_CHECK(t.is_contiguous(), op, ": ", t.desc(), " must be contiguous");
  }

  Fault fault_;
  int64_t reduces_ = 0;  // all_reduce_sum calls so far (fault injection)
  bool owns_mpi_ = false;
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
  std::unique_ptr<Watchdog> watchdog_;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator(const CommOptions& opts) {
  return std::make_unique<MpiCommunicator>(opts);
}

#else  // !LIZARD_WITH_MPI

std::unique_ptr<Communicator> make_mpi_communicator(const CommOptions&) {
  throw Error("this build of lizard has no MPI support (reconfigure with MPI found)");
}

#endif

}  // namespace lizard::dist
