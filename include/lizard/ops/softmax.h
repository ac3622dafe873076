// Softmax and log-softmax over the last dim (row max subtracted: no overflow).
// CPU: f32/f64. CUDA: cuda::softmax_forward/backward.
#pragma once
#include "lizard/core/tensor.h"

namespace lizard::ops {

/// y = exp(x - max) / sum(exp(x - max)) per row of the last dim. x [..., C], C >= 1.
Tensor softmax(const Tensor& x);
/// y = x - max - log(sum(exp(x - max))) per row.
Tensor log_softmax(const Tensor& x);
/// From the saved output y: dx = y * (dy - sum(dy * y)).
Tensor softmax_backward(const Tensor& dy, const Tensor& y);
/// From the saved output y: dx = dy - exp(y) * sum(dy).
Tensor log_softmax_backward(const Tensor& dy, const Tensor& y);

}  // namespace lizard::ops
