// Small building blocks of a Llama model: Embedding, RMSNorm, the SwiGLU MLP.
#pragma once
#include <memory>

#include "lizard/nn/linear.h"
#include "lizard/nn/module.h"

namespace lizard::nn {

class Embedding : public Module {
 public:
  Embedding(int64_t vocab, int64_t dim, DType dtype = DType::F32, Device device = Device::cpu());
  /// ids (i32/i64 [B, T]) -> [B, T, dim].
  Var forward(const Tensor& ids) const;
  const Var& weight() const { return weight_; }

 private:
  Var weight_;
};

class RMSNorm : public Module {
 public:
  RMSNorm(int64_t dim, double eps, DType dtype = DType::F32, Device device = Device::cpu());
  /// x [..., dim] -> x / rms(x) * w.
  Var forward(const Var& x) const;

 private:
  double eps_;
  Var weight_;
};

/// Which projections of a layer get LoRA adapters (names as in HF: q, k, v, o, gate, up, down).
struct LoraTargets {
  bool q = false, k = false, v = false, o = false, gate = false, up = false, down = false;
};

/// A Linear or, when `lora` is set, a LoRALinear (frozen base, adapters from (seed, offset)).
std::unique_ptr<Linear> make_linear(int64_t in, int64_t out, bool bias, const LoraConfig* lora,
                                    uint64_t seed, uint64_t offset, DType dtype, Device device);

/// down(silu(gate(x)) * up(x)).
class SwiGLUMLP : public Module {
 public:
  SwiGLUMLP(int64_t dim, int64_t hidden, DType dtype, Device device);
  /// With `residual` ([..., dim]) set, returns residual + down(...), the add done inside
  /// down_proj's GEMM (Linear::forward_add).
  Var forward(const Var& x, const Var& residual = Var()) const;
  Linear* gate_proj;
  Linear* up_proj;
  Linear* down_proj;
};

}  // namespace lizard::nn
