// SwiGLU gating of the Llama MLP: y = silu(gate) * up.
// CPU: f32/f64. CUDA: cuda::swiglu_forward/backward.
#pragma once
#include "lizard/core/tensor.h"

namespace lizard::ops {

/// y = silu(gate) * up elementwise; gate and up of the same shape and dtype.
Tensor swiglu(const Tensor& gate, const Tensor& up);

struct SwigluGrads {
  Tensor dgate;  ///< dy * up * silu'(gate), silu'(g) = s(g) (1 + g (1 - s(g)))
  Tensor dup;    ///< dy * silu(gate)
};
/// The backward from the saved inputs (gate, up): both gradients in one pass.
SwigluGrads swiglu_backward(const Tensor& dy, const Tensor& gate, const Tensor& up);

}  // namespace lizard::ops
