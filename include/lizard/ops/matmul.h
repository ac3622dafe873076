// Batched matrix multiply: the single GEMM entry point of the project.
#pragma once
#include <cstdint>

#include "lizard/core/tensor.h"

namespace lizard::ops {

/// out[..., M, N] = op(a)[..., M, K] @ op(b)[..., K, N], op = transpose when ta/tb.
/// Batch dims broadcast (b may be 2-D against a batched a, or the same batch dims).
/// CPU: f32/f64 through BLAS. CUDA: bf16 or f32 in, fp32 accumulate, cuBLASLt.
/// Every call counts once in gemm_count() (tests prove frozen weights cost no GEMM).
Tensor matmul(const Tensor& a, const Tensor& b, bool ta = false, bool tb = false);

/// Number of GEMMs issued by matmul since process start (all threads).
int64_t gemm_count();

}  // namespace lizard::ops
