#include "lizard/nn/layers.h"

#include "lizard/autograd/functions.h"
#include "lizard/autograd/nn_functions.h"

namespace lizard::nn {

namespace ag = lizard::autograd;

Embedding::Embedding(int64_t vocab, int64_t dim, DType dtype, Device device) {
  weight_ = register_parameter("weight", Var(Tensor::zeros({vocab, dim}, dtype, device)));
}

Var Embedding::forward(const Tensor& ids) const { return ag::embedding(weight_, ids); }

RMSNorm::RMSNorm(int64_t dim, double eps, DType dtype, Device device) : eps_(eps) {
  weight_ = register_parameter("weight", Var(Tensor::ones({dim}, dtype, device)));
}

Var RMSNorm::forward(const Var& x) const { return ag::rmsnorm(x, weight_, eps_); }

std::unique_ptr<Linear> make_linear(int64_t in, int64_t out, bool bias, const LoraConfig* lora,
                                    uint64_t seed, uint64_t offset, DType dtype, Device device) {
  if (lora) return std::make_unique<LoRALinear>(in, out, bias, *lora, seed, offset, dtype, device);
  return std::make_unique<Linear>(in, out, bias, dtype, device);
}

SwiGLUMLP::SwiGLUMLP(int64_t dim, int64_t hidden, DType dtype, Device device) {
  gate_proj = register_module("gate_proj", std::make_unique<Linear>(dim, hidden, false, dtype, device));
  up_proj = register_module("up_proj", std::make_unique<Linear>(dim, hidden, false, dtype, device));
  down_proj = register_module("down_proj", std::make_unique<Linear>(hidden, dim, false, dtype, device));
}

Var SwiGLUMLP::forward(const Var& x, const Var& residual) const {
  // One flattened x for gate and up: their input gradients meet in one buffer, where the
  // second dx GEMM adds onto the first (beta = 1) instead of an add kernel.
  const bool flat = x.dim() == 2;
  const Var x2 = flat ? x : ag::reshape(x, {-1, x.size(-1)});
  Var hidden = ag::swiglu(gate_proj->forward(x2), up_proj->forward(x2));
  Var y = residual.defined() ? down_proj->forward_add(hidden, flat ? residual
                                                                   : ag::reshape(residual, {-1, x.size(-1)}))
                             : down_proj->forward(hidden);
  return flat ? y : ag::reshape(y, x.shape());
}

}  // namespace lizard::nn
