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
/// value out of range throws InputError). The tensor-core variants are one tuned kernel
/// (4 warps x 2 m-tiles of 16 rows = 128 query rows per block, one barrier per key tile, the
/// mask only on edge tiles, the latest query tiles launched first): 0 (default) lazy rescale
/// (the max the exponents subtract moves only when a row grows by more than 2^8, results
/// within rounding of the exact rescale), 64-key tiles; 1 the same with 32-key tiles (no
/// register spills, twice the barriers); 2 exact rescale at every new row max.
void flash_attention_forward_variant(const Tensor& q, const Tensor& k, const Tensor& v,
                                     double scale, int64_t window, Tensor& o, Tensor& lse,
                                     int variant, void* stream);
/// Number of forward kernel variants (valid LIZARD_FA_FWD_VARIANT values are 0 .. this - 1).
int flash_attention_forward_variant_count();

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
