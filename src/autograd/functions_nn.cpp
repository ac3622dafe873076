// Neural-network functions of the tape: thin nodes over the ops' forward/backward pairs.
#include "lizard/autograd/nn_functions.h"
#include "lizard/ops/attention.h"
#include "lizard/ops/cross_entropy.h"
#include "lizard/ops/dropout.h"
#include "lizard/ops/elementwise.h"
#include "lizard/ops/embedding.h"
#include "lizard/ops/mse.h"
#include "lizard/ops/rmsnorm.h"
#include "lizard/ops/softmax.h"
#include "lizard/ops/swiglu.h"

namespace lizard::autograd {

namespace {

/// A gradient in the dtype of the input it belongs to (CUDA kernels may return f32 for a bf16
/// weight; the tape accumulates in the input's dtype).
Tensor as_dtype(Tensor g, DType t) { return g.dtype() == t ? g : g.to(t); }

struct EmbeddingNode : Node {
  Tensor ids;
  int64_t vocab = 0;
  DType wdtype = DType::F32;
  const char* name() const override { return "embedding"; }
  void release() override { ids = Tensor(); }
  std::vector<Tensor> backward(const Tensor& g) override {
    return {as_dtype(ops::embedding_backward(g, ids, vocab), wdtype)};
  }
};

struct RmsNormNode : Node {
  Tensor x, w, rstd;
  const char* name() const override { return "rmsnorm"; }
  void release() override { x = w = rstd = Tensor(); }
  std::vector<Tensor> backward(const Tensor& g) override {
    std::vector<bool> folded(2, false);
    return backward_accumulate(g, {}, folded);
  }
  // The norm's input is the residual stream: its other consumer (the o_proj / down_proj
  // matmul_add's C) has usually left its gradient in the engine already. That running sum
  // rides into the dx pass (read once, one rounding) instead of a separate add kernel.
  std::vector<Tensor> backward_accumulate(const Tensor& g, const std::vector<Tensor>& partial,
                                          std::vector<bool>& folded) override {
    Tensor acc;
    if (needs_grad(0) && !partial.empty() && partial[0].defined()) {
      const Tensor& p = partial[0];
      if (p.shape() == x.shape() && p.dtype() == x.dtype() && p.device() == x.device()) acc = p;
    }
    ops::RmsNormGrads r =
        ops::rmsnorm_backward(g, x, w, rstd, needs_grad(0), needs_grad(1), acc);
    if (acc.defined()) folded[0] = true;
    if (r.dw.defined()) r.dw = as_dtype(r.dw, w.dtype());
    return {r.dx, r.dw};
  }
};

struct RopeNode : Node {
  ops::RopeTable table;
  const char* name() const override { return "rope"; }
  void release() override { table = ops::RopeTable(); }
  std::vector<Tensor> backward(const Tensor& g) override {
    return {ops::rope_apply(g, table, /*inverse=*/true)};
  }
};

struct SwigluNode : Node {
  Tensor gate, up;
  const char* name() const override { return "swiglu"; }
  void release() override { gate = up = Tensor(); }
  std::vector<Tensor> backward(const Tensor& g) override {
    ops::SwigluGrads r = ops::swiglu_backward(g, gate, up);
    return {needs_grad(0) ? r.dgate : Tensor(), needs_grad(1) ? r.dup : Tensor()};
  }
};

struct SoftmaxNode : Node {
  Tensor y;
  bool log = false;
  const char* name() const override { return log ? "log_softmax" : "softmax"; }
  void release() override { y = Tensor(); }
  std::vector<Tensor> backward(const Tensor& g) override {
    return {log ? ops::log_softmax_backward(g, y) : ops::softmax_backward(g, y)};
  }
};

struct CrossEntropyNode : Node {
  Tensor logits, targets, lse;
  int64_t count = 0;
  const char* name() const override { return "cross_entropy"; }
  void release() override { logits = targets = lse = Tensor(); }
  std::vector<Tensor> backward(const Tensor& g) override {
    // The upstream gradient of a scalar loss is one number; read it on the host.
    const double dloss = g.item();
    const double scale = count > 0 ? dloss / static_cast<double>(count) : 0.0;
    return {ops::cross_entropy_backward(logits, targets, lse, scale)};
  }
};

struct MseNode : Node {
  Tensor a, b;
  const char* name() const override { return "mse"; }
  void release() override { a = b = Tensor(); }
  std::vector<Tensor> backward(const Tensor& g) override {
    Tensor da = ops::mse_backward(g, a, b);
    return {needs_grad(0) ? da : Tensor(), needs_grad(1) ? ops::affine(da, -1.0) : Tensor()};
  }
};

struct DropoutNode : Node {
  double p = 0;
  uint64_t seed = 0, offset = 0;
  const char* name() const override { return "dropout"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    return {ops::dropout(g, p, seed, offset)};  // same mask, regenerated
  }
};

struct AttentionNode : Node {
  Tensor q, k, v, o, lse;
  double scale = 1;
  int64_t window = 0;
  const char* name() const override { return "causal_attention"; }
  void release() override { q = k = v = o = lse = Tensor(); }
  std::vector<Tensor> backward(const Tensor& g) override {
    ops::AttentionGrads r = ops::causal_attention_backward(g, q, k, v, o, lse, scale, window);
    return {needs_grad(0) ? r.dq : Tensor(), needs_grad(1) ? r.dk : Tensor(),
            needs_grad(2) ? r.dv : Tensor()};
  }
};

}  // namespace

Var embedding(const Var& weight, const Tensor& ids) {
  auto n = std::make_shared<EmbeddingNode>();
  if (any_requires_grad({weight})) {
    n->ids = ids;
    n->vocab = weight.size(0);
    n->wdtype = weight.dtype();
  }
  return make_result(ops::embedding(weight.data(), ids), {weight}, std::move(n));
}

Var rmsnorm(const Var& x, const Var& w, double eps) {
  ops::RmsNormOut r = ops::rmsnorm(x.data(), w.data(), eps);
  auto n = std::make_shared<RmsNormNode>();
  if (any_requires_grad({x, w})) {
    n->x = x.data();
    n->w = w.data();
    n->rstd = r.rstd;
  }
  return make_result(std::move(r.y), {x, w}, std::move(n));
}

Var rope(const Var& x, const ops::RopeTable& table) {
  auto n = std::make_shared<RopeNode>();
  if (any_requires_grad({x})) n->table = table;
  return make_result(ops::rope_apply(x.data(), table), {x}, std::move(n));
}

Var swiglu(const Var& gate, const Var& up) {
  auto n = std::make_shared<SwigluNode>();
  if (any_requires_grad({gate, up})) {
    n->gate = gate.data();
    n->up = up.data();
  }
  return make_result(ops::swiglu(gate.data(), up.data()), {gate, up}, std::move(n));
}

namespace {
Var softmax_impl(const Var& x, bool log) {
  Tensor y = log ? ops::log_softmax(x.data()) : ops::softmax(x.data());
  auto n = std::make_shared<SoftmaxNode>();
  n->log = log;
  if (any_requires_grad({x})) n->y = y;
  return make_result(std::move(y), {x}, std::move(n));
}
}  // namespace

Var softmax(const Var& x) { return softmax_impl(x, false); }
Var log_softmax(const Var& x) { return softmax_impl(x, true); }

CrossEntropyResult cross_entropy(const Var& logits, const Tensor& targets,
                                 const Tensor& host_targets) {
  ops::CrossEntropyOut r = ops::cross_entropy(logits.data(), targets, host_targets);
  auto n = std::make_shared<CrossEntropyNode>();
  n->count = r.count;
  if (any_requires_grad({logits})) {
    n->logits = logits.data();
    n->targets = targets;
    n->lse = r.lse;
  }
  // The loss is f32 for bf16/f32 logits; the tape's seed gradient then has the loss dtype.
  return {make_result(std::move(r.loss), {logits}, std::move(n)), r.count};
}

Var mse(const Var& a, const Var& b) {
  auto n = std::make_shared<MseNode>();
  if (any_requires_grad({a, b})) {
    n->a = a.data();
    n->b = b.data();
  }
  return make_result(ops::mse(a.data(), b.data()), {a, b}, std::move(n));
}

Var dropout(const Var& x, double p, uint64_t seed, uint64_t offset) {
  if (p == 0.0) return x;
  auto n = std::make_shared<DropoutNode>();
  n->p = p;
  n->seed = seed;
  n->offset = offset;
  return make_result(ops::dropout(x.data(), p, seed, offset), {x}, std::move(n));
}

AttentionResult causal_attention(const Var& q, const Var& k, const Var& v, double scale,
                                 int64_t window) {
  ops::AttentionOut r = ops::causal_attention(q.data(), k.data(), v.data(), scale, window);
  auto n = std::make_shared<AttentionNode>();
  n->scale = scale;
  n->window = window;
  if (any_requires_grad({q, k, v})) {
    n->q = q.data();
    n->k = k.data();
    n->v = v.data();
    n->o = r.o;
    n->lse = r.lse;
  }
  Tensor lse = r.lse;
  return {make_result(std::move(r.o), {q, k, v}, std::move(n)), lse};
}

}  // namespace lizard::autograd
