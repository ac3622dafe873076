// RMSNorm over the last dim: y = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps).
// CPU: f32/f64. CUDA: cuda::rmsnorm_forward/backward (bf16 or f32 storage, fp32 math).
#pragma once
#include "lizard/core/tensor.h"

namespace lizard::ops {

struct RmsNormOut {
  Tensor y;     ///< like x
  Tensor rstd;  ///< [N] with N = x.numel() / D: f32, or f64 for an f64 x (the CPU oracle)
};

/// x [..., D], w [D] (x's dtype). Saved for backward by the autograd node: x, w, rstd.
RmsNormOut rmsnorm(const Tensor& x, const Tensor& w, double eps);

struct RmsNormGrads {
  Tensor dx;  ///< like x; undefined when !need_dx
  Tensor dw;  ///< [D]; f32 on CUDA, x's dtype on CPU; undefined when !need_dw (CPU only skips it)
};

/// dx = rstd * (w*dy - x * rstd^2 * mean_d(w*dy*x)) [+ dx_acc]; dw = sum_n dy * x * rstd.
/// Gradients not asked for are skipped (a frozen norm weight costs no reduction kernels).
/// `dx_acc` (optional; x's shape, dtype and device; needs need_dx) is a running gradient sum
/// the caller already holds for x (the residual stream's share): it is added to dx in the
/// same pass, before dx's single rounding to x's dtype, and is only read (dx is a new tensor).
/// CPU: f32/f64, and bf16 as the reference of the CUDA rounding contract (f64 math, one
/// rounding); CUDA: bf16 or f32 storage, fp32 math, one rounding.
RmsNormGrads rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w,
                              const Tensor& rstd, bool need_dx = true, bool need_dw = true,
                              const Tensor& dx_acc = Tensor());

}  // namespace lizard::ops
