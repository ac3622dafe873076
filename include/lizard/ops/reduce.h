// Reductions over axes. CPU accumulates in double for f32 inputs.
#pragma once
#include <vector>

#include "lizard/core/tensor.h"

namespace lizard::ops {

/// Sum over `dims` (negative allowed; empty = all dims). keepdim keeps size-1 dims.
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
/// Mean over `dims`.
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
/// The backward of sum: dy broadcast back to `shape` (dy has the reduced shape).
Tensor sum_backward(const Tensor& dy, const Shape& shape, const std::vector<int64_t>& dims,
                    bool keepdim);

}  // namespace lizard::ops
