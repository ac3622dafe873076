// GradientBucketer: data-parallel gradient averaging in a few large all-reduces.
//
// Parameters (autograd leaves that require grad) are grouped into buckets of about
// `bucket_bytes` (default 25 MiB) in REVERSE registration order, because backward produces the
// last layers' gradients first: the first bucket can be reduced while backward still runs
// through the early layers. A bucket holds one dtype on one device; a parameter larger than the
// cap gets a bucket of its own.
//
// Per step:
//   bucketer.start(divisor);            // e.g. world size, or the global token count
//   ... backward ...; bucketer.mark_ready(i) as parameter i's gradient becomes final
//   bucketer.wait();                    // every grad = (sum over ranks of grad) / divisor
// or in one call after backward: bucketer.all_reduce(divisor).
//
// Launching a bucket copies its gradients into one contiguous buffer [numel] (flatten) and
// starts comm.all_reduce_sum_async on it; wait() waits each bucket and copies
// buffer / divisor back into the gradients (scatter). With attach_grad_views() at the start of
// a step the gradients ARE slices of the buffers, and both copies are skipped. Buckets are launched strictly in bucket
// order (a complete bucket waits for the earlier ones), so every rank issues the collectives
// in the same order even if gradients finish in a different order. On NCCL the reduction runs
// on the communication stream while the compute stream goes on; on CPU/MPI it is a
// nonblocking MPI_Iallreduce completed in wait().
//
// A parameter whose gradient is undefined at launch (unused in this step on this rank)
// contributes zeros, and gets the reduced gradient afterwards (as every rank must send the
// same sizes). Divisor semantics: with each rank's loss the mean over its own B_r tokens and
// equal B_r, divide by the world size; with each rank's loss a SUM over its tokens, divide by
// the global token count (then ranks may hold different numbers of tokens and the result still
// equals one process on the whole batch).
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "lizard/autograd/variable.h"
#include "lizard/dist/communicator.h"

namespace lizard::dist {

class GradientBucketer {
 public:
  static constexpr size_t kDefaultBucketBytes = size_t{25} << 20;

  /// `params` in registration order (as Module::parameters() lists them); leaves that do not
  /// require grad are ignored. The communicator must outlive the bucketer. Throws Error for a
  /// non-leaf or a parameter not on comm.device().
  GradientBucketer(Communicator& comm, std::vector<autograd::Var> params,
                   size_t bucket_bytes = kDefaultBucketBytes);
  ~GradientBucketer();
  GradientBucketer(const GradientBucketer&) = delete;
  GradientBucketer& operator=(const GradientBucketer&) = delete;

  /// Parameters that are bucketed (the requires-grad subset, registration order).
  size_t num_params() const { return params_.size(); }
  const autograd::Var& param(size_t i) const { return params_[i]; }
  size_t num_buckets() const { return buckets_.size(); }
  /// Indices (into param()) of bucket b's parameters, in the order they sit in its buffer.
  const std::vector<size_t>& bucket_params(size_t b) const;
  /// Elements of bucket b's buffer and its dtype (the parameters' dtype; f32 for bf16/f16
  /// parameters on the CPU, where the MPI path reduces in f32 anyway).
  int64_t bucket_numel(size_t b) const;
  DType bucket_dtype(size_t b) const;
  /// The bucket holding parameter i.
  size_t bucket_of(size_t param_index) const { return bucket_of_[param_index]; }

  /// Makes the gradient of every bucketed parameter that has none (dropped by zero_grad) and
  /// whose dtype is its bucket's a zero-filled view of its slice of the bucket buffer
  /// ([shape], contiguous). Backward then accumulates into the buffer in place (autograd adds
  /// into an existing leaf gradient), so launching the bucket copies nothing in and wait()
  /// copies nothing back (at divisor 1; else one scaled copy): no per-parameter copy kernels
  /// on the GPU and no per-parameter launches on the host during backward. Call at the start
  /// of a step, before its first backward and with no bucket in flight; the views last until
  /// the gradients are dropped again. Returns how many parameters got a view. Results are the
  /// same bits as without views (the first micro-batch adds its gradient to zeros).
  size_t attach_grad_views();
  /// Starts a step: the reduced gradients will be divided by `divisor` (> 0).
  void start(double divisor);
  /// Parameter i's gradient is final for this step; launches every complete bucket whose
  /// predecessors are launched. Throws Error if i was already marked in this step.
  void mark_ready(size_t param_index);
  /// Marks every parameter not yet marked (call after backward).
  void mark_all_ready();
  /// Waits for every bucket and writes grad = sum_ranks(grad) / divisor into each parameter.
  /// Throws Error naming the first parameter never marked ready.
  void wait();
  /// start(divisor); mark_all_ready(); wait().
  void all_reduce(double divisor);

  /// Copies bucket b's gradients into its buffer ([numel], bucket_dtype) and returns the buffer
  /// (zeros for undefined grads). Exposed for tests; launch does this.
  Tensor flatten(size_t b);
  /// Writes `flat` * scale ([bucket_numel(b)]) back into bucket b's gradients (allocating a
  /// grad of the parameter's dtype where none exists). Exposed for tests; wait() does this.
  void unflatten(size_t b, const Tensor& flat, double scale);

 private:
  struct Bucket {
    std::vector<size_t> params;   // indices into params_
    std::vector<int64_t> offsets;  // element offset of each param in the buffer
    int64_t numel = 0;
    DType dtype = DType::F32;
    Tensor flat;                   // [numel], allocated on first launch and reused
    std::unique_ptr<Work> work;    // the in-flight all-reduce
    size_t ready = 0;              // params marked ready this step
    bool launched = false;
  };
  void launch(size_t b);
  void launch_ready();
  Tensor& buffer(Bucket& bk);  // bk.flat, allocated on first use

  Communicator& comm_;
  std::vector<autograd::Var> params_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_;
  std::vector<bool> marked_;
  size_t next_launch_ = 0;
  double divisor_ = 1.0;
  bool started_ = false;
};

}  // namespace lizard::dist
