// Accuracy of a model on the synthetic recall tasks (MQAR and passkey), teacher or student.
// Both score the greedy prediction teacher-forced: the argmax of the logits at the position
// before each answer token. For a multi-token answer, all argmaxes right with the true prefix
// is exactly "greedy decoding reproduces the answer", so one forward replaces a decode loop.
#pragma once
#include <cstdint>
#include <vector>

#include "lizard/eval/mqar.h"
#include "lizard/eval/passkey.h"
#include "lizard/eval/scoring.h"

namespace lizard::eval {

struct MqarResult {
  int64_t queries = 0, correct = 0;
  int64_t inside = 0, inside_correct = 0;  ///< distance < window
  int64_t beyond = 0, beyond_correct = 0;  ///< distance >= window
  int64_t window = 0;
  /// By the queried pair's slot in the sequence (pair i sits at positions 2i+1, 2i+2): which
  /// pairs a model recalls, not only how many (a model that learnt a positional shortcut
  /// recalls some slots and misses others).
  std::vector<int64_t> slot_queries, slot_correct;
  static double ratio(int64_t a, int64_t b) { return b > 0 ? static_cast<double>(a) / static_cast<double>(b) : 0.0; }
  double accuracy() const { return ratio(correct, queries); }
  double inside_accuracy() const { return ratio(inside_correct, inside); }
  double beyond_accuracy() const { return ratio(beyond_correct, beyond); }
};

/// A query is correct when argmax(logits at query_pos) is its value (over the whole vocabulary).
/// `window` splits the report by distance (mqar.h defines it); pass the Lizard window.
MqarResult mqar_accuracy(const nn::LlamaForCausalLM& model, const std::vector<MqarSample>& samples,
                         int64_t window, const EvalOptions& opt = {});

struct PasskeyResult {
  int64_t length = 0;
  int64_t samples = 0, correct = 0;        ///< every digit right (= greedy decode is right)
  int64_t digits = 0, digits_correct = 0;  ///< per-digit, teacher-forced
  double accuracy() const { return samples > 0 ? static_cast<double>(correct) / static_cast<double>(samples) : 0.0; }
  double digit_accuracy() const {
    return digits > 0 ? static_cast<double>(digits_correct) / static_cast<double>(digits) : 0.0;
  }
};

/// Scores pre-built samples (all counted in one result; `length` is left 0).
PasskeyResult passkey_accuracy(const nn::LlamaForCausalLM& model,
                               const std::vector<PasskeySample>& samples, const EvalOptions& opt = {});

/// For each length: `trials` samples at each depth (sample index = depth index * trials + trial
/// of stream seed), digits from `spec` (its length and depth are overridden). One result per
/// length, in order.
std::vector<PasskeyResult> passkey_accuracy(const nn::LlamaForCausalLM& model,
                                            const SyntheticVocab& vocab,
                                            const std::vector<int64_t>& lengths,
                                            const std::vector<double>& depths, int64_t trials,
                                            uint64_t seed, const PasskeySpec& spec = {},
                                            const EvalOptions& opt = {});

}  // namespace lizard::eval
