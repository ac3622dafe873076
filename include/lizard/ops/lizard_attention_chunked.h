// The chunked Lizard attention on the CPU (DESIGN.md section 3): the algorithm of the CUDA
// kernels, in plain loops, proven against the oracle before any kernel runs.
#pragma once
#include "lizard/ops/lizard_attention_types.h"

namespace lizard::ops {

/// Same contract as lizard_oracle_forward, computed in chunks of C = cfg.chunk tokens with
/// the chunk-local cumulative log-gate bl (inclusive, so bl <= 0):
///   intra:  P = (phi_q phi_k^T) * exp(bl_t - bl_s) on the causal tile (exponent <= 0), P [V|1]
///   inter:  (phi_q * exp(bl_t)) [S|z]
///   carry:  [S|z] <- exp(bl_end) [S|z] + (phi_k * exp(bl_end - bl_s))^T [V|1]
/// Every exponent is <= 0: no overflow for any gate in (0, 1] and any T. The state [S|z]
/// (2F x (D+1) per head) is carried in the compute type (f32 for f32 inputs).
/// The window branch is the oracle's, restricted to t-w < s <= t.
/// If `final_state` is given it receives [B, H, 2F, D+1] (the decode state after token T-1).
Tensor lizard_chunked_forward(const LizardConfig& cfg, const LizardInputs& in,
                              const LizardParams& p, Tensor* final_state = nullptr);

/// Gradients by the chunked algorithm run backwards (the CUDA backward's blueprint):
/// per chunk, from the last, with the state gradient dS (2F x (D+1)) carried in reverse,
///   dphi_q_t = exp(bl_t) S_prev dO'_t + sum_{s<=t} exp(bl_t - bl_s) (dO'_t . V'_s) phi_k_s
///   dphi_k_s = exp(bl_end - bl_s) dS V'_s + sum_{t>=s} exp(bl_t - bl_s) (dO'_t . V'_s) phi_q_t
///   dS_prev  = exp(bl_end) dS + sum_t exp(bl_t) phi_q_t dO'_t^T
/// with V' = [v | 1], dO' = [dg / den, -(dg . g) / den] (0 where the clamp is active), and the
/// gate through b_t = sum a: db_t = phi_q_t . dphi_q_t - phi_k_t . dphi_k_t (the exponent
/// b_t - b_s enters every term as +t, -s), da = reverse cumsum of db.
LizardGrads lizard_chunked_backward(const LizardConfig& cfg, const LizardInputs& in,
                                    const LizardParams& p, const Tensor& dy);

}  // namespace lizard::ops
