// Constant-memory decoding (DESIGN.md "Decode"): a StepModel that runs the model one token at a
// time with per-layer state instead of re-running the whole prefix.
//   - Lizard layers (student path): ops::lizard_prefill over the prompt, then
//     ops::lizard_decode_step per token: an f32 state [S | z] per head and a ring buffer of the
//     last `window` keys/values, so their memory does not grow with the sequence.
//   - Softmax layers (the teacher path, or softmax_layers of a hybrid): a KV cache of the
//     RoPE-rotated keys and the values (f32, host), trimmed to the model's sliding_window when
//     it has one; it grows with T otherwise, as a softmax layer must.
// Embeddings, norms, projections, MLPs and the LM head run on the model's device for the new
// tokens only. Both caches live on the host (the Lizard decode step is a CPU op that copies its
// inputs), so the decoder works for CPU and CUDA models alike; the prefill of a CUDA model runs
// its softmax layers on the GPU.
//
// Its logits equal RecomputeStepModel's at every position (tests/eval/recurrent_decoder_test).
#pragma once
#include <cstdint>
#include <vector>

#include "lizard/eval/generate.h"
#include "lizard/ops/lizard_attention.h"

namespace lizard::eval {

class RecurrentStepModel : public StepModel {
 public:
  /// `teacher` runs every layer as softmax attention (the original model); otherwise
  /// linearized layers use their Lizard attention. The model must outlive the decoder.
  explicit RecurrentStepModel(const nn::LlamaForCausalLM& model, bool teacher = false);
  /// Resets the state and runs the prompt (>= 1 token) in parallel form; logits [V] of the next.
  std::vector<float> prefill(const std::vector<int32_t>& prompt) override;
  /// One token through the recurrent form; logits [V] of the token after it.
  std::vector<float> step(int32_t token) override;

  /// Tokens consumed since the last prefill (the position of the next token).
  int64_t position() const { return pos_; }
  /// Bytes of decoding state held: Lizard [S | z] and rings, softmax KV caches. Constant in
  /// the position for an all-Lizard model once the ring is allocated (it is from the start).
  int64_t state_bytes() const;

 private:
  struct LayerState {
    bool lizard = false;
    ops::LizardDecodeState lz;   ///< Lizard layers
    std::vector<float> k, v;     ///< softmax layers: [P, Hkv, D] rotated keys, values (host f32)
  };
  /// Runs `tokens` at positions pos_.. through every layer, updating the state; returns the
  /// logits of the last one.
  std::vector<float> run(const std::vector<int32_t>& tokens);
  /// One query row against the KV cache of layer `st` (host f32): q_bhd [1, 1, H, D] rotated.
  Tensor softmax_decode(const LayerState& st, const Tensor& q) const;

  const nn::LlamaForCausalLM& model_;
  bool teacher_;
  std::vector<LayerState> layers_;
  int64_t pos_ = 0;
};

}  // namespace lizard::eval
