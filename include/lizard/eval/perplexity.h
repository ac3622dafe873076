// Perplexity: exp of the mean negative log-likelihood of the next token over the counted tokens.
//
// Long sequences are cut into consecutive chunks of at most max_length tokens with NO overlap
// (the stride = max_length convention): inside a chunk, token j (j >= 1) is predicted from
// tokens 0..j-1 of that chunk only, and the first token of every chunk is not predicted. A
// sequence of n tokens therefore contributes n - ceil(n / max_length) predictions (fewer with a
// loss mask). This is cheaper than a sliding window and gives a slightly higher perplexity for
// the tokens right after a cut; compare numbers only at the same max_length.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "lizard/eval/scoring.h"
#include "lizard/eval/synthetic_vocab.h"

namespace lizard::eval {

struct PerplexityOptions : EvalOptions {
  int64_t max_length = 2048;  ///< tokens per forward; longer sequences are chunked
};

struct PerplexityResult {
  double nll_sum = 0;  ///< nats, summed over counted tokens
  int64_t tokens = 0;  ///< counted (predicted) tokens
  double mean_nll() const { return tokens > 0 ? nll_sum / static_cast<double>(tokens) : 0.0; }
  double perplexity() const { return std::exp(mean_nll()); }
};

/// Over documents: token p (p >= 1 within its chunk) counts when loss_mask[p] == 1 (an empty
/// mask counts every token). Batches chunks `batch_size` at a time, right-padded.
PerplexityResult perplexity(const nn::LlamaForCausalLM& model, const std::vector<TokenDocument>& docs,
                            const PerplexityOptions& opt = {});

/// Over plain token sequences: every predicted token counts.
PerplexityResult perplexity(const nn::LlamaForCausalLM& model,
                            const std::vector<std::vector<int32_t>>& sequences,
                            const PerplexityOptions& opt = {});

}  // namespace lizard::eval
