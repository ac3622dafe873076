// The side stream of cuda/side_stream.cuh: one non-blocking stream and two events per device
// context, created on the first fork and kept for the process (like the compute stream).
#include "side_stream.cuh"

#include <memory>

#include "lizard/core/cuda_runtime.h"
#include "lizard/core/env.h"
#include "lizard/core/error.h"

namespace lizard::cuda {
namespace {

struct SideStream {
  cudaStream_t stream = nullptr;
  cudaEvent_t fork = nullptr, join = nullptr;
  bool open = false;  // a fork in progress (forks do not nest)
};

SideStream& side_of(int device) {
  Context& ctx = context(device);
  if (!ctx.side_stream) {
    auto s = std::make_shared<SideStream>();
    check_status(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking),
                 "side stream cudaStreamCreate");
    check_status(cudaEventCreateWithFlags(&s->fork, cudaEventDisableTiming),
                 "side stream cudaEventCreate");
    check_status(cudaEventCreateWithFlags(&s->join, cudaEventDisableTiming),
                 "side stream cudaEventCreate");
    ctx.side_stream = s;
  }
  return *static_cast<SideStream*>(ctx.side_stream.get());
}

}  // namespace

bool side_streams_enabled() { return !env_switch("LIZARD_STREAMS", "2", "1"); }

StreamFork::StreamFork(cudaStream_t main, int device, bool enabled, bool start) : main_(main) {
  if (!enabled) return;
  SideStream& s = side_of(device);
  LZ_CHECK(!s.open, "side stream: forks do not nest");
  s.open = true;
  side_ = s.stream;
  state_ = &s;
  if (!start) return;
  try {
    fork();
  } catch (...) {
    s.open = false;  // no destructor runs for a constructor that throws
    throw;
  }
}

void StreamFork::fork() {
  if (!state_ || forked_) return;
  auto* s = static_cast<SideStream*>(state_);
  check_status(cudaEventRecord(s->fork, main_), "side stream cudaEventRecord (fork)");
  check_status(cudaStreamWaitEvent(side_, s->fork, 0), "side stream cudaStreamWaitEvent (fork)");
  forked_ = true;
}

void StreamFork::join() {
  if (!state_ || joined_) return;
  auto* s = static_cast<SideStream*>(state_);
  joined_ = true;
  s->open = false;
  if (!forked_) return;
  check_status(cudaEventRecord(s->join, side_), "side stream cudaEventRecord (join)");
  check_status(cudaStreamWaitEvent(main_, s->join, 0), "side stream cudaStreamWaitEvent (join)");
}

StreamFork::~StreamFork() {
  try {
    join();
  } catch (...) {
    // a failed join leaves the CUDA error for the next check; destructors must not throw
  }
}

}  // namespace lizard::cuda
