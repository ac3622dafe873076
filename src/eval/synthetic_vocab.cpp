#include "lizard/eval/synthetic_vocab.h"

#include <algorithm>
#include <set>
#include <sstream>

#include "lizard/core/error.h"
#include "lizard/eval/grammar.h"
#include "lizard/eval/passkey.h"

namespace lizard::eval {

SyntheticVocab::SyntheticVocab(const SyntheticVocabSpec& spec) : spec_(spec) {
  LZ_INPUT_CHECK(spec.num_keys >= 1 && spec.num_values >= 1,
                 "synthetic vocabulary: num_keys and num_values must be >= 1, got ", spec.num_keys,
                 " and ", spec.num_values);
  auto add = [&](const std::string& w) {
    LZ_CHECK(!ids_.count(w), "synthetic vocabulary: duplicate word '", w, "'");
    ids_[w] = static_cast<int32_t>(words_.size());
    words_.push_back(w);
  };
  add("<pad>");
  add("<bos>");
  add("<eos>");
  digit_base_ = static_cast<int32_t>(words_.size());
  for (int d = 0; d < 10; ++d) add(std::to_string(d));
  for (const char* p : {".", ",", "?", ":", "-"}) add(p);
  // Sorted, so ids do not depend on the order the word lists are written in.
  std::set<std::string> lexicon;
  for (const auto& w : grammar_words()) lexicon.insert(w);
  for (const auto& w : passkey_words()) lexicon.insert(w);
  for (const auto& w : lexicon)
    if (!ids_.count(w)) add(w);
  key_base_ = static_cast<int32_t>(words_.size());
  for (int64_t i = 0; i < spec.num_keys; ++i) add("k" + std::to_string(i));
  value_base_ = static_cast<int32_t>(words_.size());
  for (int64_t i = 0; i < spec.num_values; ++i) add("v" + std::to_string(i));
}

int32_t SyntheticVocab::digit(int d) const {
  LZ_CHECK(d >= 0 && d <= 9, "SyntheticVocab::digit: ", d, " is not a digit");
  return digit_base_ + d;
}

int32_t SyntheticVocab::key(int64_t i) const {
  LZ_CHECK(i >= 0 && i < spec_.num_keys, "SyntheticVocab::key: index ", i, " outside [0, ",
           spec_.num_keys, ")");
  return key_base_ + static_cast<int32_t>(i);
}

int32_t SyntheticVocab::value(int64_t i) const {
  LZ_CHECK(i >= 0 && i < spec_.num_values, "SyntheticVocab::value: index ", i, " outside [0, ",
           spec_.num_values, ")");
  return value_base_ + static_cast<int32_t>(i);
}

int32_t SyntheticVocab::id(const std::string& word) const {
  auto it = ids_.find(word);
  LZ_INPUT_CHECK(it != ids_.end(), "synthetic vocabulary has no word '", word, "'");
  return it->second;
}

const std::string& SyntheticVocab::word(int32_t id) const {
  LZ_INPUT_CHECK(id >= 0 && id < size(), "synthetic vocabulary: id ", id, " outside [0, ", size(),
                 ")");
  return words_[static_cast<size_t>(id)];
}

std::vector<int32_t> SyntheticVocab::encode(const std::string& text) const {
  std::istringstream is(text);
  std::vector<int32_t> out;
  std::string w;
  while (is >> w) out.push_back(id(w));
  return out;
}

std::vector<int32_t> SyntheticVocab::encode(const std::vector<std::string>& words) const {
  std::vector<int32_t> out;
  out.reserve(words.size());
  for (const auto& w : words) out.push_back(id(w));
  return out;
}

std::string SyntheticVocab::decode(const std::vector<int32_t>& ids) const {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) s += ' ';
    s += word(ids[i]);
  }
  return s;
}

}  // namespace lizard::eval
