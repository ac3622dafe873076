// Rotary position embedding in the Hugging Face "rotate_half" layout, with the Llama-3
// frequency scaling (transformers' _compute_llama3_parameters).
#pragma once
#include <vector>

#include "lizard/core/tensor.h"
#include "lizard/nn/llama_config.h"

namespace lizard::ops {

/// The D/2 inverse frequencies: theta^(-2i/D), then, for scaling.type == "llama3", divided by
/// `factor` for wavelengths above original_max_position_embeddings / low_freq_factor, kept
/// below original_max_position_embeddings / high_freq_factor, and interpolated smoothly
/// between. Computed in double (transformers computes them in f32; the difference is < 1 ulp
/// of f32). type "default" is unscaled; any other type throws InputError naming it.
std::vector<double> rope_inv_freq(int64_t head_dim, double theta, const nn::RopeScaling& scaling);

/// cos/sin of angle[t, i] = positions[t] * inv_freq[i], f32 [T, D/2] on `device`.
struct RopeTable {
  Tensor cos;  ///< f32 [T, D/2]
  Tensor sin;  ///< f32 [T, D/2]
};

/// Builds the table for positions (i32/i64 [T], any device; read on the host). The angle is
/// formed in double and rounded once to f32, so long positions keep their accuracy.
RopeTable rope_table(int64_t head_dim, double theta, const nn::RopeScaling& scaling,
                     const Tensor& positions, Device device = Device::cpu());
/// The table for positions 0..T-1.
RopeTable rope_table(int64_t head_dim, double theta, const nn::RopeScaling& scaling, int64_t T,
                     Device device = Device::cpu());

/// x [B, T, H, D] (D even; the table has T rows, or more: rows 0..T-1 are used). For i < D/2:
/// y_i = x_i cos - x_{i+D/2} sin, y_{i+D/2} = x_{i+D/2} cos + x_i sin. inverse = true rotates by
/// -angle, which is the backward (rotation is orthogonal). Nothing is saved but the table.
Tensor rope_apply(const Tensor& x, const RopeTable& table, bool inverse = false);

}  // namespace lizard::ops
