// The NCCL communicator: CUDA tensors, bootstrapped through MPI, one GPU per rank chosen by the
// node-local rank, collectives on a dedicated high-priority communication stream ordered
// against the compute stream with events, and a watchdog thread that aborts the job on an
// asynchronous NCCL error or a collective older than the timeout.
#include <memory>

#include "lizard/core/error.h"
#include "lizard/dist/communicator.h"

#if defined(LIZARD_WITH_NCCL) && defined(LIZARD_WITH_MPI)
#include <cuda_runtime_api.h>
// The C API only: the deprecated C++ bindings would need libmpi_cxx at link time.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#include <nccl.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include "lizard/core/cuda_runtime.h"
#endif

namespace lizard::dist {

#if defined(LIZARD_WITH_NCCL) && defined(LIZARD_WITH_MPI)

namespace {

using Clock = std::chrono::steady_clock;
using EventPtr = std::shared_ptr<CUevent_st>;

void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(str_cat("CUDA ", what, " failed: ", cudaGetErrorString(e)));
}

EventPtr make_event() {
  cudaEvent_t ev = nullptr;
  check_cuda(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming), "cudaEventCreate");
  // Destroying an event whose work is still queued is legal: CUDA frees it on completion.
  return EventPtr(ev, [](cudaEvent_t e) { cudaEventDestroy(e); });
}

// Ends the whole job: what a hung or failed collective must do (the peers are blocked in the
// same collective and cannot be told otherwise). Safe to call from the watchdog thread.
[[noreturn]] void fatal(ncclComm_t comm, int rank, const std::string& msg) {
  std::fprintf(stderr, "lizard dist: rank %d: %s; aborting the job\n", rank, msg.c_str());
  std::fflush(stderr);
  if (comm) ncclCommAbort(comm);  // frees this rank's kernels spinning on a dead peer
  MPI_Abort(MPI_COMM_WORLD, 3);
  std::abort();  // MPI_Abort does not return; this only tells the compiler
}

ncclDataType_t nccl_type(DType d) {
  switch (d) {
    case DType::F32: return ncclFloat32;
    case DType::BF16: return ncclBfloat16;
    case DType::F64: return ncclFloat64;
    default: throw Error(str_cat("NCCL all_reduce_sum: dtype ", dtype_name(d),
                                 " is not supported (f32, bf16, f64)"));
  }
}

// Orders the compute stream after a collective when waited.
class NcclWork final : public Work {
 public:
  NcclWork(EventPtr done, cudaStream_t compute) : done_(std::move(done)), compute_(compute) {}
  void wait() override {
    if (!done_) return;
    check_cuda(cudaStreamWaitEvent(compute_, done_.get(), 0), "cudaStreamWaitEvent");
    done_.reset();
  }

 private:
  EventPtr done_;
  cudaStream_t compute_;
};

class NcclCommunicator final : public Communicator {
 public:
  explicit NcclCommunicator(const CommOptions& opts) : timeout_s_(opts.timeout_s) {
    // NVLS multicast is off unless the user asked for it (see communicator.h). Set before any
    // NCCL call: NCCL reads its parameters once, at its first initialisation.
    setenv("NCCL_NVLS_ENABLE", "0", /*overwrite=*/0);
    mpi_ = make_mpi_communicator(opts);
    rank_ = mpi_->rank();
    size_ = mpi_->world_size();
    const int count = cuda_device_count();
    LZ_CHECK(count > 0, "NCCL communicator on rank ", rank_, ": no GPU visible");
    // With CUDA_VISIBLE_DEVICES set per rank each rank sees one GPU (count == 1); otherwise
    // two ranks of a node must not share a GPU (NCCL refuses duplicate GPUs).
    LZ_INPUT_CHECK(count == 1 || mpi_->local_size() <= count, "NCCL communicator: ",
                   mpi_->local_size(), " ranks on this node but only ", count,
                   " GPUs visible (run at most one rank per GPU)");
    gpu_ = mpi_->local_rank() % count;
    check_cuda(cudaSetDevice(gpu_), "cudaSetDevice");
    compute_ = static_cast<cudaStream_t>(cuda::context(gpu_).stream);
    int lo = 0, hi = 0;
    check_cuda(cudaDeviceGetStreamPriorityRange(&lo, &hi), "cudaDeviceGetStreamPriorityRange");
    // Highest priority: reduction kernels get SMs as soon as compute kernels retire a block.
    check_cuda(cudaStreamCreateWithPriority(&comm_stream_, cudaStreamNonBlocking, hi),
               "cudaStreamCreateWithPriority");

    ncclUniqueId id;
    if (rank_ == 0) check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
    Tensor id_bytes = Tensor::empty({static_cast<int64_t>(sizeof(id))}, DType::U8);
    std::memcpy(id_bytes.raw(), &id, sizeof(id));
    mpi_->broadcast(id_bytes, 0);
    std::memcpy(&id, id_bytes.raw(), sizeof(id));

    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;  // init and calls return ncclInProgress; we poll with a deadline
    ncclResult_t r = ncclCommInitRankConfig(&comm_, size_, id, rank_, &cfg);
    complete(r, "ncclCommInitRankConfig");
    if (timeout_s_ > 0) watchdog_ = std::thread([this] { watch(); });
  }

  ~NcclCommunicator() override {
    // Drain while the watchdog still runs, so a dead peer cannot hang the exit.
    if (comm_stream_) cudaStreamSynchronize(comm_stream_);
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (watchdog_.joinable()) watchdog_.join();
    if (comm_) {
      ncclResult_t r = ncclCommFinalize(comm_);
      const auto start = Clock::now();
      while (r == ncclInProgress && seconds_since(start) < 30) ncclCommGetAsyncError(comm_, &r);
      if (r == ncclSuccess) ncclCommDestroy(comm_);
      else ncclCommAbort(comm_);
    }
    if (comm_stream_) cudaStreamDestroy(comm_stream_);
  }

  int rank() const override { return rank_; }
  int world_size() const override { return size_; }
  int local_rank() const override { return mpi_->local_rank(); }
  int local_size() const override { return mpi_->local_size(); }
  Device device() const override { return Device::cuda(gpu_); }
  const char* backend() const override { return "nccl"; }

  void all_reduce_sum(Tensor& t) override { all_reduce_sum_async(t)->wait(); }

  std::unique_ptr<Work> all_reduce_sum_async(Tensor& t) override {
    check(t, "all_reduce_sum");
    const ncclDataType_t type = nccl_type(t.dtype());
    return enqueue(str_cat("all_reduce_sum of ", t.desc()), [&] {
      return ncclAllReduce(t.raw(), t.raw(), static_cast<size_t>(t.numel()), type, ncclSum,
                           comm_, comm_stream_);
    });
  }

  void broadcast(Tensor& t, int root) override {
    check(t, "broadcast");
    LZ_CHECK(root >= 0 && root < size_, "broadcast: root ", root, " is not a rank of ", size_);
    enqueue(str_cat("broadcast of ", t.desc(), " from rank ", root), [&] {
      return ncclBroadcast(t.raw(), t.raw(), t.nbytes(), ncclUint8, root, comm_, comm_stream_);
    })->wait();
  }

  std::unique_ptr<Work> all_gather_async(const Tensor& in, Tensor& out) override {
    check_all_gather(in, out);  // an in-place slot is what NCCL's in-place form expects too
    const size_t bytes = in.nbytes();
    return enqueue(str_cat("all_gather of ", in.desc()), [&] {
      return ncclAllGather(in.raw(), out.raw(), bytes, ncclUint8, comm_, comm_stream_);
    });
  }

  void abort_job(int code) override {
    std::fflush(stdout);
    std::fflush(stderr);
    if (comm_) ncclCommAbort(comm_);  // frees kernels waiting on peers
    MPI_Abort(MPI_COMM_WORLD, code);
  }

  // Host-side: every rank's queued GPU work is irrelevant to a barrier of processes.
  void barrier() override { mpi_->barrier(); }

  std::vector<std::vector<uint8_t>> all_gather_bytes(const std::vector<uint8_t>& mine) override {
    return mpi_->all_gather_bytes(mine);
  }

 private:
  struct Pending {
    EventPtr done;
    std::string op;
    Clock::time_point start;
  };

  static double seconds_since(Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
  }

  void check(const Tensor& t, const char* op) const {
    LZ_CHECK(t.defined(), op, ": undefined tensor");
    LZ_CHECK(t.device() == Device::cuda(gpu_), op, ": ", t.desc(),
             " is not on this rank's GPU cuda:", gpu_);
    LZ_CHECK(t.is_contiguous(), op, ": ", t.desc(), " must be contiguous");
  }

  void check_nccl(ncclResult_t r, const char* what) const {
    if (r == ncclSuccess) return;
    throw Error(str_cat("NCCL ", what, " failed on rank ", rank_, ": ", ncclGetErrorString(r),
                        comm_ ? str_cat(" (", ncclGetLastError(comm_), ")") : std::string()));
  }

  // A non-blocking communicator may answer ncclInProgress: poll until done, within the timeout.
  void complete(ncclResult_t r, const char* what) {
    const auto start = Clock::now();
    while (r == ncclInProgress) {
      if (timeout_s_ > 0 && seconds_since(start) > timeout_s_)
        fatal(comm_, rank_, str_cat("NCCL ", what, " did not complete within ", timeout_s_,
                                    " s: a rank died or hung"));
      std::this_thread::yield();
      ncclCommGetAsyncError(comm_, &r);
    }
    check_nccl(r, what);
  }

  // Orders `call` after the compute stream's queued work, records its completion, and hands
  // it to the watchdog.
  template <class Call>
  std::unique_ptr<Work> enqueue(std::string op, Call&& call) {
    EventPtr ready = make_event();
    check_cuda(cudaEventRecord(ready.get(), compute_), "cudaEventRecord");
    check_cuda(cudaStreamWaitEvent(comm_stream_, ready.get(), 0), "cudaStreamWaitEvent");
    complete(call(), op.c_str());
    EventPtr done = make_event();
    check_cuda(cudaEventRecord(done.get(), comm_stream_), "cudaEventRecord");
    if (timeout_s_ > 0) {
      std::lock_guard<std::mutex> lk(mu_);
      pending_.push_back({done, std::move(op), Clock::now()});
    }
    cv_.notify_all();
    return std::make_unique<NcclWork>(done, compute_);
  }

  // Polls the oldest queued collective and NCCL's asynchronous error state.
  void watch() {
    cudaSetDevice(gpu_);
    const auto period = std::chrono::milliseconds(
        static_cast<int64_t>(std::min(1000.0, std::max(10.0, timeout_s_ * 100.0))));
    std::unique_lock<std::mutex> lk(mu_);
    while (!stop_) {
      cv_.wait_for(lk, period);
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm_, &async);
      if (async != ncclSuccess && async != ncclInProgress)
        fatal(comm_, rank_, str_cat("NCCL reported an asynchronous error: ",
                                    ncclGetErrorString(async), " (", ncclGetLastError(comm_),
                                    ")"));
      while (!pending_.empty()) {
        Pending& p = pending_.front();
        const cudaError_t q = cudaEventQuery(p.done.get());
        if (q == cudaSuccess) {
          pending_.pop_front();
          continue;
        }
        if (q != cudaErrorNotReady)
          fatal(comm_, rank_, str_cat("CUDA error while NCCL ", p.op, " ran: ",
                                      cudaGetErrorString(q)));
        if (seconds_since(p.start) > timeout_s_)
          fatal(comm_, rank_, str_cat("NCCL ", p.op, " did not complete within ", timeout_s_,
                                      " s: a rank died or hung"));
        break;  // collectives complete in order: the rest are younger
      }
    }
  }

  double timeout_s_;
  std::unique_ptr<Communicator> mpi_;
  int rank_ = 0, size_ = 1, gpu_ = 0;
  cudaStream_t compute_ = nullptr;
  cudaStream_t comm_stream_ = nullptr;
  ncclComm_t comm_ = nullptr;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Pending> pending_;
  bool stop_ = false;
  std::thread watchdog_;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(const CommOptions& opts) {
  return std::make_unique<NcclCommunicator>(opts);
}

#else

std::unique_ptr<Communicator> make_nccl_communicator(const CommOptions&) {
  throw Error("this build of lizard has no NCCL data parallelism (needs CUDA, NCCL and MPI)");
}

#endif

}  // namespace lizard::dist
