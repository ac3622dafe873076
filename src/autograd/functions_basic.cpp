// Elementwise, reduction, matmul and shape functions of the tape.
#include <numeric>

#include "lizard/autograd/functions.h"
#include "lizard/ops/matmul.h"
#include "lizard/ops/reduce.h"
#include "lizard/ops/shape_ops.h"

namespace lizard::autograd {

namespace {

struct BinaryNode : Node {
  ops::BinaryOp op;
  Tensor a, b;  // saved for mul/div only
  Shape sa, sb;
  const char* name() const override { return "binary"; }
  void release() override { a = b = Tensor(); }
  std::vector<Tensor> backward(const Tensor& g) override {
    Tensor ga, gb;
    switch (op) {
      case ops::BinaryOp::Add:
        if (needs_grad(0)) ga = ops::sum_to(g, sa);
        if (needs_grad(1)) gb = ops::sum_to(g, sb);
        break;
      case ops::BinaryOp::Sub:
        if (needs_grad(0)) ga = ops::sum_to(g, sa);
        if (needs_grad(1)) gb = ops::sum_to(ops::affine(g, -1.0), sb);
        break;
      case ops::BinaryOp::Mul:
        if (needs_grad(0)) ga = ops::sum_to(ops::mul(g, b), sa);
        if (needs_grad(1)) gb = ops::sum_to(ops::mul(g, a), sb);
        break;
      case ops::BinaryOp::Div: {
        Tensor gdb = ops::div(g, b);  // g / b
        if (needs_grad(0)) ga = ops::sum_to(gdb, sa);
        if (needs_grad(1))  // -g a / b^2
          gb = ops::sum_to(ops::affine(ops::mul(gdb, ops::div(a, b)), -1.0), sb);
        break;
      }
    }
    return {ga, gb};
  }
};

Var binary(ops::BinaryOp op, const Var& a, const Var& b) {
  Tensor out = ops::binary(op, a.data(), b.data());
  auto n = std::make_shared<BinaryNode>();
  n->op = op;
  n->sa = a.shape();
  n->sb = b.shape();
  if (any_requires_grad({a, b}) && (op == ops::BinaryOp::Mul || op == ops::BinaryOp::Div)) {
    n->a = a.data();
    n->b = b.data();
  }
  return make_result(std::move(out), {a, b}, std::move(n));
}

struct AffineNode : Node {
  double alpha;
  const char* name() const override { return "affine"; }
  std::vector<Tensor> backward(const Tensor& g) override { return {ops::affine(g, alpha)}; }
};

struct UnaryNode : Node {
  ops::UnaryOp op;
  Tensor x;
  const char* name() const override { return "unary"; }
  void release() override { x = Tensor(); }
  std::vector<Tensor> backward(const Tensor& g) override {
    return {ops::unary_backward(op, x, g)};
  }
};

struct SumNode : Node {
  Shape shape;
  std::vector<int64_t> dims;
  bool keepdim;
  double scale = 1.0;
  const char* name() const override { return "sum"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    Tensor gx = ops::sum_backward(g, shape, dims, keepdim);
    return {scale == 1.0 ? gx : ops::affine(gx, scale)};
  }
};

struct ReshapeNode : Node {
  Shape in_shape;
  const char* name() const override { return "reshape"; }
  std::vector<Tensor> backward(const Tensor& g) override { return {g.reshape(in_shape)}; }
};

struct PermuteNode : Node {
  std::vector<int64_t> inverse;
  const char* name() const override { return "permute"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    return {g.permute(inverse).contiguous()};
  }
};

struct SliceNode : Node {
  Shape in_shape;
  int64_t dim, start, end, step;
  const char* name() const override { return "slice"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    return {ops::slice_backward(g, in_shape, dim, start, end, step)};
  }
};

struct ConcatNode : Node {
  std::vector<int64_t> sizes;
  int64_t dim;
  const char* name() const override { return "concat"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    std::vector<Tensor> r(sizes.size());
    int64_t at = 0;
    for (size_t i = 0; i < sizes.size(); ++i) {
      if (needs_grad(i)) r[i] = g.slice(dim, at, at + sizes[i]).contiguous();
      at += sizes[i];
    }
    return r;
  }
};

struct CastNode : Node {
  DType from;
  const char* name() const override { return "cast"; }
  std::vector<Tensor> backward(const Tensor& g) override { return {g.to(from)}; }
};

}  // namespace

Var add(const Var& a, const Var& b) { return binary(ops::BinaryOp::Add, a, b); }
Var sub(const Var& a, const Var& b) { return binary(ops::BinaryOp::Sub, a, b); }
Var mul(const Var& a, const Var& b) { return binary(ops::BinaryOp::Mul, a, b); }
Var div(const Var& a, const Var& b) { return binary(ops::BinaryOp::Div, a, b); }

Var affine(const Var& x, double alpha, double beta) {
  auto n = std::make_shared<AffineNode>();
  n->alpha = alpha;
  return make_result(ops::affine(x.data(), alpha, beta), {x}, std::move(n));
}

Var unary(ops::UnaryOp op, const Var& x) {
  auto n = std::make_shared<UnaryNode>();
  n->op = op;
  if (any_requires_grad({x})) n->x = x.data();
  return make_result(ops::unary(op, x.data()), {x}, std::move(n));
}

Var sum(const Var& x, const std::vector<int64_t>& dims, bool keepdim) {
  auto n = std::make_shared<SumNode>();
  n->shape = x.shape();
  n->dims = dims;
  n->keepdim = keepdim;
  return make_result(ops::sum(x.data(), dims, keepdim), {x}, std::move(n));
}

Var mean(const Var& x, const std::vector<int64_t>& dims, bool keepdim) {
  auto n = std::make_shared<SumNode>();
  n->shape = x.shape();
  n->dims = dims;
  n->keepdim = keepdim;
  Tensor out = ops::mean(x.data(), dims, keepdim);
  n->scale = out.numel() > 0 && x.data().numel() > 0
                 ? static_cast<double>(out.numel()) / static_cast<double>(x.data().numel())
                 : 0.0;
  return make_result(std::move(out), {x}, std::move(n));
}

Var matmul(const Var& a, const Var& b, bool ta, bool tb) {
  // The accumulate node without C: one backward for both, and a plain matmul's input gradient
  // folds the engine's running sum into its GEMM too.
  return matmul_add(a, b, Var(), 1.0, ta, tb);
}

Var reshape(const Var& x, const Shape& shape) {
  auto n = std::make_shared<ReshapeNode>();
  n->in_shape = x.shape();
  return make_result(x.data().reshape(shape), {x}, std::move(n));
}

Var transpose(const Var& x, int64_t d0, int64_t d1) {
  std::vector<int64_t> perm(x.dim());
  std::iota(perm.begin(), perm.end(), 0);
  std::swap(perm[d0 < 0 ? d0 + x.dim() : d0], perm[d1 < 0 ? d1 + x.dim() : d1]);
  return permute(x, perm);
}

Var permute(const Var& x, const std::vector<int64_t>& dims) {
  auto n = std::make_shared<PermuteNode>();
  n->inverse.resize(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) {
    int64_t d = dims[i] < 0 ? dims[i] + x.dim() : dims[i];
    n->inverse[d] = static_cast<int64_t>(i);
  }
  return make_result(x.data().permute(dims).contiguous(), {x}, std::move(n));
}

Var slice(const Var& x, int64_t dim, int64_t start, int64_t end, int64_t step) {
  auto n = std::make_shared<SliceNode>();
  n->in_shape = x.shape();
  n->dim = dim;
  n->start = start;
  n->end = end;
  n->step = step;
  return make_result(x.data().slice(dim, start, end, step).contiguous(), {x}, std::move(n));
}

Var concat(const std::vector<Var>& xs, int64_t dim) {
  std::vector<Tensor> ts;
  auto n = std::make_shared<ConcatNode>();
  for (const Var& v : xs) {
    ts.push_back(v.data());
    n->sizes.push_back(v.size(dim));
  }
  n->dim = dim;
  return make_result(ops::concat(ts, dim), xs, std::move(n));
}

std::vector<Var> split(const Var& x, const std::vector<int64_t>& sizes, int64_t dim) {
  std::vector<Var> out;
  int64_t at = 0;
  for (int64_t s : sizes) {
    out.push_back(slice(x, dim, at, at + s));
    at += s;
  }
  LZ_CHECK(at == x.size(dim), "split: sizes add up to ", at, " but dim ", dim, " of ",
           x.data().desc(), " is ", x.size(dim));
  return out;
}

Var cast(const Var& x, DType dtype) {
  auto n = std::make_shared<CastNode>();
  n->from = x.dtype();
  return make_result(x.data().to(dtype), {x}, std::move(n));
}

}  // namespace lizard::autograd
