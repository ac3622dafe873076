// Launchers of cuda/reduce.cu.
#pragma once
#include "lizard/core/tensor.h"

namespace lizard::cuda {

/// out[r] = sum_c x[r, c] for contiguous x viewed as [rows, cols]; fp32 accumulation.
void row_sum(const Tensor& x, Tensor& out, int64_t rows, int64_t cols, void* stream);

}  // namespace lizard::cuda
