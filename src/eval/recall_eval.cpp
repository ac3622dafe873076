#include "lizard/eval/recall_eval.h"

#include <algorithm>

#include "lizard/core/error.h"

namespace lizard::eval {

namespace {
/// Runs the model over `samples` in batches of opt.batch_size (padded with the demo
/// vocabulary's pad) and calls visit(sample, logits, row of the sample in logits).
template <class Sample, class Visit>
void for_each_sample_logits(const nn::LlamaForCausalLM& model, const std::vector<Sample>& samples,
                            const EvalOptions& opt, Visit&& visit) {
  const Device dev = model_device(model);
  for (size_t i = 0; i < samples.size(); i += static_cast<size_t>(opt.batch_size)) {
    const size_t end = std::min(samples.size(), i + static_cast<size_t>(opt.batch_size));
    std::vector<std::vector<int32_t>> rows;
    for (size_t k = i; k < end; ++k) rows.push_back(samples[k].doc.model_inputs());
    const Tensor logits = eval_logits(model, make_batch(rows, SyntheticVocab::pad(), dev), opt.teacher);
    for (size_t k = i; k < end; ++k) visit(samples[k], logits, static_cast<int64_t>(k - i));
  }
}
}  // namespace

MqarResult mqar_accuracy(const nn::LlamaForCausalLM& model, const std::vector<MqarSample>& samples,
                         int64_t window, const EvalOptions& opt) {
  LZ_INPUT_CHECK(opt.batch_size >= 1, "mqar_accuracy: batch_size must be >= 1");
  MqarResult r;
  r.window = window;
  for_each_sample_logits(model, samples, opt, [&](const MqarSample& s, const Tensor& logits, int64_t row) {
    for (const MqarQuery& q : s.queries) {
      const bool ok = argmax(logits_row(logits, row, q.query_pos)) == q.value;
      const bool in = q.distance() < window;
      const size_t slot = static_cast<size_t>((q.key_pos - 1) / 2);
      if (r.slot_queries.size() <= slot) r.slot_queries.resize(slot + 1, 0), r.slot_correct.resize(slot + 1, 0);
      ++r.slot_queries[slot];
      r.slot_correct[slot] += ok;
      ++r.queries;
      r.correct += ok;
      (in ? r.inside : r.beyond) += 1;
      (in ? r.inside_correct : r.beyond_correct) += ok;
    }
  });
  return r;
}

PasskeyResult passkey_accuracy(const nn::LlamaForCausalLM& model,
                               const std::vector<PasskeySample>& samples, const EvalOptions& opt) {
  LZ_INPUT_CHECK(opt.batch_size >= 1, "passkey_accuracy: batch_size must be >= 1");
  PasskeyResult r;
  for_each_sample_logits(model, samples, opt, [&](const PasskeySample& s, const Tensor& logits, int64_t row) {
    bool all = true;
    for (size_t j = 0; j < s.answer.size(); ++j) {
      const int64_t pos = s.answer_begin + static_cast<int64_t>(j) - 1;  // predicts answer[j]
      const bool ok = argmax(logits_row(logits, row, pos)) == s.answer[j];
      ++r.digits;
      r.digits_correct += ok;
      all = all && ok;
    }
    ++r.samples;
    r.correct += all;
  });
  return r;
}

std::vector<PasskeyResult> passkey_accuracy(const nn::LlamaForCausalLM& model,
                                            const SyntheticVocab& vocab,
                                            const std::vector<int64_t>& lengths,
                                            const std::vector<double>& depths, int64_t trials,
                                            uint64_t seed, const PasskeySpec& spec,
                                            const EvalOptions& opt) {
  LZ_INPUT_CHECK(trials >= 1 && !depths.empty(), "passkey_accuracy: need trials >= 1 and a depth");
  std::vector<PasskeyResult> out;
  for (int64_t len : lengths) {
    std::vector<PasskeySample> samples;
    for (size_t di = 0; di < depths.size(); ++di) {
      PasskeySpec s = spec;
      s.length = len;
      s.depth = depths[di];
      for (int64_t t = 0; t < trials; ++t)
        samples.push_back(passkey_sample(vocab, s, seed, di * static_cast<uint64_t>(trials) + static_cast<uint64_t>(t)));
    }
    PasskeyResult r = passkey_accuracy(model, samples, opt);
    r.length = len;
    out.push_back(r);
  }
  return out;
}

}  // namespace lizard::eval
