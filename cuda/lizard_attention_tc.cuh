// Private launchers of the tensor-core (bf16 mma, f32 accumulate) Lizard attention,
// cuda/lizard_attention_tc.cu (the global branch; the feature maps, split_bf16 and widen_pair:
// cuda/lizard_features_tc.cu; the window branch: cuda/lizard_window_mma.cu). Used by
// cuda/lizard_attention_fwd.cu and _bwd.cu for bf16 inputs when tc_supported() holds;
// everything else keeps the f32 CUDA-core kernels.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "lizard/core/env.h"  // env_switch: the kernel switches below
#include "lizard/ops/lizard_attention_types.h"
#include "lizard_attention_common.cuh"

namespace lizard::cuda {
class StreamFork;  // side_stream.cuh
}

namespace lizard::cuda::lizard_detail {

/// The kernels' scalars of a call (cuda/lizard_attention_fwd.cu): the checked dims, the config's
/// switches resolved.
Dims make_dims(const ops::LizardConfig& cfg, const ops::LizardDims& ld);

/// Whether a call may take the tensor-core kernels. Default: yes, inference and training
/// alike: training keeps phi and the operands the saved statistics and gate gradients are
/// sensitive to as bf16 hi + lo pairs (issue #5), so its gradients are those of the f32 phi
/// (within 1e-2 of the oracle, like the f32 kernels). LIZARD_ATTENTION_KERNELS=f32 forces
/// the exact f32 CUDA-core kernels everywhere, =tc the tensor cores (the default). Read per
/// call; `training` is kept so a path can again differ by it.
bool tc_enabled(bool training);

/// Whether the tensor-core backward stage `name` is replaced by its f32 counterpart, from the
/// comma list in LIZARD_ATTENTION_TC_OFF (a bisection switch; read per call). Names:
/// window_bwd (window_bwd_tc_launch -> window_bwd_kernel), state_bwd (dstate_tc_launch -> an
/// f32 reverse sweep), grad (grad_tc_launch -> global_bwd_kernel, which sweeps dS itself, so
/// state_bwd no longer matters), features_bwd (features_bwd_tc_launch -> features_bwd_kernel
/// and feature_weight_grad_kernel); `bwd` turns all of them off. Throws InputError naming the
/// variable for any other name.
bool tc_stage_off(const char* name);

/// Shapes the tensor-core kernels cover: D and F multiples of 16 (whole 16x16x16 tiles),
/// D <= 128 (accumulator fragments held in registers by the state kernel), 2F <= 256 (shared
/// memory of the output kernel).
bool tc_supported(const Dims& d);

/// phi [B,H,T,2F] bf16 = map(x W_h) for x [B,T,Hx,D] bf16 (GQA: head h reads x head
/// h/(H/Hx)) and W [H,D,F] bf16; u = x W on tensor cores with f32 accumulation, the map in f32.
/// Wlo (null, or W's f32 value minus W, see split_bf16_launch) adds x Wlo: u to about f32
/// accuracy at twice the mma work (the backward: the exp map's arg-max and phi match the
/// f32 weights). phi_lo (null, or like phi; training): bf16(phi_f32 - phi), so phi + phi_lo
/// is the f32 map to about 2^-17 relative (split2); deterministic, so the backward's
/// recompute gives the forward's pair bit for bit.
void features_tc_launch(const __nv_bfloat16* x, int Hx, const __nv_bfloat16* W,
                        const __nv_bfloat16* Wlo, __nv_bfloat16* phi, __nv_bfloat16* phi_lo,
                        const Dims& d, cudaStream_t s);

/// out [n] f32 = hi + lo for a split bf16 pair (phi and phi_lo of features_tc_launch): the
/// f32 phi the f32 stages of a tensor-core run read (LIZARD_ATTENTION_TC_OFF).
void widen_pair_launch(const __nv_bfloat16* hi, const __nv_bfloat16* lo, float* out, int64_t n,
                       cudaStream_t s);

/// hi = bf16(w), lo = bf16(w - hi) for n f32 values: a bf16 pair carrying w to about 2^-17.
void split_bf16_launch(const float* w, __nv_bfloat16* hi, __nv_bfloat16* lo, int64_t n,
                       cudaStream_t s);

/// states [B,H,NC,2F,D+1] f32: [S|z] before every chunk of kChunk tokens (each chunk's
/// block in the layout of state_index, lizard_attention_common.cuh: S rows of D, then z),
/// S <- exp(bl_end) S + (phi_k exp(bl_end - bl_s))^T [V|1], every factor <= 1.
/// phik [B,H,T,2F] bf16, v [B,T,Hkv,D] bf16, bl [B,Hg,T] chunk-local cumulative log-gate.
/// split (training): phi_k = phik + phik_lo (required), the decayed phi_k as a bf16 hi + lo
/// pair (2 mma's), the states to about 2^-16 relative of their exact value for the f32 phi;
/// else phik alone (phik_lo ignored), the decayed phi_k rounded to bf16 (2^-9 per weight:
/// inference, where only y matters).
void state_tc_launch(const __nv_bfloat16* phik, const __nv_bfloat16* phik_lo,
                     const __nv_bfloat16* v, const float* bl, float* states, bool split,
                     const Dims& d, cudaStream_t s);

/// numden [B,H,T,D+1] f32 = [M | den] exactly as global_fwd_kernel defines them (M = num -
/// den v_t with the self pair left out of M), one CTA per (b, h, chunk), from the states.
/// split (training): phi = hi + lo (phiq_lo, phik_lo required), P~, phi_q exp(bl_t) and S as
/// bf16 hi + lo pairs, numden to about 2^-16 relative of its exact value for the f32 phi (M
/// and den from the same weights, so the backward's identities hold); else phiq, phik alone
/// and bf16 operands (2^-9 per weight: inference; the lo pointers are ignored).
void out_tc_launch(const __nv_bfloat16* phiq, const __nv_bfloat16* phiq_lo,
                   const __nv_bfloat16* phik, const __nv_bfloat16* phik_lo,
                   const __nv_bfloat16* v, const float* bl, const float* states, float* numden,
                   bool split, const Dims& d, cudaStream_t s);

/// Whether LIZARD_OUT_KERNEL=wmma selects the wmma output kernel of lizard_attention_tc.cu
/// (out_tc_kernel: the whole bf16 state in shared memory, one CTA per SM) instead of the
/// register-resident mma.sync kernel of lizard_global_out_mma.cu (unset, empty or "mma": the
/// default). Kept, now that the new kernel passed on an H200, as what the GPU tests compare it against. Read per call;
/// throws InputError naming the variable for any other value.
bool out_wmma_forced();

/// Whether out_tc_launch takes the mma.sync kernel for d: D in {32, 64, 128} (template
/// instances; other D keep the wmma kernel), F a multiple of 16 with 2F <= 256, and not
/// out_wmma_forced().
bool out_mma_selected(const Dims& d);

/// out_tc_launch on the mma.sync kernel (same contract); needs out_mma_selected(d).
void out_mma_launch(const __nv_bfloat16* phiq, const __nv_bfloat16* phiq_lo,
                    const __nv_bfloat16* phik, const __nv_bfloat16* phik_lo,
                    const __nv_bfloat16* v, const float* bl, const float* states, float* numden,
                    bool split, const Dims& d, cudaStream_t s);

/// Whether window_tc_launch and window_bwd_tc_launch (the mma.sync kernels of
/// lizard_window_mma.cu) cover d: tc_supported, w > 0 and D in {32, 64, 128} (their template
/// instances); any window length (the key tiles stream through shared memory). Other shapes
/// take the f32 window kernels.
bool tc_window_supported(const Dims& d);

/// Window branch and combine on tensor cores, the same outputs as window_fwd_kernel: y
/// [B,T,H,D] bf16 = combine(g from numden, l), wstats [B,H,T,2] = (row max, denominator).
/// cos/sin [T, D/2] f32 (window_rope only, else null), tau f32 (null when no sinks).
/// split (training): the window weights as bf16 hi + lo pairs and the denominator from the f32
/// weights, so wstats are the f32 statistics of the scores the backward recomputes (weights
/// sum to 1 to f32 level); else bf16 weights (2^-9 each: inference). Needs
/// tc_window_supported (throws Error naming the head dim otherwise).
void window_tc_launch(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
                      const float* cosb, const float* sinb, const float* tau, const float* alpha,
                      const float* numden, __nv_bfloat16* y, float* wstats, bool split,
                      const Dims& d, cudaStream_t s);

/// Window and combine backward on tensor cores, the outputs of window_bwd_kernel: writes dO'
/// [B,H,T,D+1], cself [B,H,T], delta [B,H,T] (dl.l, scratch), and (dO_hi, dO_lo non-null) dO'
/// without its den column as the bf16 pair dstate_tc_launch reads [B,H,T,D]; stores the window
/// parts into dq [B,T,H,D], dk, dv [B,T,Hkv,D] f32 (every row < T written, none read: they
/// need no zeroing; it must be their first writer, before the global branch's adds) and adds
/// dtau, dalpha
/// (atomics; either null: not wanted, e.g. frozen sinks and alpha in stage 2, its atomics
/// skipped). dk and dv both null: the key side (win_bwd_k_kernel, whose only outputs they
/// are) is skipped, e.g. in distillation, where no input gradient is wanted. dq null: the
/// query side skips its dq~ = dC K~ pass (the second sweep over the key tiles: scores, mma's,
/// stores); dO', cself, delta and dk, dv keep their bits, and dtau, dalpha the same per-CTA
/// partials (their atomics' order across CTAs varies anyway). Needs tc_window_supported.
/// keys_fork (optional, not yet forked): forked after the query side is queued, and the key
/// side goes to its side stream, to overlap what the caller queues next on s (the caller joins
/// before anything reads dk or dv, and keeps every buffer alive until then).
void window_bwd_tc_launch(const __nv_bfloat16* q, const __nv_bfloat16* k,
                          const __nv_bfloat16* v, const float* cosb, const float* sinb,
                          const float* tau, const float* alpha, const float* numden,
                          const float* wstats, const __nv_bfloat16* dy, float* dO,
                          float* cself, __nv_bfloat16* dO_hi, __nv_bfloat16* dO_lo, float* delta,
                          float* dq, float* dk, float* dv, float* dtau, float* dalpha,
                          const Dims& d, cudaStream_t s, StreamFork* keys_fork = nullptr);

/// Feature-map backward: dx [B,T,Hx,D] f32 += du W_h^T (atomics when atomic_dx: keys are
/// shared by the heads of a GQA group). dx_out (non-null only without atomic_dx, where the
/// rows are owned): the final gradient bf16(dx + du W^T) [B,T,Hx,D] goes there instead, one
/// round-to-nearest of the same f32 sum that dx would hold (dx is read, not written), so no
/// f32 -> bf16 pass over dx follows. dW [H,D,F] f32 += sum over tokens of x^T du (dW must be
/// zeroed by the caller; null: no weight gradient, the feature maps are frozen). dx and dx_out
/// both null: no input gradient wanted (stage-1 distillation): the split kernels then skip
/// the old dx rows' loads, the du W^T mma and every dx store or atomic, and dW keeps the bits
/// of a call with dx (du is the same code; dW's cross-CTA f32 atomics keep their split, not
/// their order); the fused kernel (LIZARD_FEATURES_BWD_KERNEL=old) accumulates into a zeroed
/// scratch dx instead. dx_out needs dx; dx or dW must be non-null. dphi
/// [B,H,T,2F] f32; u = x (W + Wlo) and the map are recomputed
/// (Wlo as in features_tc_launch, may be null): with bf16 W alone, the exp map's arg-max
/// (which takes the max's gradient) differs from the f32 weights' at near ties.
void features_bwd_tc_launch(const __nv_bfloat16* x, int Hx, const __nv_bfloat16* W,
                            const __nv_bfloat16* Wlo, const float* dphi, float* dx,
                            bool atomic_dx, float* dW, const Dims& d, cudaStream_t s,
                            __nv_bfloat16* dx_out = nullptr);

/// Whether LIZARD_FEATURES_BWD_KERNEL=old selects the fused feature backward of
/// lizard_features_tc.cu (features_bwd_mma_kernel: dW in registers, 8 warps per SM) instead of
/// the split kernels of lizard_features_bwd_mma.cu (unset, empty or "new": the default). Kept
/// until a GPU run has compared them. Read per call; throws InputError naming the variable for
/// any other value.
bool features_bwd_old_forced();

/// features_bwd_tc_launch on the split kernels (same contract, same operand bits; dW's f32
/// sums over tokens and the GQA atomics of dx in another order): du and dx = du W^T in one
/// kernel, dW = x^T du in a second; a du workspace of H * B * T * F bf16 for the call. Null
/// dx: the first kernel's instantiation without dx (du only).
void features_bwd_mma_launch(const __nv_bfloat16* x, int Hx, const __nv_bfloat16* W,
                             const __nv_bfloat16* Wlo, const float* dphi, float* dx,
                             bool atomic_dx, float* dW, const Dims& d, cudaStream_t s,
                             __nv_bfloat16* dx_out = nullptr);

/// dstates [B,H,NC,2F,D+1] f32 (the layout of the states): the gradient of the state after
/// chunk c, dX <- exp(bl_end) dX
/// + (phi_q exp(bl_t))^T dO', swept from the last chunk; dO' [B,H,T,D+1] = [dg/den | dden].
/// phi_q = phiq + phiq_lo (required; the f32 phi), split products: about 2^-16 relative.
/// dO_hi, dO_lo [B,H,T,D] bf16: dO' without its den column as the pair hi = bf16(dO'), lo =
/// bf16(dO' - hi) (window_bwd_tc_launch writes it, split_rows_launch makes it from dO' where
/// the f32 window kernel ran): the mma.sync sweep reads those tiles instead of converting the
/// f32 rows in every CTA (state_mma_selected: required then); the wmma sweep ignores them.
void dstate_tc_launch(const __nv_bfloat16* phiq, const __nv_bfloat16* phiq_lo, const float* dO,
                      const __nv_bfloat16* dO_hi, const __nv_bfloat16* dO_lo, const float* bl,
                      float* dstates, const Dims& d, cudaStream_t s);

/// hi [rows][D] = bf16(x), lo = bf16(x - hi) of the first D columns of x [rows][D+1] f32 (the
/// dO' pair of dstate_tc_launch).
void split_rows_launch(const float* x, __nv_bfloat16* hi, __nv_bfloat16* lo, int64_t rows, int D,
                       cudaStream_t s);

/// The global branch's gradients per chunk (see grad_tc_kernel): writes dphiq, dphik
/// [B,H,T,2F] f32; adds into dv [B,T,Hkv,D] f32 and into da [B,Hg,T] f32 the gradient of the
/// log-gate a_t itself (not of the cumulative b, as global_bwd_kernel's db: no reverse cumsum
/// follows). dstates as dstate_tc_launch writes them. phi = hi + lo (phiq_lo, phik_lo
/// required): da to the f32 accuracy of its pair sums (the gradient at the f32 phi),
/// dphi and dv within a few 2^-9 relative (bf16 E, P and decayed phi_k operands).
/// dv may be null (not wanted: stage-1 distillation, issue #11): every kernel then skips the
/// work whose only output is dv (the mma kernel: an instance without the P tile, the dS hi
/// staging, the decayed phi_k, the dv mma's and atomics); dphiq, dphik and each CTA's da
/// contribution are the same bits as with dv (the same operations in the same order).
void grad_tc_launch(const __nv_bfloat16* phiq, const __nv_bfloat16* phiq_lo,
                    const __nv_bfloat16* phik, const __nv_bfloat16* phik_lo,
                    const __nv_bfloat16* v, const float* bl, const float* states,
                    const float* dstates, const float* dO, const float* cself, float* dphiq,
                    float* dphik, float* dv, float* da, const Dims& d, cudaStream_t s);

/// Whether state_tc_launch / dstate_tc_launch take the register-resident mma.sync sweeps of
/// cuda/lizard_global_state_mma.cu: D in {32, 64, 128} (template instances), F % 16 == 0,
/// 2F <= 256, and LIZARD_STATE_KERNEL not "wmma" (unset, empty or "mma": the default; kept as
/// what the GPU tests compare the new sweeps against). Read per call; throws InputError
/// naming the variable for any other value.
bool state_mma_selected(const Dims& d);

/// State rows per CTA the mma.sync sweeps take for d, 32 or 64 (the outputs are the same bits
/// either way): LIZARD_STATE_ROWS=32|64 for both sweeps, or unset / empty: 32 when the
/// 64-row grid (B H ceil(2F / 64) CTAs) is under two CTAs per SM of the current device and the
/// 32-row grid of the reverse sweep fits on the SMs at once, else 64, for both sweeps (one
/// rule since the reverse reads dO' as a bf16 pair). Read per call; throws InputError naming
/// the variable for any other value (and LIZARD_STATE_COLS').
int state_mma_rows(const Dims& d);

/// state_tc_launch on the mma.sync sweep (same contract, same operand bits, f32 sums in
/// another order); needs state_mma_selected(d) and 16-byte aligned pointers.
void state_mma_launch(const __nv_bfloat16* phik, const __nv_bfloat16* phik_lo,
                      const __nv_bfloat16* v, const float* bl, float* states, bool split,
                      const Dims& d, cudaStream_t s);

/// dstate_tc_launch on the mma.sync sweep (same contract, dO_hi and dO_lo required); needs
/// state_mma_selected(d).
void dstate_mma_launch(const __nv_bfloat16* phiq, const __nv_bfloat16* phiq_lo, const float* dO,
                       const __nv_bfloat16* dO_hi, const __nv_bfloat16* dO_lo, const float* bl,
                       float* dstates, const Dims& d, cudaStream_t s);
/// Whether LIZARD_GRAD_KERNEL=wmma selects grad_tc_kernel (lizard_attention_tc.cu) instead of
/// the mma.sync gradient kernel of lizard_global_grad_mma.cu (unset, empty or "mma": the
/// default, two CTAs per chunk; "mma16" / "mma8": its one-CTA 16- and 8-warp shapes, kept for
/// timing). The wmma kernel stays as what the GPU tests compare the new one against. Read per
/// call; throws InputError naming the variable for any other value.
bool grad_wmma_forced();

/// Whether grad_tc_launch takes the mma.sync kernel for d: D in {64, 128}, 2F <= 256 (a
/// multiple of 32), and not grad_wmma_forced().
bool grad_mma_selected(const Dims& d);

/// grad_tc_launch on the mma.sync kernel (same contract, dv null included); needs
/// grad_mma_selected(d).
void grad_mma_launch(const __nv_bfloat16* phiq, const __nv_bfloat16* phiq_lo,
                     const __nv_bfloat16* phik, const __nv_bfloat16* phik_lo,
                     const __nv_bfloat16* v, const float* bl, const float* states,
                     const float* dstates, const float* dO, const float* cself, float* dphiq,
                     float* dphik, float* dv, float* da, const Dims& d, cudaStream_t s);

}  // namespace lizard::cuda::lizard_detail
