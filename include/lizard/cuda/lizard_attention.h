// Launchers of cuda/lizard_attention_fwd.cu and cuda/lizard_attention_bwd.cu: Lizard
// attention on the GPU by the chunked algorithm of DESIGN.md section 3.
//
// Inputs (LizardInputs/LizardParams, all on one GPU, contiguous): q, k, v, x in bf16 (or f32);
// cos/sin f32; wq, wk, w_g, b_g, tau, alpha in f32 (or bf16; converted once per call).
// Everything is accumulated in f32; states are f32; the gate is log-space, chunk-local.
//
// Pipeline for bf16 inputs with D, F multiples of 16, D <= 128, 2F <= 256 (tensor cores,
// cuda/lizard_attention_tc.cu; bf16 mma operands, f32 accumulators and states):
//   gate      z = x.w_g + b_g, bl = chunk-local inclusive cumsum of logsigmoid(z)   [B,Hg,T]
//   features  phi_q, phi_k [B,H,T,2F] bf16: u = x W_h by mma, the map in f32
//   state     one CTA per (b, h, 64 or 32 state rows) walks the chunks, [S|z] in fragments, writes
//             the state before every chunk [B,H,NC,2F,D+1] f32
//   output    one CTA per (b, h, chunk): P = phi_q phi_k^T decayed, (phi_q e^bl) S + P V
//             -> numden [B,H,T,D+1]
//   window    one CTA per (b, h, 32 queries): scores over t-w < s <= t and the sinks (mma),
//             y = g + alpha l (or convex); wstats (falls back to the row kernel for w = 0 or
//             windows whose keys do not fit shared memory, about w > 400 at D = 128)
// Backward: window query side (dO' = [dg/den, dden], cself, dq) and key side (dk, dv per kv
// head, no atomics), reverse dS sweep (the state kernel again), one CTA per chunk for
// dphi_q, dphi_k, dv and the log-gate gradient da (pairs crossing each token, no sequence-long
// reverse cumsum), feature-map backward with dW in fragments (u recomputed from W as a bf16
// hi+lo pair), gate. LIZARD_ATTENTION_TC_OFF=window_bwd,state_bwd,grad,features_bwd (or bwd)
// replaces single backward stages by their f32 counterparts (bisection).
// f32 inputs and other shapes take the f32 CUDA-core kernels of lizard_attention_fwd/bwd.cu
// (one CTA per (b, h, 32 columns of [V|1]) carrying its slice of [S|z]); both paths write the
// same saved tensors. Chunk length kChunk = 32 (lizard_attention_common.cuh).
#pragma once
#include "lizard/ops/lizard_attention.h"

namespace lizard::cuda {

/// Which kernels lizard_attention_forward/backward take for these arguments, in training
/// (forward with saved tensors + backward) or inference (forward alone): {global branch on
/// tensor cores, window branch on tensor cores}. Both false for f32 inputs, unsupported shapes
/// and LIZARD_ATTENTION_KERNELS=f32 (the exact f32 CUDA-core kernels); otherwise training takes
/// the tensor cores like inference (phi and the gradient-sensitive operands as bf16 hi + lo
/// pairs, issue #5). Lets tests prove which path they exercised.
struct LizardKernelPath {
  bool global_tc = false;
  bool window_tc = false;
  /// State rows per CTA of the global branch's mma.sync forward state sweep (32 or 64, the
  /// same bits either way: LIZARD_STATE_ROWS or the grid size; the reverse sweep takes 64
  /// unless forced); 0 when they do not run.
  int state_rows = 0;
};
LizardKernelPath lizard_attention_kernel_path(const ops::LizardConfig& cfg,
                                              const ops::LizardInputs& in,
                                              const ops::LizardParams& p, bool training = true);

/// y [B, T, H, D] like q. `saved` (optional, for training) receives states, numden, wstats,
/// bl, z (see ops::LizardSaved).
void lizard_attention_forward(const ops::LizardConfig& cfg, const ops::LizardInputs& in,
                              const ops::LizardParams& p, Tensor& y, ops::LizardSaved* saved,
                              void* stream);

/// Gradients of sum(dy * y); every gradient has its input's shape; dq, dk, dv, dx in the dtype
/// of q, parameter gradients in f32. Those `want` leaves out are undefined (and their
/// own work skipped).
void lizard_attention_backward(const ops::LizardConfig& cfg, const ops::LizardInputs& in,
                               const ops::LizardParams& p, const ops::LizardSaved& saved,
                               const Tensor& dy, ops::LizardGrads& g, void* stream,
                               const ops::LizardWants& want = {});

}  // namespace lizard::cuda
