#include "lizard/autograd/lizard_function.h"

namespace lizard::autograd {

namespace {

Tensor as(const Tensor& t, const Tensor& like) {
  if (!t.defined()) return t;
  return t.to(like.device(), like.is_cuda() ? t.dtype() : like.dtype()).contiguous();
}

struct LizardNode : Node {
  ops::LizardConfig cfg;
  ops::LizardInputs in;
  ops::LizardParams p;
  ops::LizardSaved saved;
  std::vector<DType> param_dtypes;
  const char* name() const override { return "lizard_attention"; }
  void release() override {
    in = {};
    p = {};
    saved = {};
  }
  std::vector<Tensor> backward(const Tensor& g) override {
    ops::LizardWants want;
    want.dq = needs_grad(0);
    want.dk = needs_grad(1);
    want.dv = needs_grad(2);
    want.dx = needs_grad(3);
    want.dwq = needs_grad(4);
    want.dwk = needs_grad(5);
    want.dgate = needs_grad(6) || needs_grad(7);
    want.dsinks = needs_grad(8) || needs_grad(9);
    ops::LizardGrads gr = ops::lizard_attention_backward(cfg, in, p, saved, g.contiguous(), want);
    auto back = [&](const Tensor& t, size_t i) {
      return t.defined() && needs_grad(i) ? t.to(param_dtypes[i - 4]) : Tensor();
    };
    return {needs_grad(0) ? gr.dq : Tensor(), needs_grad(1) ? gr.dk : Tensor(),
            needs_grad(2) ? gr.dv : Tensor(), needs_grad(3) ? gr.dx : Tensor(),
            back(gr.dwq, 4), back(gr.dwk, 5), back(gr.dw_g, 6), back(gr.db_g, 7),
            back(gr.dtau, 8), back(gr.dalpha, 9)};
  }
};

}  // namespace

Var lizard_attention(const ops::LizardConfig& cfg, const Var& q, const Var& k, const Var& v,
                     const Var& x, const LizardParamVars& pv, const Tensor& cos, const Tensor& sin) {
  auto n = std::make_shared<LizardNode>();
  n->cfg = cfg;
  const Tensor& ql = q.data();
  n->in = {ql.contiguous(), k.data().contiguous(), v.data().contiguous(), x.data().contiguous(),
           cos, sin};
  n->p = {as(pv.wq.data(), ql), as(pv.wk.data(), ql), as(pv.w_g.data(), ql),
          as(pv.b_g.data(), ql), pv.tau.defined() ? as(pv.tau.data(), ql) : Tensor(),
          as(pv.alpha.data(), ql)};
  for (const Var* pp : {&pv.wq, &pv.wk, &pv.w_g, &pv.b_g, &pv.tau, &pv.alpha})
    n->param_dtypes.push_back(pp->defined() ? pp->dtype() : DType::F32);
  const std::vector<Var> inputs = {q, k, v, x, pv.wq, pv.wk, pv.w_g, pv.b_g, pv.tau, pv.alpha};
  const bool rec = any_requires_grad(inputs);
  Tensor y = ops::lizard_attention_forward(cfg, n->in, n->p, rec ? &n->saved : nullptr);
  if (!rec) return Var(y, false);
  return make_result(std::move(y), inputs, std::move(n));
}

}  // namespace lizard::autograd
