// Differentiable functions on Vars: each records a Node whose backward calls the ops layer.
// Saved-tensor policy per function is stated next to it.
#pragma once
#include <vector>

#include "lizard/autograd/variable.h"
#include "lizard/ops/elementwise.h"

namespace lizard::autograd {

// ---- elementwise (broadcasting); saves: add/sub nothing, mul/div both inputs ----
Var add(const Var& a, const Var& b);
Var sub(const Var& a, const Var& b);
Var mul(const Var& a, const Var& b);
Var div(const Var& a, const Var& b);
/// alpha * x + beta. Saves nothing.
Var affine(const Var& x, double alpha, double beta = 0.0);
inline Var scale(const Var& x, double alpha) { return affine(x, alpha, 0.0); }
/// f(x) for the unary ops of ops::UnaryOp. Saves x.
Var unary(ops::UnaryOp op, const Var& x);
inline Var exp(const Var& x) { return unary(ops::UnaryOp::Exp, x); }
inline Var log(const Var& x) { return unary(ops::UnaryOp::Log, x); }
inline Var logsigmoid(const Var& x) { return unary(ops::UnaryOp::LogSigmoid, x); }
inline Var sigmoid(const Var& x) { return unary(ops::UnaryOp::Sigmoid, x); }
inline Var silu(const Var& x) { return unary(ops::UnaryOp::Silu, x); }
inline Var square(const Var& x) { return unary(ops::UnaryOp::Square, x); }

// ---- reductions; save only shapes ----
Var sum(const Var& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Var mean(const Var& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);

// ---- matmul; saves a if b needs grad and b if a needs grad ----
/// op(a) @ op(b) with batch broadcasting (see ops::matmul). A frozen operand gets no GEMM.
Var matmul(const Var& a, const Var& b, bool ta = false, bool tb = false);
/// alpha * op(a) @ op(b) + c as one GEMM (ops::matmul_add; c has the product's exact shape;
/// an undefined c means none). Backward: dc = dy itself (no copy), da and db are GEMMs with
/// alpha folded into them, and a gradient sum the engine already holds for a or b is added
/// inside that GEMM (Node::backward_accumulate). Saves a if b needs grad and b if a needs
/// grad; nothing of c. (src/autograd/matmul_add.cpp)
Var matmul_add(const Var& a, const Var& b, const Var& c, double alpha = 1.0, bool ta = false,
               bool tb = false);

// ---- shape ops; save only shapes ----
Var reshape(const Var& x, const Shape& shape);
Var transpose(const Var& x, int64_t d0, int64_t d1);
Var permute(const Var& x, const std::vector<int64_t>& dims);
/// x[..., start:end:step, ...] along dim (a contiguous copy of the view).
Var slice(const Var& x, int64_t dim, int64_t start, int64_t end, int64_t step = 1);
Var concat(const std::vector<Var>& xs, int64_t dim);
/// Splits dim into pieces of the given sizes.
std::vector<Var> split(const Var& x, const std::vector<int64_t>& sizes, int64_t dim);
/// Converts dtype; the gradient is converted back.
Var cast(const Var& x, DType dtype);

}  // namespace lizard::autograd
