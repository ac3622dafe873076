// Attention modules. `Attention` is the teacher: q/k/v/o projections (GQA, optional q/k/v bias
// for Qwen2), RoPE, causal softmax attention (Mistral's sliding window honoured). Subclasses
// (LizardAttention) replace the token mixing for the student and keep the projections, so
// one model computes both the teacher's and the student's attention on the same weights.
#pragma once
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "lizard/nn/layers.h"
#include "lizard/nn/llama_config.h"
#include "lizard/ops/rope.h"

namespace lizard::nn {

/// Queries, keys and values of one attention call, RoPE not yet applied.
struct QKV {
  Var q;  ///< [B, T, H, D]
  Var k;  ///< [B, T, Hkv, D]
  Var v;  ///< [B, T, Hkv, D]
};

/// Where LoRA adapters go and with which settings (no config = none).
struct LoraSpec {
  std::optional<LoraConfig> config;
  LoraTargets targets;
  uint64_t seed = 0;
};

class Attention : public Module {
 public:
  Attention(const LlamaConfig& cfg, const LoraSpec& lora, int64_t layer, DType dtype,
            Device device);
  /// x [B, T, d] -> q, k, v split into heads. When q, k and v all carry LoRA adapters of one
  /// rank and alpha without dropout, their three down-projections run as one GEMM
  /// (autograd::lora_fused) on the lora_A weights kept as row blocks of one [3r, d] buffer; the
  /// environment variable LIZARD_LORA_FUSED=0 (read per call) runs them one by one instead,
  /// for comparisons. Either way the same products are formed.
  QKV project(const Var& x) const;
  /// True when project() fuses the q, k, v adapters (see there).
  bool fuses_lora() const { return fuse_lora_; }
  /// The teacher's mixing: RoPE on q and k, causal softmax attention. -> [B, T, H, D].
  Var softmax_mix(const QKV& qkv, const ops::RopeTable& rope) const;
  /// The mixing this layer uses as a student (the teacher's for softmax layers).
  virtual Var student_mix(const Var& x, const QKV& qkv, const ops::RopeTable& rope) const {
    return softmax_mix(qkv, rope);
  }
  /// True for layers whose student differs from the teacher.
  virtual bool is_linearized() const { return false; }
  /// heads [B, T, H, D] -> o_proj -> [B, T, d]. With `residual` ([B, T, d]) set, returns
  /// residual + o_proj(heads), the add done inside o_proj's GEMM (Linear::forward_add).
  Var output(const Var& heads, const Var& residual = Var()) const;
  /// Full attention: teacher or student mixing. `recompute_mix` checkpoints the student's
  /// mixing (only its inputs are kept; it runs again in backward): a linearized layer then
  /// stores no per-chunk kernel state between forward and backward. `residual`: see output().
  Var forward(const Var& x, const ops::RopeTable& rope, bool teacher, bool recompute_mix = false,
              const Var& residual = Var()) const;

  Linear* q_proj;
  Linear* k_proj;
  Linear* v_proj;
  Linear* o_proj;

 protected:
  LlamaConfig cfg_;

 private:
  /// The lora_A weights of q, k, v (fuse_lora_ only).
  std::vector<Var> lora_a_weights() const;
  /// Makes the q, k, v lora_A weights row views of one new [3r, d] buffer, lora_a_cat_ (values
  /// kept). Done at construction and again by project() after a load replaced their data
  /// (Var::set_data), so the fused GEMM reads them in place. Parameter Vars keep their
  /// identity (optimizer state, names, gradients); only their data tensors become views.
  void pack_lora_a() const;

  bool fuse_lora_ = false;
  mutable Tensor lora_a_cat_;
};

/// Builds the attention module of one layer (softmax, or a subclass for the student).
using AttentionFactory =
    std::function<std::unique_ptr<Attention>(const LlamaConfig&, const LoraSpec&, int64_t layer)>;

}  // namespace lizard::nn
