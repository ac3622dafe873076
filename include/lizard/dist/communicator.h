// Communicator: the collectives data parallelism needs, behind one interface.
//
// Three implementations, chosen by make_communicator() from the launch environment:
//   - single process (world size 1): every collective is a no-op (the identity);
//   - MPI (CPU tensors): also the bootstrap of NCCL; built when LIZARD_WITH_MPI;
//   - NCCL (CUDA tensors): unique id broadcast through MPI, each rank takes the GPU of its
//     node-local rank, collectives run on a dedicated communication stream ordered against the
//     compute stream with events (so they overlap compute); built with LIZARD_WITH_NCCL and
//     LIZARD_WITH_MPI.
//
// Every rank must call the same collectives in the same order with the same shapes/dtypes
// (as with MPI and NCCL themselves): a mismatch is a hang, which the timeout below turns into
// a clear failure.
//
// Timeouts (CommOptions::timeout_s, default 600 s; env LIZARD_DIST_TIMEOUT_S overrides the
// default): a dead or hung rank ends the whole job with a message naming the operation and
// the rank that noticed, instead of hanging forever.
//   - MPI: a watchdog thread is armed around every blocking call; when a call outlives the
//     timeout it prints "lizard dist: rank R: MPI <op> did not complete within T s ..." to
//     stderr and calls MPI_Abort(MPI_COMM_WORLD, 3), which ends every rank (mpirun reports it).
//   - NCCL: the communicator is created with ncclCommInitRankConfig(blocking = 0); init and
//     every call are polled with ncclCommGetAsyncError; a watchdog thread watches the event of
//     each queued collective; on an asynchronous NCCL error or a collective older than the
//     timeout it prints the same kind of message, calls ncclCommAbort (which frees the GPU
//     kernels spinning on a dead peer) and then MPI_Abort.
//   A rank that exits (crash, exception) is noticed by mpirun itself, which kills the others.
//
// Fault injection for tests (MPI communicator): LIZARD_TEST_FAULT=<rank>:<n>:<die|hang> makes
// rank <rank> exit at once with status 17 (die, as a crash would) or sleep forever (hang) when
// it enters its n-th all-reduce (all_reduce_sum or all_reduce_sum_async, 1-based). Read once
// when the communicator is made.
//
// NVLink SHARP (NVLS) is turned off: the NCCL communicator sets NCCL_NVLS_ENABLE=0 in the
// environment before ncclCommInitRank unless the user set it (NVLS multicast buffers are not
// available on every lent machine and their setup can fail or hang on partitioned nodes).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lizard/core/device.h"
#include "lizard/core/tensor.h"

namespace lizard::dist {

/// Knobs of a communicator.
struct CommOptions {
  /// Seconds a collective (or NCCL init) may take before the job is aborted. <= 0 disables the
  /// watchdog. Default: $LIZARD_DIST_TIMEOUT_S if set, else 600.
  double timeout_s = default_timeout_s();
  /// Reads LIZARD_DIST_TIMEOUT_S (a positive number of seconds), else 600.
  static double default_timeout_s();
};

/// What the launcher (mpirun/srun/hydra) told this process, read from the environment before
/// any MPI call: OMPI_COMM_WORLD_{SIZE,RANK,LOCAL_RANK,LOCAL_SIZE} (Open MPI), else
/// PMI_{SIZE,RANK} and MPI_LOCALRANKID (MPICH/Hydra, Intel MPI). Fields are -1 when unknown.
struct LaunchEnv {
  int world_size = 1;
  int rank = 0;
  int local_rank = -1;
  int local_size = -1;
  /// True when launched as one of several ranks (world_size > 1).
  bool distributed() const { return world_size > 1; }
};
/// Reads the launch environment (see LaunchEnv).
LaunchEnv detect_launch_env();

/// A handle on a collective that may still be running. wait() orders later work after it:
/// on NCCL the compute stream waits for the communication stream (the host does not block);
/// on MPI the host waits for the request (under the watchdog); a collective that already
/// finished returns at once.
class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;
};

/// The interface. Tensors passed to collectives must be contiguous, live on device() (CPU for
/// the single and MPI communicators, this rank's GPU for NCCL), and be f32, bf16 or f64
/// (broadcast takes any dtype). Collectives throw lizard::Error on a wrong tensor.
class Communicator {
 public:
  virtual ~Communicator() = default;
  /// Global rank in [0, world_size()).
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  /// Rank among the processes of this node (MPI_Comm_split_type shared memory), which picks
  /// the GPU.
  virtual int local_rank() const = 0;
  /// Number of ranks on this node.
  virtual int local_size() const = 0;
  /// Where collective tensors live: cpu, or cuda:<this rank's GPU>.
  virtual Device device() const = 0;
  /// "single", "mpi" or "nccl".
  virtual const char* backend() const = 0;

  /// t <- sum over ranks of t, in place. bf16 is summed in fp32 on the MPI path and by NCCL
  /// natively (fp32 accumulation inside NCCL's reduction kernels is not guaranteed).
  virtual void all_reduce_sum(Tensor& t) = 0;
  /// Starts all_reduce_sum and returns at once where the backend can (NCCL; MPI for f32/f64,
  /// with MPI_Iallreduce, which Open MPI progresses inside MPI calls and at wait()); `t` must
  /// stay alive and untouched until the returned Work is waited.
  virtual std::unique_ptr<Work> all_reduce_sum_async(Tensor& t) = 0;
  /// t <- t of rank `root`, in place (any dtype, same shape on every rank).
  virtual void broadcast(Tensor& t, int root) = 0;
  /// Starts out <- every rank's `in`, in rank order: `out` (contiguous, in's dtype) holds
  /// world_size() x in.numel() elements, rank r's copy at [r n, (r + 1) n). Any dtype; every
  /// rank passes the same numel. `in` may be out's own slot (in place: a view of out starting
  /// at element rank() x n). NCCL: ncclAllGather on the communication stream (wait() orders the
  /// compute stream after it); MPI: MPI_Allgather, complete on return; single: a copy.
  /// `in` and `out` must stay alive and untouched until the returned Work is waited.
  virtual std::unique_ptr<Work> all_gather_async(const Tensor& in, Tensor& out) = 0;
  /// Returns when every rank has entered it.
  virtual void barrier() = 0;
  /// Host buffers of every rank, indexed by rank (sizes may differ between ranks). For small
  /// checks (config hashes, world sizes), not for tensors.
  virtual std::vector<std::vector<uint8_t>> all_gather_bytes(const std::vector<uint8_t>& mine) = 0;

  /// Ends every rank of the job with exit status `code` (MPI_Abort; NCCL aborts its
  /// communicator first) and does not return. The single-process communicator does nothing
  /// and returns: the caller then reports the error and exits normally. Used when one rank
  /// fails, so its peers do not wait in a collective until the timeout.
  virtual void abort_job(int code) {}

  /// all_gather_async, waited.
  void all_gather(const Tensor& in, Tensor& out) { all_gather_async(in, out)->wait(); }
  /// Convenience over all_gather_bytes: the strings of every rank.
  std::vector<std::string> all_gather_string(const std::string& mine);
  /// Throws InputError "<what> differs between ranks: rank 0 has '<a>', rank r has '<b>'"
  /// unless every rank passed the same `value` (e.g. a config hash, a dataset name).
  void check_same_on_all_ranks(const std::string& what, const std::string& value);

 protected:
  /// For implementations of all_gather_async: throws Error naming the tensors unless both are
  /// defined, contiguous, on device(), of one dtype, and out holds world_size() x in.numel()
  /// elements; returns true when `in` is out's own slot rank() (an in-place gather).
  bool check_all_gather(const Tensor& in, const Tensor& out) const;
};

/// The communicator of this launch: world size > 1 (from LaunchEnv) gives NCCL when `device`
/// is CUDA and MPI when it is the CPU; a single process gives the no-op communicator on
/// `device`. For NCCL the GPU is chosen by the node-local rank (local_rank % visible GPUs),
/// ignoring device.index; use comm->device() for the model. Throws Error when launched as
/// several ranks but this build lacks the needed backend.
std::unique_ptr<Communicator> make_communicator(Device device, const CommOptions& opts = {});

/// The no-op communicator of one process on `device`.
std::unique_ptr<Communicator> make_single_communicator(Device device = Device::cpu());

/// The MPI communicator over MPI_COMM_WORLD (initialises MPI with MPI_THREAD_MULTIPLE if the
/// process has not; finalises it on destruction if it did). Throws Error without MPI support.
std::unique_ptr<Communicator> make_mpi_communicator(const CommOptions& opts = {});

/// The NCCL communicator over all MPI ranks (bootstraps through make_mpi_communicator()).
/// Throws Error without NCCL+MPI support or without a visible GPU.
std::unique_ptr<Communicator> make_nccl_communicator(const CommOptions& opts = {});

/// True when this build has the backend.
bool have_mpi();
bool have_nccl();

}  // namespace lizard::dist
