// Launchers of cuda/adamw.cu: the fused optimizer step and the global gradient norm.
#pragma once
#include <cstdint>
#include <vector>

#include "lizard/core/tensor.h"

namespace lizard::cuda {

/// Sum of squares of every element of `grads` (f32 or bf16), accumulated in fp32 into
/// out (f32 [1], overwritten). Deterministic.
void sum_squares(const std::vector<Tensor>& grads, Tensor& out, void* stream);

/// One AdamW step on one parameter tensor (all contiguous, same numel):
///   g' = g * clip_scale (clip_scale read from device memory, f32 [1], so clipping needs no
///   host sync); m = b1 m + (1-b1) g'; v = b2 v + (1-b2) g'^2;
///   master -= lr * (m / (1-b1^t) / (sqrt(v / (1-b2^t)) + eps) + wd * master);
///   param = cast(master) (bf16 or f32; param may alias master when f32).
/// master, m, v: f32; g: f32 or bf16.
void adamw_step(Tensor& param, Tensor& master, Tensor& m, Tensor& v, const Tensor& g,
                const Tensor& clip_scale, double lr, double beta1, double beta2, double eps,
                double weight_decay, int64_t step, void* stream);

}  // namespace lizard::cuda
