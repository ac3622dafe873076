// Launcher of cuda/sparse_rows.cu (the row gather is cuda::embedding_forward).
#pragma once
#include "lizard/core/tensor.h"

namespace lizard::cuda {

/// dst[ids[i], :] += rows[i, :] (f32 arithmetic, one rounding to dst's dtype) for i < n.
/// dst [V, D], rows [n, D] (dst's dtype: f32, bf16 or f16), ids i32 [n], all contiguous on one
/// GPU. Ids must be unique (no atomics); ids outside [0, V) are skipped.
void scatter_add_rows(Tensor& dst, const Tensor& ids, const Tensor& rows, void* stream);

}  // namespace lizard::cuda
