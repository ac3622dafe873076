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

}  // namespace lizard::cuda
