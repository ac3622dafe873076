#include "lizard/io/unicode.h"

#include <algorithm>

namespace lizard::io {

using namespace unicode_data;

int utf8_len(unsigned char b) {
  if (b < 0x80) return 1;
  if ((b & 0xE0) == 0xC0) return 2;
  if ((b & 0xF0) == 0xE0) return 3;
  if ((b & 0xF8) == 0xF0) return 4;
  return 1;
}

std::vector<uint32_t> utf8_decode(const std::string& s) {
  std::vector<uint32_t> out;
  out.reserve(s.size());
  const size_t n = s.size();
  for (size_t i = 0; i < n;) {
    const unsigned char b = static_cast<unsigned char>(s[i]);
    const int len = utf8_len(b);
    if (len == 1) {
      out.push_back(b < 0x80 ? b : 0xFFFD);
      ++i;
      continue;
    }
    uint32_t cp = b & (0xFF >> (len + 1));
    bool ok = i + len <= n;
    for (int k = 1; ok && k < len; ++k) {
      const unsigned char c = static_cast<unsigned char>(s[i + k]);
      if ((c & 0xC0) != 0x80) ok = false;
      else cp = (cp << 6) | (c & 0x3F);
    }
    // Reject overlong forms, surrogates and values past U+10FFFF.
    static const uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (ok && (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))) ok = false;
    if (!ok) {
      out.push_back(0xFFFD);
      ++i;
      continue;
    }
    out.push_back(cp);
    i += len;
  }
  return out;
}

void utf8_append(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::string utf8_encode(const std::vector<uint32_t>& cps) {
  std::string out;
  out.reserve(cps.size());
  for (uint32_t cp : cps) utf8_append(cp, out);
  return out;
}

namespace {

bool in_ranges(uint32_t cp, const CodeRange* r, size_t n) {
  // Binary search for the last range with lo <= cp.
  const CodeRange* end = r + n;
  const CodeRange* it =
      std::upper_bound(r, end, cp, [](uint32_t v, const CodeRange& x) { return v < x.lo; });
  if (it == r) return false;
  --it;
  return cp <= it->hi;
}

// Hangul syllables compose and decompose algorithmically (Unicode 3.12).
constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
                   kSCount = kLCount * kNCount;

void decompose(uint32_t cp, std::vector<uint32_t>& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const uint32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount) out.push_back(kTBase + s % kTCount);
    return;
  }
  const Decomposition* end = kDecomp + kDecompCount;
  const Decomposition* it = std::lower_bound(
      kDecomp, end, cp, [](const Decomposition& d, uint32_t v) { return d.cp < v; });
  if (it == end || it->cp != cp) {
    out.push_back(cp);
    return;
  }
  decompose(it->first, out);
  if (it->second) decompose(it->second, out);
}

// The primary composite of (a, b), or 0.
uint32_t compose_pair(uint32_t a, uint32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
      b < kTBase + kTCount)
    return a + (b - kTBase);
  const Composition* end = kCompose + kComposeCount;
  const Composition* it = std::lower_bound(kCompose, end, std::make_pair(a, b),
                                           [](const Composition& c, std::pair<uint32_t, uint32_t> v) {
                                             return c.first < v.first ||
                                                    (c.first == v.first && c.second < v.second);
                                           });
  if (it != end && it->first == a && it->second == b) return it->composite;
  return 0;
}

}  // namespace

bool is_letter(uint32_t cp) {
  if (cp < 0x80) return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
  return in_ranges(cp, kLetter, kLetterCount);
}

bool is_number(uint32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  return in_ranges(cp, kNumber, kNumberCount);
}

bool is_whitespace(uint32_t cp) { return in_ranges(cp, kWhiteSpace, kWhiteSpaceCount); }

int combining_class(uint32_t cp) {
  if (cp < 0x300) return 0;
  const CccRange* end = kCcc + kCccCount;
  const CccRange* it =
      std::upper_bound(kCcc, end, cp, [](uint32_t v, const CccRange& x) { return v < x.lo; });
  if (it == kCcc) return 0;
  --it;
  return cp <= it->hi ? it->ccc : 0;
}

std::string nfc(const std::string& s) {
  // ASCII is already NFC: the common case costs one scan.
  bool ascii = true;
  for (unsigned char c : s)
    if (c >= 0x80) {
      ascii = false;
      break;
    }
  if (ascii) return s;
  // 1. Full canonical decomposition.
  std::vector<uint32_t> d;
  d.reserve(s.size());
  for (uint32_t cp : utf8_decode(s)) decompose(cp, d);
  // 2. Canonical ordering: stable sort of each run of non-starters by combining class.
  for (size_t i = 0; i < d.size();) {
    if (combining_class(d[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < d.size() && combining_class(d[j]) != 0) ++j;
    std::stable_sort(d.begin() + i, d.begin() + j, [](uint32_t a, uint32_t b) {
      return combining_class(a) < combining_class(b);
    });
    i = j;
  }
  // 3. Canonical composition: each character composes with the last starter unless a character
  // in between blocks it (same or higher class, or a starter).
  std::vector<uint32_t> out;
  out.reserve(d.size());
  long starter = -1;  // index in `out` of the last starter
  int last_ccc = 0;
  for (uint32_t cp : d) {
    const int ccc = combining_class(cp);
    if (starter >= 0) {
      const bool blocked = out.size() - 1 != static_cast<size_t>(starter) &&
                           (last_ccc == 0 || last_ccc >= ccc);
      if (!blocked) {
        const uint32_t c = compose_pair(out[starter], cp);
        if (c) {
          out[starter] = c;
          continue;
        }
      }
    }
    if (ccc == 0) starter = static_cast<long>(out.size());
    last_ccc = ccc;
    out.push_back(cp);
  }
  return utf8_encode(out);
}

}  // namespace lizard::io
