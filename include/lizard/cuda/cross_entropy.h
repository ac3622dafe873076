// Launchers of cuda/cross_entropy.cu: cross-entropy fused with log-softmax. Handles a 128K
// vocabulary without materialising fp32 probabilities (one pass for the row max and sum,
// the backward recomputes softmax from logits and the saved log-sum-exp).
#pragma once
#include "lizard/core/tensor.h"

namespace lizard::cuda {

/// logits [N, V] (bf16/f32), targets i32 [N] (negative = ignored). loss_rows f32 [N]
/// (0 for ignored rows) = lse - logit[target]; lse f32 [N] saved for backward.
void cross_entropy_forward(const Tensor& logits, const Tensor& targets, Tensor& loss_rows,
                           Tensor& lse, void* stream);
/// dlogits = scale * (softmax(logits) - onehot(target)) for counted rows, 0 for ignored rows;
/// scale = dloss / count. dlogits has logits' dtype and may alias logits.
void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                            float scale, Tensor& dlogits, void* stream);

}  // namespace lizard::cuda
