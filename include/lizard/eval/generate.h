// Autoregressive generation: greedy (temperature 0) or temperature + top-p (nucleus) sampling
// with the Philox stream (seed, step), so a run is reproducible from its seed on any machine.
//
// The model is reached through StepModel (prefill a prompt, then one token at a time).
// RecomputeStepModel re-runs the whole forward every step (O(T^2) total); the constant-memory
// recurrent decoder implements the same interface and replaces it without touching generate().
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "lizard/nn/llama.h"

namespace lizard::eval {

/// The decode-side view of a causal LM.
class StepModel {
 public:
  virtual ~StepModel() = default;
  /// Starts a new sequence with `prompt` (non-empty); returns the logits [V] of the next token.
  virtual std::vector<float> prefill(const std::vector<int32_t>& prompt) = 0;
  /// Appends `token`; returns the logits [V] of the token after it.
  virtual std::vector<float> step(int32_t token) = 0;
};

/// Full forward over the whole sequence at every step (no cache): the reference decoder.
class RecomputeStepModel : public StepModel {
 public:
  /// `teacher` picks the softmax or the student path (nn::ForwardOptions::teacher).
  explicit RecomputeStepModel(const nn::LlamaForCausalLM& model, bool teacher = true)
      : model_(model), teacher_(teacher) {}
  std::vector<float> prefill(const std::vector<int32_t>& prompt) override;
  std::vector<float> step(int32_t token) override;

 private:
  std::vector<float> last_logits() const;
  const nn::LlamaForCausalLM& model_;
  bool teacher_;
  std::vector<int32_t> ids_;
};

struct SamplingOptions {
  int64_t max_new_tokens = 64;
  double temperature = 0.0;  ///< 0: greedy (argmax, first on ties)
  double top_p = 1.0;        ///< nucleus mass in (0, 1]
  uint64_t seed = 0;         ///< Philox seed; step i draws from stream (seed, i)
  int32_t eos = -1;          ///< stop after emitting this token (>= 0)
};

/// Called with each new token; return false to stop early (the token is kept).
using TokenCallback = std::function<bool(int32_t)>;

/// Picks the next token from logits [V]:
///   temperature == 0: argmax;
///   else p = softmax(logits / temperature) in double; the tokens sorted by p (descending, ties
///   by id) are kept up to and including the first whose cumulative mass reaches top_p (at
///   least one), renormalised, and one is drawn with u = uniform from the Philox stream
///   (seed, step). As top_p -> 0 only the most likely token is kept: greedy.
int32_t sample_token(const std::vector<float>& logits, double temperature, double top_p,
                     uint64_t seed, uint64_t step);

/// Generates up to max_new_tokens after `prompt`; returns the new tokens only.
std::vector<int32_t> generate(StepModel& model, const std::vector<int32_t>& prompt,
                              const SamplingOptions& opt, const TokenCallback& on_token = {});

/// The same on a LlamaForCausalLM through RecomputeStepModel.
std::vector<int32_t> generate(const nn::LlamaForCausalLM& model, const std::vector<int32_t>& prompt,
                              const SamplingOptions& opt, bool teacher = true,
                              const TokenCallback& on_token = {});

}  // namespace lizard::eval
