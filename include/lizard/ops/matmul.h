// Batched matrix multiply: the single GEMM entry point of the project.
#pragma once
#include <cstdint>

#include "lizard/core/tensor.h"

namespace lizard::ops {

/// out[..., M, N] = op(a)[..., M, K] @ op(b)[..., K, N], op = transpose when ta/tb.
/// Batch dims broadcast (b may be 2-D against a batched a, or the same batch dims).
/// CPU: f32/f64 through BLAS. CUDA: bf16 or f32 in, fp32 accumulate, cuBLASLt.
/// Every call counts once in gemm_count() (tests prove frozen weights cost no GEMM).
/// `alpha` scales the product inside the GEMM (cuBLASLt's alpha): no separate scaling pass.
Tensor matmul(const Tensor& a, const Tensor& b, bool ta = false, bool tb = false,
              double alpha = 1.0);

/// out = alpha * op(a) @ op(b) + c as ONE GEMM (cuBLASLt's D = alpha A B + beta C, beta = 1,
/// with C a separate input): no elementwise pass for a residual or a gradient sum. The sum is
/// formed in fp32 and rounded once to the output dtype. c has exactly the output's shape and
/// dtype (no broadcast) and is only read (it may alias a or b). Operands as matmul; the CPU
/// backend also takes bf16 here (computed in f32, rounded once: the CUDA contract).
/// Counts once in gemm_count().
Tensor matmul_add(const Tensor& a, const Tensor& b, const Tensor& c, double alpha = 1.0,
                  bool ta = false, bool tb = false);

/// c += alpha * op(a) @ op(b) in place (beta = 1 in the GEMM, D = C). c must have the output's
/// shape and dtype and be contiguous. When c shares storage with a or b the product is formed
/// out of place and copied in (correct, one extra copy). Counts once in gemm_count().
void matmul_add_(Tensor& c, const Tensor& a, const Tensor& b, double alpha = 1.0, bool ta = false,
                 bool tb = false);

/// out = alpha * op(a) @ op(b) written into `out` (beta = 0: its old contents are not read).
/// out has the product's shape and the operands' dtype and is row-major with unit inner stride,
/// its rows possibly further apart than their length: a column block of a wider matrix (one
/// adapter's slice of a fused LoRA gradient) is written in place, as the GEMM's ldc. out must
/// not share storage with a or b. Operands as matmul_add (row-strided operands are taken
/// without a copy by every entry point here). Counts once in gemm_count().
void matmul_out(Tensor& out, const Tensor& a, const Tensor& b, double alpha = 1.0, bool ta = false,
                bool tb = false);

/// Number of GEMMs issued by matmul since process start (all threads).
int64_t gemm_count();

}  // namespace lizard::ops
