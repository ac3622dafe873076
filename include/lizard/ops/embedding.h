// Embedding lookup (token ids -> rows of a table) and its deterministic backward.
// CPU: f32/f64. CUDA: cuda::embedding_forward/backward (ids converted to i32 there).
#pragma once
#include "lizard/core/tensor.h"

namespace lizard::ops {

/// out[..., :] = weight[ids[...], :]. weight [V, D] (float), ids i32 or i64 of any shape
/// (a scalar included); out has shape ids.shape() + [D] and weight's dtype.
/// An id outside [0, V) throws InputError naming the id, its position and V.
Tensor embedding(const Tensor& weight, const Tensor& ids);

/// dweight [V, D] = sum over positions n with ids[n] = v of dy[n, :], summed in order of n
/// (deterministic). dy [..., D] with ids' shape as prefix. CPU: dy's dtype; CUDA: f32.
Tensor embedding_backward(const Tensor& dy, const Tensor& ids, int64_t vocab_size);

}  // namespace lizard::ops
