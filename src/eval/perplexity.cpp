#include "lizard/eval/perplexity.h"

#include <algorithm>

#include "lizard/core/error.h"

namespace lizard::eval {

namespace {

struct Chunk {
  std::vector<int32_t> ids;
  std::vector<int32_t> targets;  // targets[j] = ids[j + 1] when counted, else -1
};

}  // namespace

PerplexityResult perplexity(const nn::LlamaForCausalLM& model, const std::vector<TokenDocument>& docs,
                            const PerplexityOptions& opt) {
  LZ_INPUT_CHECK(opt.max_length >= 2, "perplexity: max_length must be >= 2, got ", opt.max_length);
  LZ_INPUT_CHECK(opt.batch_size >= 1, "perplexity: batch_size must be >= 1, got ", opt.batch_size);
  std::vector<Chunk> chunks;
  for (size_t d = 0; d < docs.size(); ++d) {
    const TokenDocument& doc = docs[d];
    LZ_INPUT_CHECK(doc.loss_mask.empty() || doc.loss_mask.size() == doc.tokens.size(),
                   "perplexity: document ", d, " has ", doc.tokens.size(), " tokens but ",
                   doc.loss_mask.size(), " mask entries");
    LZ_INPUT_CHECK(doc.inputs.empty() || doc.inputs.size() == doc.tokens.size(), "perplexity: document ",
                   d, " has ", doc.tokens.size(), " tokens but ", doc.inputs.size(), " inputs");
    const int64_t n = static_cast<int64_t>(doc.tokens.size());
    for (int64_t start = 0; start < n; start += opt.max_length) {
      const int64_t end = std::min(n, start + opt.max_length);
      if (end - start < 2) continue;  // a lone token predicts nothing
      Chunk c;
      const std::vector<int32_t>& in = doc.model_inputs();
      c.ids.assign(in.begin() + start, in.begin() + end);
      c.targets.assign(c.ids.size(), -1);
      for (int64_t p = start + 1; p < end; ++p)
        if (doc.loss_mask.empty() || doc.loss_mask[static_cast<size_t>(p)])
          c.targets[static_cast<size_t>(p - start - 1)] = doc.tokens[static_cast<size_t>(p)];
      chunks.push_back(std::move(c));
    }
  }
  // Similar lengths together keep padding small; the sum does not depend on the order.
  std::stable_sort(chunks.begin(), chunks.end(),
                   [](const Chunk& a, const Chunk& b) { return a.ids.size() > b.ids.size(); });
  PerplexityResult r;
  const Device dev = model_device(model);
  for (size_t i = 0; i < chunks.size(); i += static_cast<size_t>(opt.batch_size)) {
    const size_t e = std::min(chunks.size(), i + static_cast<size_t>(opt.batch_size));
    std::vector<std::vector<int32_t>> rows;
    for (size_t k = i; k < e; ++k) rows.push_back(chunks[k].ids);
    const Tensor logits = eval_logits(model, make_batch(rows, SyntheticVocab::pad(), dev), opt.teacher);
    const int64_t T = logits.size(1);
    for (size_t k = i; k < e; ++k) {
      std::vector<int32_t> targets = chunks[k].targets;
      targets.resize(static_cast<size_t>(T), -1);  // padded positions are never counted
      const auto [sum, count] = nll_sum(logits.select(0, static_cast<int64_t>(k - i)), targets);
      r.nll_sum += sum;
      r.tokens += count;
    }
  }
  return r;
}

PerplexityResult perplexity(const nn::LlamaForCausalLM& model,
                            const std::vector<std::vector<int32_t>>& sequences,
                            const PerplexityOptions& opt) {
  std::vector<TokenDocument> docs(sequences.size());
  for (size_t i = 0; i < sequences.size(); ++i) docs[i].tokens = sequences[i];
  return perplexity(model, docs, opt);
}

}  // namespace lizard::eval
