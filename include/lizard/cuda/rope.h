// Launcher of cuda/rope.cu: rotary embedding in the Hugging Face "rotate_half" layout.
#pragma once
#include "lizard/core/tensor.h"

namespace lizard::cuda {

/// x, y: [B, T, H, D] contiguous (bf16/f32); cos, sin: f32 [T, D/2] (row t is the position of
/// token t). For i < D/2: y_i = x_i cos - x_{i+D/2} sin, y_{i+D/2} = x_{i+D/2} cos + x_i sin.
/// inverse = true rotates by -angle (the backward).
void rope_apply(const Tensor& x, const Tensor& cos, const Tensor& sin, bool inverse, Tensor& y,
                void* stream);

}  // namespace lizard::cuda
