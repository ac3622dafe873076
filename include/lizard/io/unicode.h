// Unicode helpers for the tokenizer: UTF-8 decoding/encoding, the character classes the
// pre-tokenizer regexes use (\p{L}, \p{N}, \s), and NFC normalisation. The tables are generated
// from Python's unicodedata by scripts/gen_unicode_tables.py into src/io/unicode_tables.cpp.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace lizard::io {

namespace unicode_data {
struct CodeRange {
  uint32_t lo, hi;  // inclusive
};
struct CccRange {
  uint32_t lo, hi;
  uint8_t ccc;
};
struct Decomposition {
  uint32_t cp, first, second;  // second = 0 for a singleton
};
struct Composition {
  uint32_t first, second, composite;
};
extern const char* const kUnicodeVersion;
extern const CodeRange kLetter[];
extern const size_t kLetterCount;
extern const CodeRange kNumber[];
extern const size_t kNumberCount;
extern const CodeRange kWhiteSpace[];
extern const size_t kWhiteSpaceCount;
extern const CccRange kCcc[];
extern const size_t kCccCount;
extern const Decomposition kDecomp[];  // sorted by cp
extern const size_t kDecompCount;
extern const Composition kCompose[];  // sorted by (first, second)
extern const size_t kComposeCount;
}  // namespace unicode_data

/// Decodes UTF-8 into code points. Invalid bytes become U+FFFD (one per bad byte), like a
/// lossy decoder, so tokenization never throws on odd input.
std::vector<uint32_t> utf8_decode(const std::string& s);
/// Appends the UTF-8 encoding of cp.
void utf8_append(uint32_t cp, std::string& out);
std::string utf8_encode(const std::vector<uint32_t>& cps);
/// Byte length of the UTF-8 sequence that starts with byte b (1 for a stray continuation byte).
int utf8_len(unsigned char b);

/// General category L* (\p{L}).
bool is_letter(uint32_t cp);
/// General category Nd, Nl, No (\p{N}).
bool is_number(uint32_t cp);
/// The White_Space property (what \s matches in Unicode mode).
bool is_whitespace(uint32_t cp);
/// Canonical combining class (0 for starters).
int combining_class(uint32_t cp);
/// Unicode Normalization Form C of a UTF-8 string (the "NFC" normalizer of tokenizer.json).
std::string nfc(const std::string& s);

}  // namespace lizard::io
