// Launchers of cuda/embedding.cu.
#pragma once
#include "lizard/core/tensor.h"

namespace lizard::cuda {

/// out[n, :] = weight[ids[n], :]; weight [V, D], ids i32 [N], out [N, D] (weight's dtype).
void embedding_forward(const Tensor& weight, const Tensor& ids, Tensor& out, void* stream);
/// dweight (f32 [V, D], overwritten) = sum over n with ids[n] = v of dy[n, :].
/// Deterministic: rows are summed in order of n regardless of scheduling.
void embedding_backward(const Tensor& dy, const Tensor& ids, Tensor& dweight, void* stream);

}  // namespace lizard::cuda
