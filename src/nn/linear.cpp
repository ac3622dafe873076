#include "lizard/nn/linear.h"

#include <cmath>

#include "lizard/autograd/functions.h"
#include "lizard/autograd/nn_functions.h"
#include "lizard/ops/matmul.h"

namespace lizard::nn {

namespace ag = lizard::autograd;

Linear::Linear(int64_t in, int64_t out, bool bias, DType dtype, Device device)
    : in_(in), out_(out) {
  weight_ = register_parameter("weight", Var(Tensor::zeros({out, in}, dtype, device)));
  if (bias) bias_ = register_parameter("bias", Var(Tensor::zeros({out}, dtype, device)));
}

Var Linear::forward(const Var& x) const { return forward_add(x, Var()); }

Var Linear::forward_add(const Var& x, const Var& residual) const {
  LZ_CHECK(x.size(-1) == in_, "Linear(", in_, " -> ", out_, "): input ", x.data().desc());
  Shape out_shape = x.shape();
  out_shape.back() = out_;
  LZ_CHECK(!residual.defined() || residual.shape() == out_shape, "Linear(", in_, " -> ", out_,
           ")::forward_add: residual ", residual.data().desc(), " must have the output's shape ",
           shape_str(out_shape));
  const bool flat = x.dim() == 2;
  Var y = forward_2d(flat ? x : ag::reshape(x, {-1, in_}),
                     flat || !residual.defined() ? residual : ag::reshape(residual, {-1, out_}));
  return flat ? y : ag::reshape(y, out_shape);
}

Var Linear::forward_2d(const Var& x2, const Var& residual2) const {
  // With or without a residual, the backward adds a gradient sum the engine already holds for
  // x inside the dx GEMM (several projections of one input: no add kernels).
  Var y = ag::matmul_add(x2, weight_, residual2, 1.0, false, true);
  if (bias_.defined()) y = ag::add(y, bias_);
  return y;
}

void Linear::init_normal(double std, uint64_t seed, uint64_t offset) {
  weight_.set_data(Tensor::normal({out_, in_}, 0.0, std, seed, offset, weight_.dtype())
                       .to(weight_.device()));
  if (bias_.defined()) bias_.set_data(Tensor::zeros(bias_.shape(), bias_.dtype(), bias_.device()));
}

LoRALinear::LoRALinear(int64_t in, int64_t out, bool bias, const LoraConfig& cfg, uint64_t seed,
                       uint64_t offset, DType dtype, Device device)
    : Linear(in, out, bias, dtype, device), cfg_(cfg) {
  LZ_CHECK(cfg.r > 0, "LoRA rank must be positive, got ", cfg.r);
  // peft: kaiming_uniform_(a=sqrt(5)) -> bound = 1/sqrt(fan_in).
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  a_ = register_parameter("lora_A.weight",
                          Var(Tensor::uniform({cfg.r, in}, -bound, bound, seed, offset, DType::F32)
                                  .to(device, dtype)));
  b_ = register_parameter("lora_B.weight", Var(Tensor::zeros({out, cfg.r}, dtype, device)));
  weight_.set_tag(ParamTag::Frozen);
  if (bias_.defined()) bias_.set_tag(ParamTag::Frozen);
  a_.set_tag(ParamTag::Adapter);
  b_.set_tag(ParamTag::Adapter);
}

Var LoRALinear::forward_2d(const Var& x2, const Var& residual2) const {
  Var base = Linear::forward_2d(x2, residual2);
  Var xd = x2;
  if (cfg_.dropout > 0 && ag::grad_enabled())
    xd = ag::dropout(x2, cfg_.dropout, drop_seed_, drop_offset_);
  Var t = ag::matmul(xd, a_, false, true);  // [N, r]
  // y = (alpha / r) t B^T + base in one GEMM: base is rounded once (its own GEMM's output) and
  // the low-rank term joins it in fp32 before the single rounding of y, so this is at least as
  // accurate as the unfused scale-then-add (which rounded t B^T, its scaling and the sum).
  return ag::matmul_add(t, b_, base, lora_scale(), false, true);
}

Tensor LoRALinear::merged_weight() const {
  Tensor ba = ops::matmul(b_.data().to(DType::F32), a_.data().to(DType::F32));  // [out, in]
  Tensor w = weight_.data().to(DType::F32);
  return ops::add(w, ops::affine(ba, lora_scale()))
      .to(weight_.dtype());
}

}  // namespace lizard::nn
