// AdamW over parameter groups with fp32 master weights and fp32 moments, global-norm
// clipping folded into the step, and non-finite steps skipped (and counted) rather than
// applied. CPU parameters are updated here; CUDA parameters go to the fused multi-tensor
// kernel of cuda/adamw.cu, one launch per device for all of them. The state is saved to and
// restored from an HDF5 file for exact resume.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "lizard/autograd/variable.h"

namespace lizard::io {
class H5File;
}

namespace lizard::optim {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.99;  ///< the paper's recipe (not PyTorch's 0.999)
  double eps = 1e-8;
};

/// Parameters sharing a weight decay.
struct ParamGroup {
  std::vector<autograd::Var> params;
  double weight_decay = 0.0;
};

/// The usual split: matrices (dim >= 2) decay, vectors and scalars (norms, biases, gates,
/// sink logits, alpha) do not. Parameters that do not require grad are left out.
std::vector<ParamGroup> make_param_groups(const std::vector<autograd::Var>& params,
                                          double weight_decay);

/// What one step did.
struct StepResult {
  double grad_norm = 0;     ///< global L2 norm of all gradients before clipping
  double clip_scale = 1;    ///< factor applied to the gradients (1 = not clipped)
  bool skipped = false;     ///< the norm was not finite: nothing was updated
};

class AdamW {
 public:
  /// Parameters must be leaves; f32 parameters are their own master weights, others (bf16)
  /// get an f32 master copy. f64 CPU parameters (tests) keep f64 state.
  AdamW(std::vector<ParamGroup> groups, AdamWOptions opt = {});

  /// One step at learning rate `lr`: g *= min(1, max_norm / (norm + 1e-6)) when max_norm > 0;
  /// m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; with t the count of applied steps,
  /// w -= lr * (m/(1-b1^t) / (sqrt(v/(1-b2^t)) + eps) + wd * w). Parameters without a
  /// gradient are not touched. A non-finite norm skips the whole step (counted).
  StepResult step(double lr, double max_norm);
  /// step() with the global gradient norm given instead of computed over this optimizer's
  /// parameters: under ZeRO-1 each rank's optimizer holds a shard, but clipping and the
  /// non-finite skip must use the norm of ALL gradients so every rank decides alike.
  StepResult step_with_norm(double lr, double max_norm, double grad_norm);
  /// Drops every parameter's gradient.
  void zero_grad();

  int64_t steps() const { return t_; }
  int64_t skipped_steps() const { return skipped_; }
  const std::vector<ParamGroup>& groups() const { return groups_; }

  /// Writes m, v, master weights and the counters under `prefix` ("optim/<param>/m", ...).
  /// Parameters are keyed by name (unnamed ones by position).
  void save(io::H5File& f, const std::string& prefix = "optim") const;
  /// Restores what save wrote; InputError if a parameter is missing or has another shape.
  void load(const io::H5File& f, const std::string& prefix = "optim");

 private:
  struct State {
    autograd::Var param;
    double weight_decay;
    std::string key;
    Tensor master;  // aliases param.data() when the dtypes match
    Tensor m, v;
  };
  std::vector<ParamGroup> groups_;
  std::vector<State> states_;
  AdamWOptions opt_;
  int64_t t_ = 0;
  int64_t skipped_ = 0;
};

/// Global L2 norm of the gradients (undefined ones count as zero), accumulated in double on
/// the CPU and fp32 on the GPU.
double global_grad_norm(const std::vector<autograd::Var>& params);

/// global_grad_norm in two halves, so a caller can read the device part together with other
/// values in one device-to-host transfer: the sum of squares of the CPU gradients (double,
/// computed now) and of the CUDA gradients (f32 [1] on their GPU, queued on its compute
/// stream, undefined when there are none). The norm is sqrt(host_sum + device_sum), the same
/// bits as global_grad_norm(params).
struct GradSumSquares {
  double host_sum = 0;
  Tensor device_sum;  ///< f32 [1] on the GPU, or undefined
};
GradSumSquares grad_sum_squares(const std::vector<autograd::Var>& params);

}  // namespace lizard::optim
