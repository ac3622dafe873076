// Launchers of cuda/adamw.cu: the fused optimizer step and the global gradient norm, each
// over a whole list of tensors in one launch (a step updates hundreds of small tensors, and
// one launch each cost more in launch gaps than the updates themselves).
#pragma once
#include <cstdint>
#include <vector>

#include "lizard/core/tensor.h"

namespace lizard::cuda {

/// Sum of squares of every element of `grads` (f32, bf16 or f16; contiguous, on one GPU),
/// accumulated in fp32 into out (f32 [1], overwritten). Deterministic: each tensor's elements
/// are split into fixed per-block partial sums (the split depends only on its size) that one
/// block then adds in list order. A few launches in all, whatever the number of tensors.
void sum_squares(const std::vector<Tensor>& grads, Tensor& out, void* stream);

/// One parameter tensor of adamw_step: all contiguous, same numel, on the same GPU.
struct AdamWTensor {
  Tensor param;   ///< f32, bf16 or f16; may be `master` itself (f32 parameters)
  Tensor master;  ///< f32 master weights
  Tensor m, v;    ///< f32 moments
  Tensor grad;    ///< f32, bf16 or f16
  double weight_decay = 0;
};

/// The hyperparameters every tensor of one adamw_step shares.
struct AdamWHyper {
  double lr = 0, beta1 = 0.9, beta2 = 0.99, eps = 1e-8;
  int64_t step = 1;        ///< t, counting from 1 (bias corrections 1 - beta^t)
  double clip_scale = 1;   ///< the gradients' factor, applied in f32
};

/// One AdamW step on every tensor of `ts`, each with its own weight decay wd:
///   g' = g * float(clip_scale); m = b1 m + (1-b1) g'; v = b2 v + (1-b2) g'^2;
///   master -= lr * (m / (1-b1^t) / (sqrt(v / (1-b2^t)) + eps) + wd * master);
///   param = cast(master).
/// All f32 arithmetic, element by element, so the result does not depend on how the tensors
/// are batched. One launch per 256 tensors (the descriptors travel as kernel parameters: no
/// host-to-device copy); empty tensors are skipped.
void adamw_step(const std::vector<AdamWTensor>& ts, const AdamWHyper& h, void* stream);

}  // namespace lizard::cuda
