// The split regexes of byte-level BPE tokenizers, matched by hand (no regex engine): GPT-2's
// (ByteLevel use_regex), Llama-3's and Qwen2's (Split pre-tokenizers). Semantics are those of
// Oniguruma/fancy-regex find_iter: leftmost match, alternatives tried in order, greedy
// quantifiers with backtracking; \s is White_Space, \p{L} letters, \p{N} numbers.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace lizard::io {

enum class SplitRegex { Gpt2, Llama3, Qwen2 };

/// The pattern text as it appears in tokenizer.json.
const char* split_regex_pattern(SplitRegex r);
/// The regex whose tokenizer.json text is `pattern`; false when it is none of the known ones.
bool split_regex_from_pattern(const std::string& pattern, SplitRegex* out);
/// The [begin, end) code point spans of all non-overlapping matches in `cps`, left to right.
std::vector<std::pair<size_t, size_t>> split_regex_matches(SplitRegex r,
                                                           const std::vector<uint32_t>& cps);

}  // namespace lizard::io
