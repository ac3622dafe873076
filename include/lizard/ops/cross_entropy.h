// Cross-entropy over a vocabulary, fused with log-softmax, with ignored targets.
// CPU: f32/f64. CUDA: cuda::cross_entropy_forward/backward.
#pragma once
#include <cstdint>

#include "lizard/core/tensor.h"

namespace lizard::ops {

struct CrossEntropyOut {
  Tensor loss;        ///< scalar [] (f32, or f64 for f64 logits): mean over counted rows, 0 if none
  Tensor lse;         ///< [N] log-sum-exp of each row (f32, f64 for f64 logits), saved for backward
  int64_t count = 0;  ///< rows with target >= 0
};

/// logits [N, V] (float), targets [N] i32/i64; a target < 0 is ignored, a target >= V is an
/// InputError naming row and value. loss = (1/count) sum_{counted n} lse_n - logits[n, t_n].
/// host_targets (optional, CPU, the same values as targets): the range check and the count
/// read it instead of copying device targets back, so a CUDA forward does not wait for the GPU
/// (the trainer has every batch on the host already).
CrossEntropyOut cross_entropy(const Tensor& logits, const Tensor& targets,
                              const Tensor& host_targets = Tensor());

/// dlogits = scale * (softmax(logits) - onehot(target)) on counted rows, 0 on ignored rows;
/// `scale` is dloss / count (0 when count == 0). Recomputes softmax from logits and lse.
Tensor cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                              double scale);

}  // namespace lizard::ops
