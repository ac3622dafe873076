#include "lizard/eval/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "lizard/core/error.h"
#include "lizard/eval/draws.h"
#include "lizard/eval/scoring.h"

namespace lizard::eval {

std::vector<float> RecomputeStepModel::prefill(const std::vector<int32_t>& prompt) {
  LZ_INPUT_CHECK(!prompt.empty(), "generate: the prompt must have at least one token");
  ids_ = prompt;
  return last_logits();
}

std::vector<float> RecomputeStepModel::step(int32_t token) {
  LZ_CHECK(!ids_.empty(), "RecomputeStepModel::step before prefill");
  ids_.push_back(token);
  return last_logits();
}

std::vector<float> RecomputeStepModel::last_logits() const {
  const Tensor logits = eval_logits(model_, make_batch({ids_}, 0, model_device(model_)), teacher_);
  return logits.select(0, 0).select(0, logits.size(1) - 1).to_float_vector();
}

int32_t sample_token(const std::vector<float>& logits, double temperature, double top_p,
                     uint64_t seed, uint64_t step) {
  LZ_CHECK(!logits.empty(), "sample_token: empty logits");
  LZ_INPUT_CHECK(temperature >= 0.0 && std::isfinite(temperature),
                 "sampling: temperature must be finite and >= 0, got ", temperature);
  LZ_INPUT_CHECK(top_p > 0.0 && top_p <= 1.0, "sampling: top_p must be in (0, 1], got ", top_p);
  const size_t V = logits.size();
  if (temperature == 0.0)
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  const double m = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p(V);
  double z = 0;
  for (size_t i = 0; i < V; ++i) z += (p[i] = std::exp((static_cast<double>(logits[i]) - m) / temperature));
  for (double& x : p) x /= z;
  std::vector<int32_t> order(V);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return p[a] > p[b]; });
  size_t keep = 0;
  double mass = 0;
  while (keep < V) {
    mass += p[order[keep++]];
    if (mass >= top_p) break;
  }
  Draws d(seed, step);
  double u = d.uniform() * mass;
  for (size_t i = 0; i < keep; ++i) {
    u -= p[order[i]];
    if (u < 0) return order[i];
  }
  return order[keep - 1];  // u rounded past the end of the kept mass
}

std::vector<int32_t> generate(StepModel& model, const std::vector<int32_t>& prompt,
                              const SamplingOptions& opt, const TokenCallback& on_token) {
  LZ_INPUT_CHECK(opt.max_new_tokens >= 0, "generate: max_new_tokens must be >= 0, got ",
                 opt.max_new_tokens);
  std::vector<int32_t> out;
  if (opt.max_new_tokens == 0) return out;
  std::vector<float> logits = model.prefill(prompt);
  for (int64_t i = 0; i < opt.max_new_tokens; ++i) {
    const int32_t tok = sample_token(logits, opt.temperature, opt.top_p, opt.seed, static_cast<uint64_t>(i));
    out.push_back(tok);
    const bool go_on = on_token ? on_token(tok) : true;
    if (!go_on || tok == opt.eos || i + 1 == opt.max_new_tokens) break;
    logits = model.step(tok);
  }
  return out;
}

std::vector<int32_t> generate(const nn::LlamaForCausalLM& model, const std::vector<int32_t>& prompt,
                              const SamplingOptions& opt, bool teacher, const TokenCallback& on_token) {
  RecomputeStepModel sm(model, teacher);
  return generate(sm, prompt, opt, on_token);
}

}  // namespace lizard::eval
