// The word-level vocabulary of the embedded demo: every synthetic task (grammar text, MQAR,
// passkey) is written in it, so the demo needs no tokenizer. Ids are stable for a given spec:
// specials, digits, punctuation, the grammar and passkey words (sorted), then MQAR keys and
// values.
#pragma once
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace lizard::eval {

/// One training/evaluation document: token ids and, per token, whether it is a target
/// (1) or context only (0), as in the HDF5 token dataset's `loss_mask` (DESIGN.md section 5).
struct TokenDocument {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> loss_mask;  ///< same length as tokens
  /// Empty, or what the model reads at each position where it differs from `tokens` (the
  /// targets): e.g. an MQAR answer that is only a label (the dataset's `input_tokens`).
  std::vector<int32_t> inputs;
  const std::vector<int32_t>& model_inputs() const { return inputs.empty() ? tokens : inputs; }
};

struct SyntheticVocabSpec {
  int64_t num_keys = 64;    ///< MQAR key words "k0".."k{n-1}"
  int64_t num_values = 64;  ///< MQAR value words "v0".."v{n-1}"
};

class SyntheticVocab {
 public:
  explicit SyntheticVocab(const SyntheticVocabSpec& spec = {});

  int64_t size() const { return static_cast<int64_t>(words_.size()); }
  static constexpr int32_t pad() { return 0; }
  static constexpr int32_t bos() { return 1; }
  static constexpr int32_t eos() { return 2; }
  /// Id of digit d in [0, 9].
  int32_t digit(int d) const;
  /// Id of MQAR key i in [0, num_keys) / value i in [0, num_values).
  int32_t key(int64_t i) const;
  int32_t value(int64_t i) const;
  bool is_key(int32_t id) const { return id >= key_base_ && id < key_base_ + spec_.num_keys; }
  bool is_value(int32_t id) const {
    return id >= value_base_ && id < value_base_ + spec_.num_values;
  }
  int64_t num_keys() const { return spec_.num_keys; }
  int64_t num_values() const { return spec_.num_values; }

  bool contains(const std::string& word) const { return ids_.count(word) != 0; }
  /// Id of a word; InputError naming the word when it is not in the vocabulary.
  int32_t id(const std::string& word) const;
  /// The word of an id; InputError when out of range.
  const std::string& word(int32_t id) const;
  const std::vector<std::string>& words() const { return words_; }

  /// Whitespace-separated words -> ids (no bos/eos added). Unknown words are an InputError.
  std::vector<int32_t> encode(const std::string& text) const;
  std::vector<int32_t> encode(const std::vector<std::string>& words) const;
  /// Ids -> words joined by single spaces (specials appear as "<bos>" etc.).
  std::string decode(const std::vector<int32_t>& ids) const;

 private:
  SyntheticVocabSpec spec_;
  std::vector<std::string> words_;
  std::unordered_map<std::string, int32_t> ids_;
  int32_t digit_base_ = 0, key_base_ = 0, value_base_ = 0;
};

}  // namespace lizard::eval
