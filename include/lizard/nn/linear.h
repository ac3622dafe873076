// Linear layers: y = x W^T (+ b), W [out, in] in the Hugging Face layout; and the LoRA variant
// y = x W^T (+ b) + (alpha / r) * dropout(x) A^T B^T with A [r, in], B [out, r]. Every add of
// a residual or of the LoRA term rides in a GEMM's epilogue (autograd::matmul_add).
#pragma once
#include <cstdint>
#include <string>

#include "lizard/core/rng.h"
#include "lizard/nn/module.h"

namespace lizard::nn {

class Linear : public Module {
 public:
  /// Weights start at zero; initialise with init_normal/init_uniform or load them.
  Linear(int64_t in, int64_t out, bool bias, DType dtype = DType::F32,
         Device device = Device::cpu());
  /// x [..., in] -> [..., out]. The input is flattened to 2-D so the weight gradient is one GEMM.
  Var forward(const Var& x) const;
  /// residual + forward(x), residual [..., out] of the output's shape: the add rides in the
  /// projection's GEMM (beta = 1, autograd::matmul_add), so no add kernel runs and the
  /// residual's gradient is the output's gradient itself.
  Var forward_add(const Var& x, const Var& residual) const;
  /// W ~ Normal(0, std) from the stream (seed, offset); bias zero.
  void init_normal(double std, uint64_t seed, uint64_t offset);
  const Var& weight() const { return weight_; }
  const Var& bias() const { return bias_; }
  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }

 protected:
  /// The projection of x2 [N, in] (plus residual2 [N, out] when defined) -> [N, out].
  virtual Var forward_2d(const Var& x2, const Var& residual2) const;

  int64_t in_, out_;
  Var weight_, bias_;
};

/// LoRA adapter configuration (DESIGN.md: r=8, alpha=16, dropout 0 by default).
struct LoraConfig {
  int64_t r = 8;
  double alpha = 16.0;
  double dropout = 0.0;
};

/// True for LoRA adapter parameters (`...lora_A.weight`, `...lora_B.weight`).
inline bool is_lora_parameter(const std::string& name) {
  return name.find("lora_") != std::string::npos;
}

class LoRALinear : public Linear {
 public:
  /// Base weights frozen; A Kaiming-uniform (a = sqrt(5), as peft) from (seed, offset); B zero.
  LoRALinear(int64_t in, int64_t out, bool bias, const LoraConfig& cfg, uint64_t seed,
             uint64_t offset, DType dtype = DType::F32, Device device = Device::cpu());
  /// The merged weight W + (alpha / r) B A (a new tensor; the module is unchanged).
  Tensor merged_weight() const;
  const Var& lora_a() const { return a_; }
  const Var& lora_b() const { return b_; }
  /// r, alpha and dropout of this adapter (export writes them to adapter_config.json).
  const LoraConfig& lora_config() const { return cfg_; }
  /// alpha / r, the factor of the low-rank term.
  double lora_scale() const { return cfg_.alpha / static_cast<double>(cfg_.r); }
  /// The frozen base alone, x2 [N, in] -> x2 W^T (+ b): for callers that compute the adapter
  /// term themselves (Attention's fused q/k/v adapters, autograd::lora_fused).
  Var base_forward_2d(const Var& x2) const { return Linear::forward_2d(x2, Var()); }
  /// Dropout stream for the next forward (training); ignored when dropout is 0.
  void set_dropout_stream(uint64_t seed, uint64_t offset) const {
    drop_seed_ = seed;
    drop_offset_ = offset;
  }

 private:
  /// base = x2 W^T (+ b) (+ residual2, in the GEMM); then (alpha / r) (x2 A^T) B^T is added
  /// to base inside the up-projection's GEMM: no scale and no add kernel.
  Var forward_2d(const Var& x2, const Var& residual2) const override;

  LoraConfig cfg_;
  Var a_, b_;
  mutable uint64_t drop_seed_ = 0, drop_offset_ = 0;
};

}  // namespace lizard::nn
