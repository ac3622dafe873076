// Elementwise ops with numpy broadcasting, and their derivatives.
// CPU: f32 and f64 (computed in the input type). CUDA: f32, bf16 (fp32 math).
#pragma once
#include "lizard/core/tensor.h"

namespace lizard::ops {

/// The broadcast shape of a and b; throws naming both shapes if incompatible.
Shape broadcast_shape(const Shape& a, const Shape& b);
/// Sums `g` over broadcast dims so the result has `shape` (the backward of broadcasting).
Tensor sum_to(const Tensor& g, const Shape& shape);

enum class BinaryOp : uint8_t { Add, Sub, Mul, Div };
/// out = a (op) b with broadcasting; the dtype is a's (b must match).
Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b);
inline Tensor add(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Add, a, b); }
inline Tensor sub(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Sub, a, b); }
inline Tensor mul(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Mul, a, b); }
inline Tensor div(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Div, a, b); }
/// acc += b (same shape, in place).
void add_(Tensor& acc, const Tensor& b);

enum class UnaryOp : uint8_t { Exp, Log, LogSigmoid, Sigmoid, Silu, Neg, Square, Sqrt, Abs };
/// out = f(x) elementwise. LogSigmoid is computed as min(x,0) - log1p(exp(-|x|)).
Tensor unary(UnaryOp op, const Tensor& x);
/// dx = dy * f'(x) (Exp and Sqrt use the output y when given, else recompute).
Tensor unary_backward(UnaryOp op, const Tensor& x, const Tensor& dy);

/// out = alpha * x + beta.
Tensor affine(const Tensor& x, double alpha, double beta = 0.0);

}  // namespace lizard::ops
