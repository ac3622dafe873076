// Launcher of cuda/gemm.cu: batched GEMM through cuBLASLt (fp32 accumulation).
#pragma once
#include "lizard/core/cuda_runtime.h"
#include "lizard/core/tensor.h"

namespace lizard::cuda {

/// out[b] = op(a[b]) @ op(b[b]) for every batch index of `batch`. a and b are expanded to
/// [batch..., rows, cols] with row-major matrices (a batch stride may be 0); out contiguous.
/// dtypes: all f32, or all bf16 (fp32 accumulate). Runs on ctx's stream with its workspace.
void gemm_batched(const Tensor& a, const Tensor& b, Tensor& out, bool ta, bool tb,
                  const Shape& batch, Context& ctx);

}  // namespace lizard::cuda
