#include "lizard/io/pretokenize_regex.h"

#include "lizard/io/unicode.h"

namespace lizard::io {

namespace {

const char* const kGpt2 = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char* const kLlama3 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kQwen2 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

bool is_nl(uint32_t c) { return c == '\r' || c == '\n'; }
// [^\s\p{L}\p{N}]
bool is_sym(uint32_t c) { return !is_whitespace(c) && !is_letter(c) && !is_number(c); }

// Case-insensitive compare of one code point with an ASCII lowercase letter, as Oniguruma's
// (?i) does with Unicode case folding: U+017F (long s) folds to 's'.
bool ci_eq(uint32_t c, char lower) {
  if (c < 0x80) return static_cast<char>(c | 0x20) == lower && ((c | 0x20) >= 'a');
  return lower == 's' && c == 0x17F;
}

// 's|'t|'re|'ve|'m|'ll|'d at i: the match length or 0.
size_t contraction(const std::vector<uint32_t>& s, size_t i, bool ci) {
  const size_t n = s.size();
  if (s[i] != '\'' || i + 1 >= n) return 0;
  auto eq = [&](uint32_t c, char l) { return ci ? ci_eq(c, l) : c == static_cast<uint32_t>(l); };
  const uint32_t a = s[i + 1];
  if (eq(a, 's') || eq(a, 't')) return 2;
  if (i + 2 < n) {
    const uint32_t b = s[i + 2];
    if ((eq(a, 'r') && eq(b, 'e')) || (eq(a, 'v') && eq(b, 'e'))) return 3;
  }
  if (eq(a, 'm')) return 2;
  if (i + 2 < n && eq(a, 'l') && eq(s[i + 2], 'l')) return 3;
  if (eq(a, 'd')) return 2;
  return 0;
}

template <class P>
size_t run(const std::vector<uint32_t>& s, size_t i, P pred, size_t max = SIZE_MAX) {
  size_t j = i;
  while (j < s.size() && j - i < max && pred(s[j])) ++j;
  return j;
}

// The whitespace alternatives shared by all three: [\s*[\r\n]+ |] \s+(?!\S) | \s+ at i.
size_t whitespace_tail(const std::vector<uint32_t>& s, size_t i, bool newline_alt) {
  if (!is_whitespace(s[i])) return 0;
  const size_t e = run(s, i, is_whitespace);
  if (newline_alt) {
    // \s*[\r\n]+ : greedy \s* backs off to the last newline of the run.
    for (size_t k = e; k-- > i;)
      if (is_nl(s[k])) return k + 1 - i;
  }
  // \s+(?!\S): the whole run at the end of input, else the run minus its last char (if >= 2).
  if (e == s.size()) return e - i;
  if (e - i >= 2) return e - 1 - i;
  return e - i;  // \s+
}

size_t match_gpt2(const std::vector<uint32_t>& s, size_t i) {
  if (size_t m = contraction(s, i, false)) return m;
  const size_t n = s.size();
  const size_t j = (s[i] == ' ' && i + 1 < n) ? i + 1 : i;  // the optional leading space
  for (auto pred : {is_letter, is_number, is_sym}) {
    if (pred(s[j])) return run(s, j, pred) - i;
    if (j != i && pred(s[i])) return run(s, i, pred) - i;  // ' ' itself never qualifies
  }
  return whitespace_tail(s, i, false);
}

size_t match_llama3(const std::vector<uint32_t>& s, size_t i, size_t max_digits) {
  if (size_t m = contraction(s, i, true)) return m;
  const size_t n = s.size();
  const uint32_t c = s[i];
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (!is_nl(c) && !is_letter(c) && !is_number(c) && i + 1 < n && is_letter(s[i + 1]))
    return run(s, i + 1, is_letter) - i;
  if (is_letter(c)) return run(s, i, is_letter) - i;
  // \p{N}{1,3} (Llama-3) or \p{N} (Qwen2)
  if (is_number(c)) return run(s, i, is_number, max_digits) - i;
  // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
  size_t j = (c == ' ' && i + 1 < n && is_sym(s[i + 1])) ? i + 1 : i;
  if (is_sym(s[j])) return run(s, run(s, j, is_sym), is_nl) - i;
  return whitespace_tail(s, i, true);
}

}  // namespace

const char* split_regex_pattern(SplitRegex r) {
  switch (r) {
    case SplitRegex::Gpt2: return kGpt2;
    case SplitRegex::Llama3: return kLlama3;
    case SplitRegex::Qwen2: return kQwen2;
  }
  return "";
}

bool split_regex_from_pattern(const std::string& p, SplitRegex* out) {
  for (SplitRegex r : {SplitRegex::Gpt2, SplitRegex::Llama3, SplitRegex::Qwen2})
    if (p == split_regex_pattern(r)) {
      *out = r;
      return true;
    }
  return false;
}

std::vector<std::pair<size_t, size_t>> split_regex_matches(SplitRegex r,
                                                           const std::vector<uint32_t>& s) {
  std::vector<std::pair<size_t, size_t>> out;
  for (size_t i = 0; i < s.size();) {
    size_t m = 0;
    switch (r) {
      case SplitRegex::Gpt2: m = match_gpt2(s, i); break;
      case SplitRegex::Llama3: m = match_llama3(s, i, 3); break;
      case SplitRegex::Qwen2: m = match_llama3(s, i, 1); break;
    }
    if (m == 0) {  // unreachable for these patterns (every char matches some branch); be safe
      ++i;
      continue;
    }
    out.emplace_back(i, i + m);
    i += m;
  }
  return out;
}

}  // namespace lizard::io
