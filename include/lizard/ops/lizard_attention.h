// Lizard attention, the host API: forward/backward dispatching on the device of q (CPU: the
// chunked reference, f32/f64; CUDA: the kernels of cuda/lizard_attention_*.cu), and the
// constant-memory recurrent decode with its prefill. Formulas: lizard_attention_oracle.h.
#pragma once
#include <cstdint>

#include "lizard/ops/lizard_attention_types.h"

namespace lizard::ops {

/// What the forward keeps for the backward. CPU: nothing beyond the inputs (the chunked
/// backward recomputes). CUDA: the per-chunk states and row statistics below, all f32.
struct LizardSaved {
  Tensor states;  ///< [B, H, NC, 2F, D+1] [S|z] before each chunk of C tokens (CUDA; undefined
                  ///< when LizardConfig::keep_states is false: the backward rebuilds them)
  Tensor numden;  ///< [B, H, T, D+1] [M | den]: M = num - den v_t (no self term), den (CUDA)
  Tensor wstats;  ///< [B, H, T, 2] window row max and denominator (CUDA)
  Tensor bl;      ///< [B, Hg, T] chunk-local cumulative log-gate (CUDA)
  Tensor z;       ///< [B, Hg, T] gate logits (CUDA)
  /// The tensor-core training forward's feature maps as bf16 hi + lo pairs, [B, H, T, 2F] each
  /// (phi + phi_lo is the f32 map to about 2^-17): kept with the states (keep_states), so the
  /// backward does not recompute them; undefined otherwise (f32 kernels, keep_states false).
  Tensor phiq, phiq_lo, phik, phik_lo;
  /// With them, the feature weights those maps came from as bf16 hi + lo pairs [H, D, F] (the
  /// backward's dx = du W^T reads the same pairs).
  Tensor wq_hi, wq_lo, wk_hi, wk_lo;
};

/// y [B, T, H, D] (dtype and device of q). `saved` (optional) receives what backward needs.
Tensor lizard_attention_forward(const LizardConfig& cfg, const LizardInputs& in,
                                const LizardParams& p, LizardSaved* saved = nullptr);

/// Gradients of sum(dy * y); `saved` from the forward of the same arguments (CPU ignores it).
/// `want`: which gradients the caller needs (the others may come back undefined).
LizardGrads lizard_attention_backward(const LizardConfig& cfg, const LizardInputs& in,
                                      const LizardParams& p, const LizardSaved& saved,
                                      const Tensor& dy, const LizardWants& want = {});

/// Recurrent state of one layer for decoding: constant memory in the sequence length.
struct LizardDecodeState {
  Tensor S;       ///< f32 [B, H, 2F, D+1]: [S | z], S_t = gamma_t S_{t-1} + phi_k(k_t) [v_t | 1]^T
  Tensor k_ring;  ///< f32 [B, w, Hkv, D] last w keys as the window sees them (RoPE applied)
  Tensor v_ring;  ///< f32 [B, w, Hkv, D] last w values; slot of position t is t % w
  int64_t pos = 0;  ///< tokens consumed so far (the position of the next token)
};

/// Empty state (no tokens seen) on the CPU.
LizardDecodeState lizard_decode_init(const LizardConfig& cfg, int64_t B, int64_t H, int64_t Hkv,
                                     int64_t D);

/// Runs the chunked forward over a prompt (T tokens) and returns the state after it; writes
/// the prompt's outputs to *y when given. cos/sin rows are positions 0..T-1.
LizardDecodeState lizard_prefill(const LizardConfig& cfg, const LizardInputs& in,
                                 const LizardParams& p, Tensor* y = nullptr);

/// One token per sequence: in.q [B, 1, H, D], in.k, in.v [B, 1, Hkv, D], in.x [B, 1, dm],
/// in.cos/sin [1, D/2] for position state.pos (window_rope only). Returns y [B, 1, H, D] in
/// the dtype of q and advances the state. Computes in f32 on the CPU (CUDA inputs are copied).
Tensor lizard_decode_step(const LizardConfig& cfg, LizardDecodeState& state,
                          const LizardInputs& in, const LizardParams& p);

}  // namespace lizard::ops
