// Per-phase step timing (see include/lizard/train/step_timer.h).
#include "lizard/train/step_timer.h"

#include <algorithm>
#include <chrono>

#include "lizard/core/cuda_runtime.h"
#include "lizard/core/error.h"

#ifdef LIZARD_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace lizard::train {

namespace {

double now_ms() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double, std::milli>(clock::now().time_since_epoch()).count();
}

#ifdef LIZARD_WITH_CUDA
void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(str_cat("StepTimer: ", what, ": ", cudaGetErrorString(e)));
}
#endif

}  // namespace

const char* phase_name(Phase p) {
  switch (p) {
    case Phase::Data: return "data";
    case Phase::Forward: return "forward";
    case Phase::TeacherForward: return "teacher_forward";
    case Phase::StudentAttention: return "student_attention";
    case Phase::Backward: return "backward";
    case Phase::Communication: return "communication";
    case Phase::Optimizer: return "optimizer";
    case Phase::Other: return "other";
    case Phase::Sync: return "sync";
  }
  return "other";
}

StepTimer::StepTimer(Device device, size_t keep) : device_(device), keep_(std::max<size_t>(keep, 1)) {
  LZ_CHECK(device_.is_cpu() || cuda_available(), "StepTimer: ", device_.str(),
           " requested but no GPU is visible");
}

StepTimer::~StepTimer() {
#ifdef LIZARD_WITH_CUDA
  for (void* e : events_) cudaEventDestroy(static_cast<cudaEvent_t>(e));
#endif
}

const char* StepTimer::method() const { return device_.is_cuda() ? "cuda_events" : "host_clock"; }

void StepTimer::record(Phase p) {
  phases_.push_back(p);
  if (device_.is_cpu()) {
    host_ms_.push_back(now_ms());
    return;
  }
#ifdef LIZARD_WITH_CUDA
  if (used_ == events_.size()) {
    cudaEvent_t e = nullptr;
    check(cudaSetDevice(device_.index), "cudaSetDevice");
    check(cudaEventCreate(&e), "cudaEventCreate");
    events_.push_back(e);
  }
  auto stream = static_cast<cudaStream_t>(cuda::context(device_.index).stream);
  check(cudaEventRecord(static_cast<cudaEvent_t>(events_[used_]), stream), "cudaEventRecord");
  ++used_;
#endif
}

void StepTimer::begin_step() {
  phases_.clear();
  host_ms_.clear();
  used_ = 0;
  in_step_ = true;
  host_begin_ms_ = now_ms();
  record(Phase::Other);
}

void StepTimer::mark(Phase p) {
  if (!in_step_ || phases_.back() == p) return;  // same phase again: one interval
  record(p);
}

void StepTimer::end_step() {
  LZ_CHECK(in_step_, "StepTimer::end_step without begin_step");
  record(Phase::Other);  // the end; its phase is never used
  in_step_ = false;
  StepTiming t;
  const size_t n = phases_.size();
  std::vector<double> at(n, 0.0);
  if (device_.is_cpu()) {
    for (size_t i = 0; i < n; ++i) at[i] = host_ms_[i] - host_ms_[0];
  } else {
#ifdef LIZARD_WITH_CUDA
    check(cudaEventSynchronize(static_cast<cudaEvent_t>(events_[n - 1])), "cudaEventSynchronize");
    for (size_t i = 1; i < n; ++i) {
      float ms = 0;
      check(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(events_[0]),
                                 static_cast<cudaEvent_t>(events_[i])),
            "cudaEventElapsedTime");
      at[i] = ms;
    }
#endif
  }
  for (size_t i = 0; i + 1 < n; ++i)
    t.phase_ms[static_cast<size_t>(phases_[i])] += at[i + 1] - at[i];
  t.total_ms = at[n - 1];
  t.wall_ms = now_ms() - host_begin_ms_;
  if (steps_.size() == keep_) steps_.erase(steps_.begin());
  steps_.push_back(t);
}

}  // namespace lizard::train
