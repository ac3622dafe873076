// Launchers of cuda/flash_attention.cu: causal softmax attention (the teacher), tiled with an
// online softmax, nothing T x T in memory, GQA without repeating K/V.
#pragma once
#include <cstdint>

#include "lizard/core/tensor.h"

namespace lizard::cuda {

/// q [B, T, H, D], k, v [B, T, Hkv, D] (H % Hkv == 0; head h reads kv head h / (H/Hkv)),
/// bf16 (or f32), contiguous. o [B, T, H, D] like q; lse f32 [B, H, T] saved for backward.
/// o_t = sum_{s<=t, t-s<window or window==0} softmax_s(scale q_t.k_s) v_s.
void flash_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, double scale,
                             int64_t window, Tensor& o, Tensor& lse, void* stream);
/// Gradients of the above; dq like q, dk/dv like k/v (summed over the heads sharing them).
void flash_attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k,
                              const Tensor& v, const Tensor& o, const Tensor& lse, double scale,
                              int64_t window, Tensor& dq, Tensor& dk, Tensor& dv, void* stream);

/// flash_attention_forward through forward kernel `variant` (0 .. count-1; every variant
/// computes the same function, bf16 results within rounding of each other; f32 and odd head
/// dims take the reference kernel whatever the variant). flash_attention_forward takes the
/// variant named by the environment variable LIZARD_FA_FWD_VARIANT (unset: the default; a
/// value out of range throws InputError). The tensor-core variants, all 128 query rows x
/// 64 keys per step: 0 the original kernel; 1 it with the heavy-first grid (every head's
/// latest query tile launched before any earlier one); 2 the tuned kernel (one barrier per
/// tile, mask only on edge tiles, a warp skips tiles that hide all its keys, 32-bit indices,
/// accumulators rescaled only on a new row max, 16-byte output stores); 3 tuned +
/// heavy-first; 4 tuned + heavy-first + lazy rescale (the max the exponents subtract moves
/// only when a row grows by more than 2^8, so results differ from 0-3 by rounding); 5 tuned +
/// lazy rescale; 6 as 4 with 32-key tiles (no register spills, twice the barriers).
void flash_attention_forward_variant(const Tensor& q, const Tensor& k, const Tensor& v,
                                     double scale, int64_t window, Tensor& o, Tensor& lse,
                                     int variant, void* stream);
/// Number of forward kernel variants (valid LIZARD_FA_FWD_VARIANT values are 0 .. this - 1).
int flash_attention_forward_variant_count();

/// flash_attention_forward with an explicit block shape, for benchmarks choosing the default
/// (same results for every shape): `warps` (4 or 8) x 16-row tiles per warp, with
/// `m_tiles` = 1: one tile per warp, 64 keys per step; 2: two tiles per warp, 64 keys per
/// step (warps = 4 only); 3 (warps = 4) or 2 (warps = 8): two tiles per warp, 32 keys per step.
void flash_attention_forward_tiled(const Tensor& q, const Tensor& k, const Tensor& v, double scale,
                                   int64_t window, Tensor& o, Tensor& lse, int warps, void* stream,
                                   int m_tiles = 1);

/// The forward through the simple warp-per-query-row kernel (fp32 math, any float dtype,
/// D <= 256): same contract as flash_attention_forward. Slow (no tensor cores); it is the
/// on-device oracle for the tensor-core path and the fallback for f32 and odd head dims.
void flash_attention_forward_reference(const Tensor& q, const Tensor& k, const Tensor& v,
                                       double scale, int64_t window, Tensor& o, Tensor& lse,
                                       void* stream);

/// The backward through the reference kernels (fp32 math, one warp per query row for dq and
/// per key row for dk/dv); same contract as flash_attention_backward.
void flash_attention_backward_reference(const Tensor& dout, const Tensor& q, const Tensor& k,
                                        const Tensor& v, const Tensor& o, const Tensor& lse,
                                        double scale, int64_t window, Tensor& dq, Tensor& dk,
                                        Tensor& dv, void* stream);

}  // namespace lizard::cuda
