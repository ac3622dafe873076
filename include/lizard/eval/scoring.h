// The model-facing primitives every evaluator shares: batching token rows, a no-grad forward,
// per-sequence negative log-likelihood and host copies of single logit rows. Logits stay on
// the model's device; only per-row sums or single [V] rows come back to the host, so a 128K
// vocabulary at 2K tokens never crosses the bus whole.
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

#include "lizard/core/tensor.h"
#include "lizard/nn/llama.h"

namespace lizard::eval {

/// Options shared by the evaluators.
struct EvalOptions {
  bool teacher = true;     ///< softmax attention (the teacher) or the student path
  int64_t batch_size = 8;  ///< sequences per forward
};

/// The device of the model's parameters (where ids must live).
Device model_device(const nn::LlamaForCausalLM& model);

/// Rows right-padded with `pad` to the longest: i32 [B, T_max] on `device`. Right padding is
/// exact for a causal model: a position never sees the padding after it.
Tensor make_batch(const std::vector<std::vector<int32_t>>& rows, int32_t pad, Device device);

/// Logits [B, T, V] of ids i32 [B, T] (no tape), teacher or student path.
Tensor eval_logits(const nn::LlamaForCausalLM& model, const Tensor& ids, bool teacher);

/// {sum over t with targets[t] >= 0 of -log softmax(logits_tv[t])[targets[t]], that count}.
/// logits_tv [T, V] (any device, float), targets host [T] (-1 = not counted).
std::pair<double, int64_t> nll_sum(const Tensor& logits_tv, const std::vector<int32_t>& targets);

/// Row logits_btv[b, t, :] as host doubles.
std::vector<double> logits_row(const Tensor& logits_btv, int64_t b, int64_t t);

/// Index of the largest value (the first on ties, as numpy.argmax).
int32_t argmax(const std::vector<double>& v);

}  // namespace lizard::eval
