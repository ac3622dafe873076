// Ops that move elements without arithmetic.
#pragma once
#include <vector>

#include "lizard/core/tensor.h"

namespace lizard::ops {

/// Concatenates along dim; all other dims, the dtype and the device must match.
Tensor concat(const std::vector<Tensor>& xs, int64_t dim);
/// The backward of x.slice(dim, start, end, step): zeros of `shape` with dy in that slice.
Tensor slice_backward(const Tensor& dy, const Shape& shape, int64_t dim, int64_t start,
                      int64_t end, int64_t step);

}  // namespace lizard::ops
