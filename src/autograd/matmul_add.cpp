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
    Tensor ga, gb, gc;
    // y = alpha op(A) op(B) + C:  dC = G;  dop(A) = alpha G op(B)^T;  dop(B) = alpha op(A)^T G.
    // alpha rides in each GEMM (cuBLASLt's alpha), so no scaling pass runs on G.
    if (needs_grad(0)) {
      ga = ta ? ops::matmul(b, g, tb, true, alpha)    // dA = alpha op(B) G^T
              : ops::matmul(g, b, false, !tb, alpha);  // dA = alpha G op(B)^T
      ga = ops::sum_to(ga, sa);
    }
    if (needs_grad(1)) {
      gb = tb ? ops::matmul(g, a, true, ta, alpha)     // dB = alpha G^T op(A)
              : ops::matmul(a, g, !ta, false, alpha);  // dB = alpha op(A)^T G
      gb = ops::sum_to(gb, sb);
    }
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
  return make_result(ops::matmul_add(a.data(), b.data(), c.data(), alpha, ta, tb), {a, b, c},
                     std::move(n));
}

}  // namespace lizard::autograd
