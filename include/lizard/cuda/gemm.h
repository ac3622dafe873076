// Launcher of cuda/gemm.cu: batched GEMM through cuBLASLt (fp32 accumulation).
#pragma once
#include "lizard/core/cuda_runtime.h"
#include "lizard/core/tensor.h"

namespace lizard::cuda {

/// out[b] = op(a[b]) @ op(b[b]) for every batch index of `batch`. a and b are expanded to
/// [batch..., rows, cols] with row-major matrices (a batch stride may be 0); out has the batch
/// dims too. Every matrix (out included) has unit inner stride; its rows may be further apart
/// than their length (the layout's leading dimension), e.g. a column block of a wider matrix.
/// dtypes: all f32, or all bf16 (fp32 accumulate). Runs on ctx's stream with its workspace.
/// With `c` set: out = alpha * op(a) op(b) + c in the GEMM's epilogue (beta = 1); c with out's
/// shape, dtype and strides, and may be out itself (in place). Without: out = alpha * op(a) op(b).
void gemm_batched(const Tensor& a, const Tensor& b, Tensor& out, bool ta, bool tb,
                  const Shape& batch, Context& ctx, float alpha = 1.f,
                  const Tensor* c = nullptr);

}  // namespace lizard::cuda
