// Per-phase timing of training steps (teacher forward, student attention, backward,
// communication, optimizer, ...), for `lizard bench step` and profiling.
//
// A step is cut into consecutive intervals by mark(phase): the time from one mark to the next
// goes to the phase named by the first. On CUDA each mark records an event on the device's
// compute stream, so the split is of the GPU timeline (kernels queued in a phase count there,
// whenever the host queued them); end_step() waits for the last event. On the CPU ops are
// synchronous and a steady clock is used. Code that may be timed takes a `StepTimer*` and
// calls mark_phase(timer, phase): a null timer costs one branch, so timing off is free.
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "lizard/core/device.h"

namespace lizard::train {

/// The phases of a training step. `Forward` is the whole loss forward when a task does not
/// split it further; distillation splits it into TeacherForward and StudentAttention.
enum class Phase : uint8_t {
  Data,              ///< drawing the micro-batches (host), host-to-device copies
  Forward,           ///< the loss forward (finetune/pretrain: model + LM head + cross-entropy)
  TeacherForward,    ///< distill: the frozen teacher's layers (no tape)
  StudentAttention,  ///< distill: the student's Lizard attention and its MSE, forward
  Backward,          ///< backward through the tape (recomputation included)
  Communication,     ///< gradient all-reduce left after backward (exposed), and the
                     ///< copies out of its buffers
  Optimizer,         ///< clipping and the AdamW step
  Other,             ///< anything not marked (the step's start until the first mark)
  Sync,              ///< host round trips between the gradient all-reduce and the AdamW
                     ///< launches (reading the losses and gradient norm, the loss sum over
                     ///< ranks): on the GPU timeline, the device idles while the host decides
};
constexpr int kNumPhases = 9;

/// "data", "forward", "teacher_forward", "student_attention", "backward", "communication",
/// "optimizer", "other", "sync".
const char* phase_name(Phase p);

/// Milliseconds of one step: total and per phase (indexed by Phase; they sum to total).
struct StepTiming {
  double total_ms = 0;  ///< first mark to end_step (GPU timeline on CUDA)
  double wall_ms = 0;   ///< host clock from begin_step to end_step's return (after the wait)
  std::array<double, kNumPhases> phase_ms{};
};

class StepTimer {
 public:
  /// Times work on `device` (CUDA: its context's compute stream). `keep`: how many of the
  /// latest steps steps() holds (a training run that only logs the last step keeps 1, so a
  /// long run does not grow the list; a benchmark keeps them all).
  explicit StepTimer(Device device, size_t keep = SIZE_MAX);
  ~StepTimer();
  StepTimer(const StepTimer&) = delete;
  StepTimer& operator=(const StepTimer&) = delete;

  /// Starts a step; time goes to Phase::Other until the first mark.
  void begin_step();
  /// From now on time goes to `p` (a no-op outside begin_step/end_step).
  void mark(Phase p);
  /// Ends the step: waits for the device, then appends the step's timing to steps().
  void end_step();
  /// The completed steps, in order (the latest `keep` of them).
  const std::vector<StepTiming>& steps() const { return steps_; }
  /// "cuda_events" or "host_clock".
  const char* method() const;

 private:
  void record(Phase p);
  Device device_;
  bool in_step_ = false;
  double host_begin_ms_ = 0;
  // Marks of the current step: the phase that starts at each, and its event (CUDA) or time.
  std::vector<Phase> phases_;
  std::vector<double> host_ms_;
  std::vector<void*> events_;  // cudaEvent_t pool, grown on demand, reused across steps
  size_t used_ = 0;
  size_t keep_;
  std::vector<StepTiming> steps_;
};

/// timer->mark(p) when timing is on; nothing otherwise.
inline void mark_phase(StepTimer* timer, Phase p) {
  if (timer) timer->mark(p);
}

}  // namespace lizard::train
