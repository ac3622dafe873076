// A Hugging Face tokenizer.json, for the BPE tokenizers of the Llama family:
// - byte-level BPE (Llama-3, Qwen2, GPT-2): Split pre-tokenizer with the Llama-3/Qwen2 regex (or
//   ByteLevel's own GPT-2 regex), the ByteLevel byte <-> unicode mapping, ByteLevel decoder;
// - byte-fallback BPE (Llama-2, Mistral): Prepend/Replace "▁" normalizer or Metaspace
//   pre-tokenizer, <0xNN> byte tokens, Replace/ByteFallback/Fuse/Strip or Metaspace decoder.
// Added tokens are split out of the raw text before normalisation (leftmost-longest match, with
// lstrip/rstrip/single_word); TemplateProcessing adds BOS/EOS when add_special is true.
// Any component outside this set is an InputError naming it, at load time.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lizard/io/json.h"

namespace lizard::io {

class Tokenizer {
 public:
  /// Loads `path` (a tokenizer.json, or a directory containing one).
  static Tokenizer from_file(const std::string& path);
  /// Builds from a parsed tokenizer.json; `source` names it in errors.
  static Tokenizer from_json(const Json& j, const std::string& source = "tokenizer.json");

  /// Token ids of `text` (UTF-8; invalid bytes are treated as U+FFFD). With `add_special`, the
  /// post-processor's template (e.g. BOS) is applied, as transformers' add_special_tokens.
  std::vector<int32_t> encode(const std::string& text, bool add_special = true) const;
  /// Text of `ids`; special added tokens are dropped when `skip_special` (tokenizers' default).
  /// Unknown ids are an InputError.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = true) const;

  /// One past the largest id of the vocabulary and the added tokens.
  int64_t vocab_size() const;
  /// Id of a token string (vocab or added), or -1.
  int32_t token_to_id(const std::string& token) const;
  /// Token string of an id; InputError when out of range or unused.
  const std::string& id_to_token(int32_t id) const;
  /// The first special token the template puts before the sequence (BOS), or -1.
  int32_t bos_id() const;
  /// The first special token the template puts after the sequence, or -1 (Llama templates add
  /// none; take EOS from the model config then).
  int32_t eos_id() const;
  /// True for added tokens marked "special".
  bool is_special(int32_t id) const;

  struct Impl;

 private:
  std::shared_ptr<const Impl> impl_;
};

}  // namespace lizard::io
