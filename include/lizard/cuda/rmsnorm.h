// Launchers of cuda/rmsnorm.cu. x viewed as [N, D] contiguous; bf16 or f32 storage, fp32 math.
#pragma once
#include "lizard/core/tensor.h"

namespace lizard::cuda {

/// y = x * rstd * w, rstd[n] = 1 / sqrt(mean_d x[n,d]^2 + eps). rstd is f32 [N] (saved).
void rmsnorm_forward(const Tensor& x, const Tensor& w, double eps, Tensor& y, Tensor& rstd,
                     void* stream);
/// dx = rstd * (w*dy - x * rstd^2 * mean_d(w*dy*x)) [+ acc]; dw (f32 [D], overwritten) =
/// sum_n dy*x*rstd. dw is reduced deterministically (fixed order). Either output may be
/// undefined (not computed). `acc` (optional, contiguous, like x) is added to dx in fp32 before
/// its one rounding; it is only read and must not overlap dx.
void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                      Tensor& dx, Tensor& dw, void* stream, const Tensor& acc = Tensor());

}  // namespace lizard::cuda
