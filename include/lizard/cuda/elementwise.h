// Launchers of cuda/elementwise.cu. Operands are CUDA tensors of one dtype (f32, bf16, f16);
// math is fp32. `op` values are those of ops::BinaryOp / ops::UnaryOp.
#pragma once
#include "lizard/core/tensor.h"

namespace lizard::cuda {

/// out = a (op) b; a and b are already expanded to out's shape (any strides); out contiguous
/// or equal to a (in-place add).
void binary(int op, const Tensor& a, const Tensor& b, Tensor& out, void* stream);
/// out = f(x), x and out contiguous.
void unary(int op, const Tensor& x, Tensor& out, void* stream);
/// dx = dy * f'(x), all contiguous.
void unary_backward(int op, const Tensor& x, const Tensor& dy, Tensor& dx, void* stream);
/// out = alpha * x + beta.
void affine(const Tensor& x, Tensor& out, double alpha, double beta, void* stream);

}  // namespace lizard::cuda
