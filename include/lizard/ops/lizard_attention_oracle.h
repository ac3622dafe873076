// The CPU oracle of Lizard attention: the naive O(T^2) formulas of DESIGN.md section 2,
// forward and analytic backward, in f32 or f64. Every faster path is tested against it.
#pragma once
#include "lizard/ops/lizard_attention_types.h"

namespace lizard::ops {

/// y [B, T, H, D] (before o_proj), dtype of q (f32 or f64), CPU. Per query head h (kv head
/// h / (H/Hkv), gate index gh = 0 or h):
///   a_t = logsigmoid(x_t . w_g[gh] + b_g[gh]),  b_t = sum_{s<=t} a_s
///   phi_q = phi(q_t Wq[h]),  phi_k = phi(k_s Wk[h])
///   g_t = sum_{s<=t} e^{b_t-b_s} (phi_q.phi_k) v_s / max(sum_{s<=t} e^{b_t-b_s} phi_q.phi_k, eps)
///   l_t = sum_{t-w<s<=t} e^{c_ts} v_s / (sum_j e^{tau_j} + sum_{t-w<s<=t} e^{c_ts}),
///         c_ts = q~_t.k~_s / sqrt(D) (q~, k~ = RoPE(q, k) with window_rope, else q, k)
///   y_t = g_t + alpha l_t (sum) or (g_t + |alpha| l_t) / (1 + |alpha|) (convex);
///   y_t = g_t when w = 0 (no window branch; alpha unused, its gradient 0).
Tensor lizard_oracle_forward(const LizardConfig& cfg, const LizardInputs& in,
                             const LizardParams& p);

/// Gradients of sum(dy * y) with respect to q, k, v, x, wq, wk, w_g, b_g, tau, alpha, from the
/// same formulas (nothing saved: everything is recomputed). dy [B, T, H, D].
LizardGrads lizard_oracle_backward(const LizardConfig& cfg, const LizardInputs& in,
                                   const LizardParams& p, const Tensor& dy);

}  // namespace lizard::ops
