// Turning raw text into token documents for `lizard prepare-data`: Alpaca instruction data
// (JSON list or JSONL of instruction/input/output; the prompt is masked out of the loss),
// plain text (documents separated by blank lines, or one per line) and JSONL {"text": ...}.
// The tokenizer is a plain function so tests can use a byte tokenizer.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace lizard::train {

/// encode(text, add_special): token ids (add_special = the tokenizer's BOS template).
using Encoder = std::function<std::vector<int32_t>(const std::string&, bool)>;

/// One raw document: `prompt` (not trained on) then `response` (trained on). Plain text has
/// an empty prompt.
struct RawDocument {
  std::string prompt;
  std::string response;
};

/// The standard Stanford Alpaca prompt templates; {instruction} and {input} are replaced.
struct AlpacaTemplate {
  std::string with_input =
      "Below is an instruction that describes a task, paired with an input that provides "
      "further context. Write a response that appropriately completes the request.\n\n"
      "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n";
  std::string no_input =
      "Below is an instruction that describes a task. Write a response that appropriately "
      "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n";
};

/// Reads Alpaca records from a JSON list or JSONL file (detected by the first character).
/// InputError naming the file and record on bad JSON or a missing instruction/output.
std::vector<RawDocument> read_alpaca(const std::string& path, const AlpacaTemplate& tmpl = {});
/// Plain text: `one_per_line` splits at every newline, else at blank lines; empty documents
/// are dropped.
std::vector<RawDocument> read_text(const std::string& path, bool one_per_line);
/// JSONL with a "text" member per line.
std::vector<RawDocument> read_jsonl_text(const std::string& path);

struct TokenizedDocument {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> mask;  ///< 1 = target
};

/// encode(prompt, true) ++ encode(response, prompt.empty()) ++ [eos if eos_id >= 0]; mask 0 on
/// the prompt, 1 on the response and EOS. `max_tokens` > 0 truncates (keeping the prompt).
TokenizedDocument tokenize_document(const RawDocument& doc, const Encoder& encode, int32_t eos_id,
                                    int64_t max_tokens = 0);

/// 64-bit FNV-1a of a file's bytes as 16 hex digits (identifies the tokenizer of a dataset).
std::string file_hash(const std::string& path);

}  // namespace lizard::train
