// Several LoRA adapters of one rank on one input (an attention layer's q, k and v), their
// down-projections fused: z = x [A_0; ...; A_{n-1}]^T is ONE GEMM (K = in, N = n r) forward,
// and backward one dA_cat = dz^T x and one dx += dz A_cat (K = n r, the engine's running dx
// sum in the GEMM's epilogue), instead of n of each. Each adapter's up-projection reads its
// column block of z in place (the GEMM's leading dimension) and writes its block of dz in place,
// so no slice, concat or add kernel runs. The products are the unfused ones (x A_p^T, s t B_p^T,
// s G_p B_p, s G_p^T t, dt^T x, dt A_p); only cuBLAS's f32 summation order may differ, and dx
// is rounded once instead of once per adapter.
#pragma once
#include <vector>

#include "lizard/autograd/variable.h"

namespace lizard::autograd {

/// y_p = base_p + scale (x A_p^T) B_p^T for p = 0..n-1: x [N, in], A_p [r, in] (one r for all),
/// B_p [out_p, r], base_p [N, out_p] (undefined: no base term). All of one dtype and device.
/// `a_cat`, when defined and is_row_split(a_cat, the A_p's data), is the [n r, in] buffer the
/// A_p's are row views of: the fused down-projection reads it in place; otherwise the A_p's
/// are concatenated (one copy per call). Saves z [N, n r] (when some B_p trains), x (when some
/// A_p trains) and A_cat (when x needs a gradient); the A_p's gradients are row views of one
/// dA_cat buffer, kept by the leaves without copies (Node::grad_is_private). A base_p's gradient
/// is the incoming gradient of y_p itself.
std::vector<Var> lora_fused(const Var& x, const std::vector<Var>& a, const std::vector<Var>& b,
                            const std::vector<Var>& base, double scale,
                            const Tensor& a_cat = Tensor());

/// True when `parts` are consecutive row blocks of the 2-D contiguous `whole`, in order and
/// covering all of it (the same storage, dtype and columns).
bool is_row_split(const Tensor& whole, const std::vector<Tensor>& parts);

}  // namespace lizard::autograd
