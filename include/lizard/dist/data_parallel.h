// DataParallel: what one rank of a data-parallel run does around the optimizer step, over a
// Communicator. The trainer sees it through train::DistHooks (stages.cpp wires the two).
//
// Per step:
//   - the target count and the loss sum are summed over ranks (allreduce_sum of doubles), so
//     each rank backpropagates (its loss SUM) / (GLOBAL count) and the summed gradient is the
//     gradient of the global mean, whatever the number of ranks;
//   - prepare_grads() at the step's start makes the gradients views of the bucket buffers, so
//     backward accumulates straight into what is all-reduced (no flatten/scatter copies);
//   - gradients are summed in buckets by a GradientBucketer (divisor 1). With `overlap`,
//     begin_grad_sync() arms it before the step's last backward and on_leaf_ready() marks each
//     parameter as autograd finishes it, so a bucket's all-reduce starts while backward still
//     runs through earlier layers (NCCL: on the communication stream); finish_grad_sync()
//     launches the rest and waits;
//   - with ZeRO-1 (`zero1`), owned_params() is this rank's shard of the parameters (whole
//     tensors, balanced by element count, the same plan on every rank) for the optimizer,
//     and sync_params() broadcasts each parameter from its owner after the step;
//   - with `sparse_rows` (an untied input embedding), that parameter leaves the buckets (so the
//     last bucket closes early in backward) and its gradient is summed by a SparseRowGrad: the
//     step's token ids come in through set_step_ids() before the forward, and
//     finish_grad_sync() exchanges only the rows they name, after the buckets are launched.
#pragma once
#include <cstddef>
#include <memory>
#include <unordered_map>
#include <vector>

#include "lizard/autograd/variable.h"
#include "lizard/dist/communicator.h"
#include "lizard/dist/gradient_bucketer.h"
#include "lizard/dist/sparse_row_grad.h"

namespace lizard::dist {

struct DataParallelOptions {
  size_t bucket_bytes = GradientBucketer::kDefaultBucketBytes;
  bool overlap = true;  ///< launch buckets from backward (on_leaf_ready)
  bool zero1 = false;   ///< shard the optimizer state
  /// prepare_grads() makes the gradients views of the bucket buffers (no copies in or out of
  /// the buckets; see GradientBucketer::attach_grad_views). Off: prepare_grads() is a no-op.
  bool grad_views = true;
  /// A parameter [V, D] whose gradient is non-zero only on the rows of the step's token ids
  /// (an untied input embedding): summed by a SparseRowGrad instead of in the buckets, and
  /// set_step_ids() must be called every step. Undefined: every parameter is bucketed.
  autograd::Var sparse_rows;
};

/// ZeRO-1 ownership: owner[i] is the rank that updates params[i]. Greedy by decreasing size
/// onto the least-loaded rank (ties: lowest rank, then registration order), a pure function of
/// the shapes and the world size, so every rank computes the same plan.
std::vector<int> zero1_owners(const std::vector<autograd::Var>& params, int world);

/// In-place sum over ranks of n host doubles without touching a device: every rank's values
/// through comm.all_gather_bytes (MPI under NCCL too), summed in rank order, so every rank
/// gets the same bits. Error if the ranks send different n.
void sum_doubles_on_host(Communicator& comm, double* values, int n);

class DataParallel {
 public:
  /// `params`: the trainable parameters in the trainer's order (same on every rank). The
  /// communicator must outlive this object.
  DataParallel(Communicator& comm, std::vector<autograd::Var> params, DataParallelOptions opt);
  ~DataParallel();

  int rank() const { return comm_.rank(); }
  int world() const { return comm_.world_size(); }
  Communicator& comm() { return comm_; }

  /// In-place sum over ranks of n host doubles, identical on every rank. On the CPU an MPI
  /// all-reduce; on GPUs the values never touch the device (MPI gather, summed in rank order),
  /// so the call does not wait for the GPU's queued work.
  void allreduce_sum(double* values, int n);
  /// The token ids of this rank's micro-batches of the coming step (host tensors), before its
  /// forward: the rows of `sparse_rows` whose gradient can be non-zero. A collective (host):
  /// every rank calls it once per step. No-op without sparse_rows.
  void set_step_ids(const std::vector<Tensor>& ids);
  /// The row exchange of `sparse_rows` (null without it); for tests and diagnostics.
  const SparseRowGrad* sparse_rows() const { return sparse_.get(); }
  /// At the start of a step, after the gradients were dropped and before the first backward:
  /// gives the bucketed parameters gradient views into the all-reduce buffers (grad_views).
  /// Returns how many parameters got one.
  size_t prepare_grads();
  /// Arms the bucketer for this step's last backward (no-op without overlap).
  void begin_grad_sync();
  /// Autograd's LeafReadyFn: marks the parameter of `leaf` ready (ignores other leaves).
  void on_leaf_ready(const autograd::VarImpl* leaf);
  /// Launches every bucket not launched yet, then the row exchange of sparse_rows, and waits
  /// for all: grad = sum over ranks of grad.
  void finish_grad_sync();
  /// The parameters whose optimizer state this rank keeps: all, or its ZeRO-1 shard (in the
  /// order given).
  std::vector<autograd::Var> owned_params(const std::vector<autograd::Var>& params) const;
  /// ZeRO-1: every parameter takes its owner's value (broadcast). No-op without zero1.
  void sync_params();
  void barrier() { comm_.barrier(); }

 private:
  Communicator& comm_;
  std::vector<autograd::Var> params_;
  DataParallelOptions opt_;
  std::unique_ptr<GradientBucketer> bucketer_;
  std::unique_ptr<SparseRowGrad> sparse_;  // sparse_rows' exchange, or null
  std::unordered_map<const autograd::VarImpl*, size_t> index_;  // leaf -> bucketer index
  std::unordered_map<const autograd::VarImpl*, int> owner_;     // leaf -> ZeRO-1 owner
  bool started_ = false;
};

}  // namespace lizard::dist
