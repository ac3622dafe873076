// Launchers of cuda/softmax.cu: row softmax / log-softmax over the last dim of [N, C].
#pragma once
#include "lizard/core/tensor.h"

namespace lizard::cuda {

/// y = softmax(x) (or log_softmax when log) per row, fp32 math.
void softmax_forward(const Tensor& x, bool log, Tensor& y, void* stream);
/// softmax: dx = y * (dy - sum(dy*y)); log_softmax: dx = dy - exp(y) * sum(dy).
void softmax_backward(const Tensor& dy, const Tensor& y, bool log, Tensor& dx, void* stream);

}  // namespace lizard::cuda
