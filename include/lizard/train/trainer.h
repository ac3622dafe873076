// The training loop, independent of the model: the stage runners (pretrain, distill,
// finetune) implement TrainTask and hand it to a Trainer.
//
// One optimizer step: draw the step's micro-batches, count their targets on every rank
// (all-reduced), backpropagate each micro-batch's summed loss divided by that global count
// (so accumulation and data parallelism give the same gradient as one big batch), all-reduce
// the gradients, clip, step at the schedule's LR, skip and count a non-finite step. Every
// checkpoint.every steps a checkpoint, every eval.every steps a validation pass; --resume
// continues from the last complete checkpoint with identical results.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <optional>
#include <vector>

#include "lizard/autograd/variable.h"
#include "lizard/core/rng.h"
#include "lizard/train/checkpoint.h"
#include "lizard/train/config.h"
#include "lizard/train/data_loader.h"
#include "lizard/train/step_timer.h"

namespace lizard::optim {
class AdamW;
}

namespace lizard::train {

/// What a task's loss returns for one micro-batch.
struct LossResult {
  autograd::Var loss_sum;  ///< scalar: the loss SUMMED over the counted positions
  int64_t count = 0;       ///< positions counted (usually batch.num_targets)
};

/// Per-call context handed to the task.
struct StepContext {
  int64_t step = 0;  ///< optimizer step (0-based)
  int micro = 0;     ///< micro-batch within the step
  bool training = true;
  Generator* rng = nullptr;  ///< dropout etc.; saved and restored with checkpoints
  StepTimer* timer = nullptr;  ///< per-phase timing (null = off); tasks may mark sub-phases
};

/// The model side of training.
class TrainTask {
 public:
  virtual ~TrainTask() = default;
  /// The trainable parameters (named: names key checkpoints and optimizer state).
  virtual std::vector<autograd::Var> parameters() = 0;
  /// The loss of one micro-batch (recorded on the tape when ctx.training).
  virtual LossResult loss(const Batch& batch, const StepContext& ctx) = 0;
  /// Tensors written to model.h5 (default: the trainable parameters by name).
  virtual NamedTensors state_tensors();
  /// Restores what state_tensors() wrote (default: parameters by name; InputError on a
  /// missing name or another shape).
  virtual void load_state(const NamedTensors& tensors);
  /// Training FLOPs per token, for MFU (0 = not reported).
  virtual double flops_per_token() const { return 0; }
  /// Debugging a non-finite loss: re-runs the forward of `batch` without gradients, checking
  /// every module's output, and returns the name of the first module whose output holds a
  /// NaN/Inf ("" when all are finite or the task cannot tell). Slow; called only when
  /// non-finite steps stop a run with debug_nonfinite on.
  virtual std::string locate_nonfinite(const Batch& batch, const StepContext& ctx) { return ""; }
  /// How flops_per_token() is counted, printed once at the start ("" = not reported).
  virtual std::string flops_formula() const { return ""; }
};

/// Collective hooks for data parallelism; the defaults are a single process.
struct DistHooks {
  int rank = 0;
  int world = 1;
  /// In-place sum over ranks of n doubles.
  std::function<void(double* values, int n)> allreduce_sum;
  /// Sums every parameter's gradient over ranks (undefined gradients count as zeros).
  std::function<void(const std::vector<autograd::Var>& params)> allreduce_grads;
  std::function<void()> barrier;
  /// Optional: the step's micro-batches as soon as they are drawn (before any forward), e.g.
  /// for the token ids whose embedding rows get gradients. Every rank calls it once per step.
  std::function<void(const std::vector<Batch>& batches)> step_batches;
  /// Optional overlap of the gradient all-reduce with backward: grads_begin() runs before the
  /// step's last backward, grad_ready(leaf) as each leaf's gradient becomes final in it, and
  /// allreduce_grads (after backward) reduces what was not launched yet and waits for all.
  std::function<void()> grads_begin;
  autograd::LeafReadyFn grad_ready;
  /// Optional: runs at the start of every step, right after the gradients are dropped and
  /// before the first forward (e.g. to make the gradients views of the all-reduce buffers).
  std::function<void()> grads_prepare;
  /// Optional ZeRO-1: the parameters (of those given) whose optimizer state this rank keeps;
  /// the step clips by the norm of all gradients, and sync_params() then gives every rank the
  /// updated values of the parameters it does not own.
  std::function<std::vector<autograd::Var>(const std::vector<autograd::Var>&)> optimizer_shard;
  std::function<void()> sync_params;
};

struct TrainerOptions {
  bool resume = false;        ///< continue from the last complete checkpoint in out_dir
  bool print = true;          ///< progress on stdout (rank 0)
  int64_t stop_after = -1;    ///< stop (as if killed) after this step, for tests; -1 = no
  std::string device_name;    ///< for MFU (peak FLOPs); empty = unknown
  /// Consecutive skipped (non-finite) steps before the run stops with an error; < 0 = the
  /// config's max_nonfinite_steps.
  int64_t max_consecutive_skips = -1;
  /// Per-phase timing of every step (null = off, free); not owned.
  StepTimer* timer = nullptr;
};

/// What run() returns.
struct TrainSummary {
  std::vector<double> losses;  ///< training loss of every step this process ran
  std::vector<double> val_losses;
  int64_t start_step = 0;
  int64_t final_step = 0;
  int64_t skipped_steps = 0;  ///< non-finite steps skipped (a non-finite loss with finite
                              ///< gradients is counted by this process only, not checkpointed)
  std::string last_checkpoint;
};

class Trainer {
 public:
  /// `train` and `val` are this rank's loaders (val may be null).
  Trainer(RunConfig cfg, TrainTask& task, DataLoader& train, DataLoader* val, DistHooks dist = {},
          TrainerOptions opt = {});
  ~Trainer();

  /// Steps of the run: schedule.steps, or ceil(epochs x sequences per epoch / global batch).
  int64_t total_steps() const { return total_steps_; }
  TrainSummary run();
  /// Mean loss per counted position over the validation loader (from its start).
  double validate();

 private:
  void save(int64_t step);
  struct StepScalars {
    std::vector<double> losses;        ///< one per micro-batch, as Tensor::item() gives them
    std::optional<double> grad_norm;   ///< pre-clip global norm, when read with the losses
  };
  /// The step's losses and, on a GPU, the pre-clip global gradient norm of the parameters the
  /// optimizer clips over (the bits AdamW::step would compute), read in one device-to-host
  /// transfer. On the CPU (or for a loss dtype f32 cannot hold exactly) only the losses, read
  /// one by one; the optimizer then takes the norm itself.
  StepScalars read_step_scalars(const std::vector<Tensor>& micro_losses) const;

  RunConfig cfg_;
  TrainTask& task_;
  DataLoader& train_;
  DataLoader* val_;
  DistHooks dist_;
  TrainerOptions opt_;
  std::vector<autograd::Var> params_;
  std::vector<autograd::Var> norm_params_;  ///< ZeRO-1: all parameters, in the optimizer's order
  std::unique_ptr<optim::AdamW> optim_;
  Generator rng_;
  int64_t total_steps_ = 0;
  int64_t accum_ = 1;
  int64_t tokens_seen_ = 0;
};

}  // namespace lizard::train
