#include "lizard/autograd/variable.h"

#include <unordered_map>
#include <unordered_set>

#include "lizard/ops/elementwise.h"

namespace lizard::autograd {

namespace {
thread_local bool t_grad_enabled = true;
}

bool grad_enabled() { return t_grad_enabled; }
NoGradGuard::NoGradGuard() : prev_(t_grad_enabled) { t_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { t_grad_enabled = prev_; }
EnableGradGuard::EnableGradGuard() : prev_(t_grad_enabled) { t_grad_enabled = true; }
EnableGradGuard::~EnableGradGuard() { t_grad_enabled = prev_; }

Var::Var(Tensor data, bool requires_grad) : impl_(std::make_shared<VarImpl>()) {
  impl_->data = std::move(data);
  impl_->requires_grad = requires_grad;
}

Var Var::from_node(Tensor data, std::shared_ptr<Node> fn) {
  Var v(std::move(data), true);
  v.impl_->grad_fn = std::move(fn);
  return v;
}

void Var::set_requires_grad(bool r) {
  LZ_CHECK(is_leaf(), "set_requires_grad on a non-leaf Var");
  impl_->requires_grad = r;
}

void Var::set_tag(ParamTag t) {
  impl_->tag = t;
  if (t == ParamTag::Frozen) impl_->requires_grad = false;
  if (t == ParamTag::Trainable || t == ParamTag::Adapter) impl_->requires_grad = true;
}

void Var::backward(const Tensor& grad) const {
  autograd::backward({*this}, grad.defined() ? std::vector<Tensor>{grad} : std::vector<Tensor>{});
}

bool any_requires_grad(const std::vector<Var>& inputs) {
  if (!t_grad_enabled) return false;
  for (const Var& v : inputs)
    if (v.defined() && v.requires_grad()) return true;
  return false;
}

Var make_result(Tensor out, const std::vector<Var>& inputs, std::shared_ptr<Node> node) {
  if (!any_requires_grad(inputs)) return Var(std::move(out), false);
  node->edges.resize(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Var& v = inputs[i];
    if (!v.defined() || !v.requires_grad()) continue;
    if (v.grad_fn())
      node->edges[i].fn = v.grad_fn();
    else
      node->edges[i].leaf = v.impl_ptr();
  }
  return Var::from_node(std::move(out), std::move(node));
}

void accumulate(Tensor& acc, Tensor g, bool is_private) {
  if (acc.defined()) {
    ops::add_(acc, g);
    return;
  }
  // A leaf gradient is owned: the optimizer, later backward calls and data parallelism's
  // all-reduce write into it. `g` may be taken as it is only when this argument is the one
  // reference to its storage (nothing else, no view, node buffer, saved tensor or caller, can
  // see those writes) and it covers that whole storage densely (a slice would keep the rest of
  // a larger allocation alive). Otherwise it is copied. A fresh GEMM result moved in here, e.g.
  // a LoRA weight's gradient, is the common case: adopting it saves a device-to-device copy.
  const bool sole_owner = g.storage().use_count() == 1 && g.offset() == 0 && g.is_contiguous() &&
                          g.nbytes() == g.storage()->bytes();
  // A private view (rows of one GEMM's result shared out between parameters, e.g. the fused
  // LoRA down-projections' dA) is only written through this leaf: adopted too.
  acc = sole_owner || (is_private && g.is_contiguous()) ? std::move(g) : g.clone();
}

namespace {
// Node buffers alias the first gradient (no copy) and add out of place afterwards, so a
// tensor shared between several consumers is never written. Node::backward_accumulate and
// matmul_add's dC = dY (no copy) rely on this: no node's backward may write into its incoming
// gradient or into a `partial` sum it is offered; a backward that did would change the sums of
// other consumers of the same tensor. One exception, by construction: autograd::lora_fused's
// up nodes write disjoint column blocks of a dz buffer they allocated themselves, which only
// they and the engine hold (see lora_fused.cpp).
void accumulate_buffer(Tensor& acc, const Tensor& g) {
  acc = acc.defined() ? ops::add(acc, g) : g;
}
}  // namespace

void backward(const std::vector<Var>& roots, const std::vector<Tensor>& grads_in,
              bool retain_graph, const LeafReadyFn& on_leaf_ready) {
  LZ_CHECK(grads_in.empty() || grads_in.size() == roots.size(), "backward: ", grads_in.size(),
           " gradients for ", roots.size(), " roots");
  // Seed gradients.
  std::unordered_map<Node*, Tensor> buffer;
  std::vector<Node*> starts;
  for (size_t i = 0; i < roots.size(); ++i) {
    const Var& r = roots[i];
    LZ_CHECK(r.defined(), "backward from an undefined Var");
    Tensor g = grads_in.empty() ? Tensor::ones(r.shape(), r.dtype(), r.device()) : grads_in[i];
    LZ_CHECK(g.shape() == r.shape(), "backward: gradient ", g.desc(), " for output ",
             r.data().desc());
    if (!r.requires_grad()) continue;
    if (!r.grad_fn()) {  // a leaf root
      accumulate(r.impl()->grad, std::move(g));  // a caller's tensor stays shared: copied
      continue;
    }
    accumulate_buffer(buffer[r.grad_fn().get()], g);
    starts.push_back(r.grad_fn().get());
  }
  // Topological order by iterative DFS (post-order), then reversed.
  std::vector<Node*> order;
  std::unordered_set<Node*> visited;
  std::vector<std::pair<Node*, size_t>> stack;
  for (Node* s : starts) {
    if (visited.count(s)) continue;
    visited.insert(s);
    stack.push_back({s, 0});
    while (!stack.empty()) {
      auto& [n, i] = stack.back();
      if (i < n->edges.size()) {
        Node* child = n->edges[i].fn.get();
        ++i;
        if (child && !visited.count(child)) {
          visited.insert(child);
          stack.push_back({child, 0});
        }
      } else {
        order.push_back(n);
        stack.pop_back();
      }
    }
  }
  // Leaf readiness: a leaf is final once every node holding an edge to it has run (or was
  // skipped because no gradient reached it).
  std::unordered_map<VarImpl*, int> leaf_uses;
  if (on_leaf_ready)
    for (Node* n : order)
      for (const Edge& e : n->edges)
        if (e.leaf) ++leaf_uses[e.leaf.get()];
  auto leaves_done = [&](Node* n) {
    if (!on_leaf_ready) return;
    for (const Edge& e : n->edges)
      if (e.leaf && --leaf_uses[e.leaf.get()] == 0) on_leaf_ready(e.leaf.get());
  };
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    Node* n = *it;
    auto bit = buffer.find(n);
    if (bit == buffer.end()) {  // no gradient reached this node
      leaves_done(n);
      continue;
    }
    Tensor g = std::move(bit->second);
    buffer.erase(bit);
    // Offer each input node's running sum (a node on several edges of n gets it on none:
    // folding it twice would count it twice).
    const size_t ne = n->edges.size();
    std::vector<Tensor> partial(ne);
    std::vector<bool> folded(ne, false);
    for (size_t i = 0; i < ne; ++i) {
      Node* f = n->edges[i].fn.get();
      if (!f) continue;
      bool shared = false;
      for (size_t j = 0; j < ne; ++j) shared |= j != i && n->edges[j].fn.get() == f;
      auto pit = shared ? buffer.end() : buffer.find(f);
      if (pit != buffer.end()) partial[i] = pit->second;
    }
    std::vector<Tensor> gins = n->backward_accumulate(g, partial, folded);
    for (size_t i = 0; i < ne; ++i) {
      const Edge& e = n->edges[i];
      if (!e.active() || i >= gins.size() || !gins[i].defined()) continue;
      if (e.fn && folded[i] && partial[i].defined())
        buffer[e.fn.get()] = gins[i];  // already holds the running sum
      else if (e.fn)
        accumulate_buffer(buffer[e.fn.get()], gins[i]);
      else  // moved: the leaf may adopt it (gins[i] is not read again)
        accumulate(e.leaf->grad, std::move(gins[i]), n->grad_is_private(i));
    }
    leaves_done(n);
    if (!retain_graph) n->release();
  }
}

}  // namespace lizard::autograd
