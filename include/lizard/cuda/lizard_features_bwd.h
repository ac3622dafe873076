// The tensor-core feature-map backward of the Lizard attention as a call of its own (the
// training backward's step 2, cuda/lizard_attention_bwd.cu, runs the same launcher): for tests
// that compare its outputs across argument masks (dx wanted or not) without the whole op.
#pragma once
#include "lizard/core/tensor.h"
#include "lizard/ops/lizard_config.h"

namespace lizard::cuda {

/// Feature-map backward of one projection (queries or keys) on x's GPU, queued on its device's
/// compute stream: u = x (w_hi + w_lo) per head (head h reads x head h / (H / Hx)), du =
/// map'(u) dphi rounded to bf16, then
///   dx [B,T,Hx,D] f32 += du w_hi^T (atomic adds when atomic_dx: the heads of a GQA group share
///      a row; otherwise rows owned, and with dx_out [B,T,Hx,D] bf16 the sum goes there as
///      bf16(dx + du w_hi^T), dx only read);
///   dw [H,D,F] f32 += sum over tokens of x^T du (the caller zeroes it).
/// x [B,T,Hx,D] bf16; w_hi, w_lo [H,D,F] bf16 (w_lo undefined: u from w_hi alone); dphi
/// [B,H,T,2F] f32; `act` the map of the forward. An undefined dx (dx_out undefined too) means
/// no dx is wanted: its loads, mma's and stores are skipped and dw keeps the bits of a call
/// with dx (up to the order of dw's f32 atomics across CTAs); an undefined dw means frozen
/// feature maps. At least one of dx, dw. D, F multiples of 16, D <= 128, F <= 128, all
/// tensors contiguous on one GPU. LIZARD_FEATURES_BWD_KERNEL=old takes the fused kernel.
/// Throws InputError naming the argument for a wrong shape, dtype or device. Defined in CUDA
/// builds only (cuda/lizard_features_bwd_mma.cu): callers guard it with LIZARD_WITH_CUDA.
void lizard_features_backward(const Tensor& x, const Tensor& w_hi, const Tensor& w_lo,
                              const Tensor& dphi, ops::FeatureActivation act, const Tensor& dx,
                              bool atomic_dx, const Tensor& dx_out, const Tensor& dw);

}  // namespace lizard::cuda
