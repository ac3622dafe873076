// Causal softmax attention with GQA and an optional sliding window: the teacher's attention.
// CPU: a naive O(T^2) reference in f32/f64. CUDA: cuda::flash_attention_forward/backward.
#pragma once
#include <cstdint>

#include "lizard/core/tensor.h"

namespace lizard::ops {

struct AttentionOut {
  Tensor o;    ///< [B, T, H, D] like q
  Tensor lse;  ///< [B, H, T] log-sum-exp of the scaled scores (f32; f64 for f64 inputs)
};

/// q [B, T, H, D], k, v [B, T, Hkv, D], H % Hkv == 0, query head h reads kv head
/// h / (H / Hkv). o_t = sum_{s in S(t)} softmax_s(scale q_t.k_s) v_s with
/// S(t) = {s <= t} when window == 0, else {t - window < s <= t}.
AttentionOut causal_attention(const Tensor& q, const Tensor& k, const Tensor& v, double scale,
                              int64_t window = 0);

struct AttentionGrads {
  Tensor dq;  ///< like q
  Tensor dk;  ///< like k, summed over the query heads sharing each kv head
  Tensor dv;  ///< like v, same
};
/// The backward from the saved (q, k, v, o, lse): recomputes the probabilities
/// p_ts = exp(scale q_t.k_s - lse_t); dp_ts = dout_t.v_s; ds = p (dp - dout_t.o_t).
AttentionGrads causal_attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k,
                                         const Tensor& v, const Tensor& o, const Tensor& lse,
                                         double scale, int64_t window = 0);

}  // namespace lizard::ops
