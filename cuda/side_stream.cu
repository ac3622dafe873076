// The side stream of cuda/side_stream.cuh: one non-blocking stream and two events per device
// context, created on the first fork and kept for the process (like the compute stream).
#include "side_stream.cuh"

#include <memory>
#include <string>

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

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(std::string("side stream: ") + what + ": " + cudaGetErrorString(e));
}

SideStream& side_of(int device) {
  Context& ctx = context(device);
  if (!ctx.side_stream) {
    auto s = std::make_shared<SideStream>();
    check(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking), "cudaStreamCreate");
    check(cudaEventCreateWithFlags(&s->fork, cudaEventDisableTiming), "cudaEventCreate");
    check(cudaEventCreateWithFlags(&s->join, cudaEventDisableTiming), "cudaEventCreate");
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
  check(cudaEventRecord(s->fork, main_), "cudaEventRecord (fork)");
  check(cudaStreamWaitEvent(side_, s->fork, 0), "cudaStreamWaitEvent (fork)");
  forked_ = true;
}

void StreamFork::join() {
  if (!state_ || joined_) return;
  auto* s = static_cast<SideStream*>(state_);
  joined_ = true;
  s->open = false;
  if (!forked_) return;
  check(cudaEventRecord(s->join, side_), "cudaEventRecord (join)");
  check(cudaStreamWaitEvent(main_, s->join, 0), "cudaStreamWaitEvent (join)");
}

StreamFork::~StreamFork() {
  try {
    join();
  } catch (...) {
    // a failed join leaves the CUDA error for the next check; destructors must not throw
  }
}

}  // namespace lizard::cuda
