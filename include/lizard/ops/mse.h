// Mean squared error, the stage-1 attention-transfer loss. Built on the elementwise and reduce
// ops, so it runs wherever they do.
#pragma once
#include "lizard/core/tensor.h"

namespace lizard::ops {

/// mean((a - b)^2) over all elements, a scalar [] of a's dtype; a and b of the same shape.
Tensor mse(const Tensor& a, const Tensor& b);
/// da = dloss * 2 (a - b) / numel (db = -da). dloss is a one-element tensor.
Tensor mse_backward(const Tensor& dloss, const Tensor& a, const Tensor& b);

}  // namespace lizard::ops
