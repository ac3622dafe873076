// Autograd: a dynamic tape. Every differentiable call on Vars records a Node holding what
// its backward needs; backward() walks the nodes in reverse topological order and
// accumulates gradients into leaves (several backward calls add up).
//
// A leaf that does not require grad (a frozen weight) gets no edge, so its node is told
// `needs_grad(i) == false` and never computes that gradient (no weight-gradient GEMM).
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "lizard/core/tensor.h"

namespace lizard::autograd {

struct Node;
struct VarImpl;

/// What a parameter is for (optimizer grouping and freezing).
enum class ParamTag : uint8_t { None, Trainable, Frozen, Adapter };

/// The state behind a Var.
struct VarImpl {
  Tensor data;
  Tensor grad;  ///< leaves only: accumulated gradient
  bool requires_grad = false;
  std::shared_ptr<Node> grad_fn;  ///< null for leaves
  std::string name;
  ParamTag tag = ParamTag::None;
};

/// A tensor with a place in the tape. Copies share state (like a shared_ptr).
class Var {
 public:
  Var() = default;
  /// A leaf.
  explicit Var(Tensor data, bool requires_grad = false);
  /// A non-leaf produced by `fn` (used by op wrappers).
  static Var from_node(Tensor data, std::shared_ptr<Node> fn);

  bool defined() const { return impl_ != nullptr; }
  const Tensor& data() const { return impl_->data; }
  /// Replaces the data of a leaf in place (optimizer steps, loading).
  void set_data(Tensor t) { impl_->data = std::move(t); }
  const Shape& shape() const { return impl_->data.shape(); }
  int64_t size(int64_t d) const { return impl_->data.size(d); }
  int64_t dim() const { return impl_->data.dim(); }
  DType dtype() const { return impl_->data.dtype(); }
  Device device() const { return impl_->data.device(); }
  bool requires_grad() const { return impl_ && impl_->requires_grad; }
  void set_requires_grad(bool r);
  bool is_leaf() const { return !impl_->grad_fn; }
  const Tensor& grad() const { return impl_->grad; }
  void zero_grad() { impl_->grad = Tensor(); }
  void set_grad(Tensor g) { impl_->grad = std::move(g); }
  const std::shared_ptr<Node>& grad_fn() const { return impl_->grad_fn; }
  const std::string& name() const { return impl_->name; }
  void set_name(std::string n) { impl_->name = std::move(n); }
  ParamTag tag() const { return impl_->tag; }
  void set_tag(ParamTag t);
  /// The same data, cut from the tape (stop-gradient).
  Var detach() const { return Var(impl_->data, false); }
  /// Backpropagates from this Var. `grad` defaults to ones (a scalar loss).
  void backward(const Tensor& grad = Tensor()) const;
  VarImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<VarImpl>& impl_ptr() const { return impl_; }

 private:
  std::shared_ptr<VarImpl> impl_;
};

/// Where a node sends the gradient of one input: the input's node, or the leaf itself.
struct Edge {
  std::shared_ptr<Node> fn;
  std::shared_ptr<VarImpl> leaf;
  bool active() const { return fn != nullptr || leaf != nullptr; }
};

/// A recorded op. Subclasses store what backward needs (and nothing more).
struct Node {
  virtual ~Node() = default;
  /// Gradients for each input, given the gradient of the output. An entry may be left
  /// undefined when !needs_grad(i).
  virtual std::vector<Tensor> backward(const Tensor& grad_out) = 0;
  /// Optional accumulating form of backward(). `partial[i]` is the gradient input i has already
  /// received from other consumers (undefined when none yet; only offered for inputs that are
  /// nodes, each node on one edge at most). A node that can add partial[i] inside the GEMM
  /// forming its own contribution (beta = 1, partial only read) returns that sum and sets
  /// folded[i]; the engine then takes it as the input's new total instead of adding it with a
  /// separate kernel. The default folds nothing.
  virtual std::vector<Tensor> backward_accumulate(const Tensor& grad_out,
                                                  const std::vector<Tensor>& partial,
                                                  std::vector<bool>& folded) {
    (void)partial;
    (void)folded;
    return backward(grad_out);
  }
  /// Name for error messages and debugging.
  virtual const char* name() const = 0;
  /// Drops saved tensors after backward (unless the graph is retained).
  virtual void release() {}
  /// True when the gradient this node returns for input i is private to that input although
  /// its storage has other holders: rows of one buffer this backward call allocated, the rest
  /// of which goes only to other leaves as disjoint views (one GEMM's result split between
  /// parameters). A leaf may then keep it as its gradient without a copy (see accumulate).
  virtual bool grad_is_private(size_t i) const {
    (void)i;
    return false;
  }

  bool needs_grad(size_t i) const { return i < edges.size() && edges[i].active(); }
  std::vector<Edge> edges;
};

/// True when operations are recorded (the default); thread-local.
bool grad_enabled();

/// Disables recording within its scope.
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

/// Enables recording within its scope (used by recomputation inside backward).
class EnableGradGuard {
 public:
  EnableGradGuard();
  ~EnableGradGuard();
  EnableGradGuard(const EnableGradGuard&) = delete;
  EnableGradGuard& operator=(const EnableGradGuard&) = delete;

 private:
  bool prev_;
};

/// True if recording is on and any input requires grad.
bool any_requires_grad(const std::vector<Var>& inputs);

/// Wraps an op's output: when recording and some input requires grad, attaches `node`
/// (with one edge per input) and returns a non-leaf; otherwise a plain leaf.
Var make_result(Tensor out, const std::vector<Var>& inputs, std::shared_ptr<Node> node);

/// Called by backward() for a leaf once every node of this graph that sends it a gradient has
/// run: the leaf's grad is final for this backward call (data parallelism starts the leaf's
/// all-reduce here, overlapping the rest of backward). Leaves reached only inside a nested
/// backward (activation recomputation) are not reported; a leaf used both inside and outside a
/// recomputed block would be reported too early, so callers turn this off with recomputation.
using LeafReadyFn = std::function<void(VarImpl* leaf)>;

/// Backpropagates from several roots at once (grads default to ones). `on_leaf_ready`, when
/// set, is called once per leaf of the graph as its gradient becomes final (see LeafReadyFn).
void backward(const std::vector<Var>& roots, const std::vector<Tensor>& grads = {},
              bool retain_graph = false, const LeafReadyFn& on_leaf_ready = {});

/// Adds `g` into a leaf's gradient `acc`. On first use `acc` becomes `g` itself when `g` is the
/// only reference to its storage and covers all of it, contiguously (pass it with std::move to
/// allow that), or when `g` is contiguous and `is_private` (Node::grad_is_private: the other
/// holders of its storage only see other elements); otherwise a copy of `g`. Either way later
/// writes into `acc` are seen by no other tensor.
void accumulate(Tensor& acc, Tensor g, bool is_private = false);

}  // namespace lizard::autograd
