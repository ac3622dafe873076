#include "lizard/autograd/checkpoint.h"

namespace lizard::autograd {

namespace {

struct CheckpointNode : Node {
  BlockFn fn;
  std::vector<Tensor> inputs;
  std::vector<bool> input_requires;
  const char* name() const override { return "checkpoint"; }
  void release() override {
    inputs.clear();
    fn = nullptr;
  }
  std::vector<Tensor> backward(const Tensor& g) override {
    LZ_CHECK(fn, "checkpoint: backward through a released graph");
    EnableGradGuard eg;
    std::vector<Var> leaves;
    for (size_t i = 0; i < inputs.size(); ++i) leaves.emplace_back(inputs[i], needs_grad(i));
    Var out = fn(leaves);
    autograd::backward({out}, {g});
    std::vector<Tensor> grads(inputs.size());
    for (size_t i = 0; i < inputs.size(); ++i)
      if (needs_grad(i)) grads[i] = leaves[i].grad();
    return grads;
  }
};

}  // namespace

Var checkpoint(const BlockFn& fn, const std::vector<Var>& inputs) {
  Var out;
  {
    NoGradGuard ng;
    std::vector<Var> detached;
    for (const Var& v : inputs) detached.push_back(v.detach());
    out = fn(detached);
  }
  if (!grad_enabled()) return out;
  auto n = std::make_shared<CheckpointNode>();
  n->fn = fn;
  for (const Var& v : inputs) n->inputs.push_back(v.data());
  // The node must exist even when no input requires grad: captured parameters may.
  n->edges.resize(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Var& v = inputs[i];
    if (!v.requires_grad()) continue;
    if (v.grad_fn())
      n->edges[i].fn = v.grad_fn();
    else
      n->edges[i].leaf = v.impl_ptr();
  }
  return Var::from_node(out.data(), std::move(n));
}

}  // namespace lizard::autograd
