// The side stream of cuda/side_stream.cuh: one non-blocking stream and two events per device
// context, created on the first fork and kept for the process (like the compute stream).
#include "side_stream.cuh"

#include <cstdlib>
#include <memory>
#include <string>

#include "lizard/core/cuda_runtime.h"
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

SideStream& side_of_current_device() {
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  Context& ctx = context(dev);
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

bool side_streams_enabled() {
  const char* v = std::getenv("LIZARD_STREAMS");
  const std::string val = v ? v : "";
  if (val.empty() || val == "2") return true;
  if (val == "1") return false;
  throw InputError("LIZARD_STREAMS='" + val + "': expected '1' (one stream) or '2' (the default)");
}

StreamFork::StreamFork(cudaStream_t main, bool enabled, bool start) : main_(main) {
  if (!enabled) return;
  SideStream& s = side_of_current_device();
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
