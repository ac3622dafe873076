// Launchers of cuda/swiglu.cu: y = silu(gate) * up, elementwise, fp32 math.
#pragma once
#include "lizard/core/tensor.h"

namespace lizard::cuda {

void swiglu_forward(const Tensor& gate, const Tensor& up, Tensor& y, void* stream);
/// dgate = dy * up * silu'(gate), dup = dy * silu(gate).
void swiglu_backward(const Tensor& dy, const Tensor& gate, const Tensor& up, Tensor& dgate,
                     Tensor& dup, void* stream);

}  // namespace lizard::cuda
