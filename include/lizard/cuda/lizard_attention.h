// Launchers of cuda/lizard_attention_fwd.cu and cuda/lizard_attention_bwd.cu: Lizard
// attention on the GPU by the chunked algorithm of DESIGN.md section 3.
//
// Inputs (LizardInputs/LizardParams, all on one GPU, contiguous): q, k, v, x in bf16 (or f32);
// cos/sin f32; wq, wk, w_g, b_g, tau, alpha in f32 (or bf16; converted once per call).
// Everything is accumulated in f32; states are f32; the gate is log-space, chunk-local.
//
// Pipeline (one kernel each, in stream order):
//   gate      z = x.w_g + b_g, bl = chunk-local inclusive cumsum of logsigmoid(z)   [B,Hg,T]
//   features  phi_q, phi_k [B,H,T,2F] f32 from q, k and Wq, Wk (GQA: kv head h/(H/Hkv))
//   global    one CTA per (b, h, 32-column slice of [V|1]) walks the chunks in order carrying
//             its slice of [S|z] in shared memory; writes num/den [B,H,T,D+1] and (training)
//             the state before every chunk
//   window    one CTA per (b, h, 64-query tile): scores over t-w < s <= t and the sinks with
//             the row max over both, combines y = g + alpha l (or convex); saves row stats
// The backward mirrors it (reverse chunk sweep with dS, window backward with atomics into
// f32 dk/dv, feature-map and gate backward). Tile sizes are the constexprs of the .cu files.
#pragma once
#include "lizard/ops/lizard_attention.h"

namespace lizard::cuda {

/// y [B, T, H, D] like q. `saved` (optional, for training) receives states, numden, wstats,
/// bl, z (see ops::LizardSaved).
void lizard_attention_forward(const ops::LizardConfig& cfg, const ops::LizardInputs& in,
                              const ops::LizardParams& p, Tensor& y, ops::LizardSaved* saved,
                              void* stream);

/// Gradients of sum(dy * y); every gradient has its input's shape; dq, dk, dv, dx in the dtype
/// of q, parameter gradients in f32.
void lizard_attention_backward(const ops::LizardConfig& cfg, const ops::LizardInputs& in,
                               const ops::LizardParams& p, const ops::LizardSaved& saved,
                               const Tensor& dy, ops::LizardGrads& g, void* stream);

}  // namespace lizard::cuda
