// The fused matmul-accumulate of the tape: y = alpha op(a) op(b) + c in one GEMM.
#include "lizard/autograd/functions.h"
#include "lizard/ops/elementwise.h"
#include "lizard/ops/matmul.h"

namespace lizard::autograd {

namespace {

struct MatmulAddNode : Node {
  Tensor a, b;
  bool ta = false, tb = false;
  double alpha = 1.0;
  Shape sa, sb;
  const char* name() const override { return "matmul_add"; }
  void release() override { a = b = Tensor(); }
  std::vector<Tensor> backward(const Tensor& g) override {
    std::vector<bool> folded(3, false);
    return backward_accumulate(g, {Tensor(), Tensor(), Tensor()}, folded);
  }

  // True when the product forming input i's gradient already has its shape (no batch
  // reduction by sum_to) and `p` can be the GEMM's C.
  bool can_fold(const Tensor& g, const Tensor& p, const Shape& s) const {
    if (!p.defined() || p.shape() != s || p.dtype() != g.dtype() || p.device() != g.device())
      return false;
    if (g.dim() != static_cast<int64_t>(s.size())) return false;
    for (int64_t d = 0; d + 2 < g.dim(); ++d)
      if (g.size(d) != s[d]) return false;
    return true;
  }

  std::vector<Tensor> backward_accumulate(const Tensor& g, const std::vector<Tensor>& partial,
                                          std::vector<bool>& folded) override {
    Tensor ga, gb, gc;
    // A gradient sum the engine already holds for a or b (another consumer's share) rides in
    // the GEMM as C (beta = 1, read only): no add kernel. fp32 epilogue, one rounding.
    auto gemm = [&](size_t i, const Tensor& x, const Tensor& y, bool tx, bool ty,
                    const Shape& s) {
      if (i < partial.size() && can_fold(g, partial[i], s)) {
        folded[i] = true;
        return ops::matmul_add(x, y, partial[i], alpha, tx, ty);
      }
      return ops::sum_to(ops::matmul(x, y, tx, ty, alpha), s);
    };
    // y = alpha op(A) op(B) + C:  dC = G;  dop(A) = alpha G op(B)^T;  dop(B) = alpha op(A)^T G.
    // alpha rides in each GEMM (cuBLASLt's alpha), so no scaling pass runs on G.
    if (needs_grad(0))
      ga = ta ? gemm(0, b, g, tb, true, sa)    // dA = alpha op(B) G^T
              : gemm(0, g, b, false, !tb, sa);  // dA = alpha G op(B)^T
    if (needs_grad(1))
      gb = tb ? gemm(1, g, a, true, ta, sb)     // dB = alpha G^T op(A)
              : gemm(1, a, g, !ta, false, sb);  // dB = alpha op(A)^T G
    // c has y's exact shape: its gradient is G itself. The engine never writes a gradient it
    // did not allocate (node buffers add out of place), so sharing G is safe.
    if (needs_grad(2)) gc = g;
    return {ga, gb, gc};
  }
};

}  // namespace

Var matmul_add(const Var& a, const Var& b, const Var& c, double alpha, bool ta, bool tb) {
  auto n = std::make_shared<MatmulAddNode>();
  n->ta = ta;
  n->tb = tb;
  n->alpha = alpha;
  n->sa = a.shape();
  n->sb = b.shape();
  const bool rec = grad_enabled();
  if (rec && b.requires_grad()) n->a = a.data();
  if (rec && a.requires_grad()) n->b = b.data();
  Tensor out = c.defined() ? ops::matmul_add(a.data(), b.data(), c.data(), alpha, ta, tb)
                           : ops::matmul(a.data(), b.data(), ta, tb, alpha);
  return make_result(std::move(out), {a, b, c}, std::move(n));
}

}  // namespace lizard::autograd
