// Lizard attention on the tape: one node with every input and parameter of DESIGN.md section 2.
#pragma once
#include "lizard/autograd/variable.h"
#include "lizard/ops/lizard_attention.h"

namespace lizard::autograd {

/// The Lizard parameters of one layer as Vars (shapes of ops::LizardParams; tau may be
/// undefined when there are no sinks).
struct LizardParamVars {
  Var wq, wk, w_g, b_g, tau, alpha;
};

/// y [B, T, H, D] = Lizard attention of q, k, v (no RoPE; cos/sin used only with window_rope)
/// with the gate read from x. Saves the inputs (and on CUDA the forward's chunk states).
/// Parameters are used in their own dtype on CUDA (the kernels read them as f32) and cast to
/// q's dtype on the CPU; gradients come back in each parameter's dtype.
Var lizard_attention(const ops::LizardConfig& cfg, const Var& q, const Var& k, const Var& v,
                     const Var& x, const LizardParamVars& p, const Tensor& cos = Tensor(),
                     const Tensor& sin = Tensor());

}  // namespace lizard::autograd
