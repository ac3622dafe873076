// Multiple-choice scoring by log-likelihood, the way lm-evaluation-harness does it
// (output_type: multiple_choice):
//   - each choice is scored as the continuation `delimiter + choice` of the context; the pair is
//     encoded as lm-eval's _encode_pair does: trailing spaces of the context move to the
//     continuation, whole = encode(context + continuation), context_enc = encode(context),
//     continuation_enc = whole[len(context_enc):];
//   - ll = sum of log p over the continuation tokens; the input is left-truncated to the last
//     max_length + 1 tokens as lm-eval does;
//   - acc: argmax_i ll_i == gold; acc_norm: argmax_i ll_i / len(choice_i) == gold, where len is
//     Python's len of the choice string without the delimiter: Unicode code points, which is the
//     byte length for ASCII text (lm-eval's docs call it byte-length normalisation); numpy's
//     argmax, so the first choice wins ties.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "lizard/eval/scoring.h"

namespace lizard::eval {

struct McExample {
  std::string context;
  std::vector<std::string> choices;
  int64_t gold = 0;
};

/// One JSON object per non-blank line: {"context": str, "choices": [str, ...], "gold": int}
/// ("answer" or "label" are accepted for "gold"). InputError naming `source`, the line and the
/// field on anything else (missing field, gold out of range, fewer than 2 choices).
std::vector<McExample> parse_mc_jsonl(const std::string& text, const std::string& source = "<jsonl>");
/// Reads and parses a file (InputError naming it when unreadable).
std::vector<McExample> load_mc_jsonl(const std::string& path);

/// Text -> token ids (no special tokens added): the model's tokenizer, or SyntheticVocab::encode.
using Encoder = std::function<std::vector<int32_t>(const std::string&)>;

struct McOptions : EvalOptions {
  std::string delimiter = " ";  ///< lm-eval's target_delimiter
  int32_t bos = -1;             ///< prepended to every context when >= 0 (add_bos_token)
  int64_t max_length = 2048;    ///< model context; longer inputs lose their oldest tokens
};

struct McResult {
  int64_t count = 0;
  double acc = 0, acc_norm = 0;              ///< means over examples
  std::vector<std::vector<double>> lls;      ///< [example][choice] log-likelihoods (nats)
  std::vector<int64_t> pred, pred_norm;      ///< per example
};

/// Scores every choice of every example; requests are batched `batch_size` at a time.
McResult multiple_choice(const nn::LlamaForCausalLM& model, const std::vector<McExample>& examples,
                         const Encoder& encode, const McOptions& opt = {});

/// lm-eval's decision from given log-likelihoods: {argmax ll, argmax ll / len(choice)}.
std::pair<int64_t, int64_t> mc_predictions(const std::vector<double>& lls,
                                           const std::vector<std::string>& choices);

/// Unicode code points of a UTF-8 string (Python's len).
int64_t utf8_length(const std::string& s);

}  // namespace lizard::eval
