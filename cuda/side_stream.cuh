// A second stream for work that may overlap the compute stream inside one op (issue #11): at
// one token per row (micro-batch 1) several Lizard kernels fill only part of the GPU (the state
// sweeps run one CTA per (b, h, row block)), and an independent kernel can run beside them.
//
// Contract of a fork (StreamFork): the side stream first waits for everything queued on the
// compute stream so far (so it may use any buffer allocated before the fork), and the compute
// stream waits for the side stream's work at join() (or at the fork's end), before anything
// queued after it. The caching allocator is ordered by the compute stream alone, so every
// buffer the side stream touches must be allocated before the fork and released only after the
// join (e.g. tensors of the calling scope), and the side work must allocate no temporaries.
#pragma once
#include <cuda_runtime.h>

namespace lizard::cuda {

/// Whether ops may fork work onto the side stream: LIZARD_STREAMS unset, empty or "2" (the
/// default) yes; "1" no (everything on the compute stream, as before: for A/B timing and
/// bisection). Read per call (env_switch, lizard/core/env.h); throws InputError naming the
/// variable for any other value.
bool side_streams_enabled();

/// One fork of the compute stream `main` of GPU `device` (its context's stream) onto that
/// context's side stream. Not nested (one fork of a device at a time: the events are the
/// context's). Disabled (enabled false): side() is main and fork(), join() do nothing, so
/// callers need no second code path.
class StreamFork {
 public:
  /// start: fork now; else at fork(), e.g. inside a launcher between two of its kernels.
  StreamFork(cudaStream_t main, int device, bool enabled, bool start = true);
  ~StreamFork();  ///< joins
  StreamFork(const StreamFork&) = delete;
  StreamFork& operator=(const StreamFork&) = delete;
  /// The side stream starts after the work queued on main so far; idempotent.
  void fork();
  /// The stream for the forked work: the side stream once forked, else main.
  cudaStream_t side() const { return forked_ ? side_ : main_; }
  /// The compute stream waits for the side stream's work queued so far; idempotent.
  void join();

 private:
  cudaStream_t main_, side_ = nullptr;
  void* state_ = nullptr;  // the context's SideStream, null when disabled
  bool forked_ = false, joined_ = false;
};

}  // namespace lizard::cuda
