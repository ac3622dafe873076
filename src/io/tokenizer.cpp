#include "lizard/io/tokenizer.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <queue>
#include <unordered_map>

#include "lizard/core/error.h"
#include "lizard/io/pretokenize_regex.h"
#include "lizard/io/unicode.h"

namespace lizard::io {

namespace {

constexpr const char* kSupported =
    "supported: model BPE; normalizers NFC, Prepend, Replace (string), Sequence; pre-tokenizers "
    "ByteLevel, Split (GPT-2/Llama-3/Qwen2 regex or a string; Isolated or Removed), Metaspace, "
    "Digits, Sequence; post-processors TemplateProcessing, ByteLevel, Sequence; decoders "
    "ByteLevel, Metaspace, Replace (string), ByteFallback, Fuse, Strip, Sequence";

// ---- components, as tagged structs (the set is closed: what tokenizer.json files use) ----

struct Normalizer {
  enum Kind { Nfc, Prepend, Replace } kind;
  std::string a, b;  // Prepend: a = prefix; Replace: a -> b
};

struct PreTokenizer {
  enum Kind { ByteLevel, SplitRegexK, SplitString, Metaspace, Digits } kind;
  bool add_prefix_space = false;  // ByteLevel
  bool use_regex = true;          // ByteLevel
  SplitRegex regex = SplitRegex::Gpt2;
  std::string literal;           // SplitString
  bool removed = false;          // Split behavior Removed (else Isolated)
  std::string replacement;       // Metaspace
  std::string prepend_scheme;    // Metaspace: always / first / never
  bool split = true;             // Metaspace
  bool individual_digits = false;
};

struct Decoder {
  enum Kind { ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip } kind;
  std::string a, b;  // Replace a -> b; Metaspace a = replacement; Strip a = content
  bool prepend = true;  // Metaspace: strip the prefix space of the first token
  int64_t start = 0, stop = 0;  // Strip
};

struct AddedToken {
  std::string content;
  int32_t id;
  bool special, lstrip, rstrip, single_word;
};

// One piece of text flowing through the pipeline; `first` marks the segment at the start of
// the input (Metaspace's prepend_scheme "first").
struct Piece {
  std::string text;
  bool first;
};

// GPT-2's reversible byte -> printable code point map.
std::vector<uint32_t> bytes_to_unicode() {
  std::vector<uint32_t> m(256);
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
    m[b] = printable ? b : next++;
  }
  return m;
}

bool starts_with(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(0, p.size(), p) == 0;
}

std::string replace_all(const std::string& s, const std::string& from, const std::string& to) {
  if (from.empty()) return s;
  std::string out;
  size_t i = 0;
  while (true) {
    const size_t k = s.find(from, i);
    if (k == std::string::npos) break;
    out.append(s, i, k - i);
    out += to;
    i = k + from.size();
  }
  out.append(s, i, std::string::npos);
  return out;
}

bool is_ascii_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

}  // namespace

struct Tokenizer::Impl {
  std::string source;
  std::vector<Normalizer> normalizers;
  std::vector<PreTokenizer> pretokenizers;
  std::vector<Decoder> decoders;
  // BPE model
  std::unordered_map<std::string, int32_t> vocab;
  std::vector<std::string> id_to_tok;  // "" for unused ids
  std::vector<bool> id_used;
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges;  // (a, b) -> (rank, merged)
  int32_t unk_id = -1;
  bool fuse_unk = false, byte_fallback = false, ignore_merges = false;
  int32_t byte_ids[256];
  // added tokens, by first byte for the scan
  std::vector<AddedToken> added;
  std::vector<std::vector<size_t>> added_by_first_byte = std::vector<std::vector<size_t>>(256);
  std::vector<bool> special;
  // post-processor template (single sequence)
  std::vector<int32_t> prefix_ids, suffix_ids;
  std::vector<uint32_t> byte_to_cp;
  std::unordered_map<uint32_t, uint8_t> cp_to_byte;

  [[noreturn]] void refuse(const std::string& what) const {
    throw InputError(str_cat(source, ": unsupported tokenizer component: ", what, " (", kSupported, ")"));
  }

  // ---------------------------------------------------------------- loading

  void load_normalizer(const Json& n) {
    if (n.is_null()) return;
    const std::string t = n.at("type").as_string();
    if (t == "Sequence") {
      for (const Json& x : n.at("normalizers").items()) load_normalizer(x);
    } else if (t == "NFC") {
      normalizers.push_back({Normalizer::Nfc, "", ""});
    } else if (t == "Prepend") {
      normalizers.push_back({Normalizer::Prepend, n.at("prepend").as_string(), ""});
    } else if (t == "Replace") {
      const Json& p = n.at("pattern");
      if (!p.contains("String")) refuse("normalizer Replace with a regex pattern");
      normalizers.push_back({Normalizer::Replace, p.at("String").as_string(), n.at("content").as_string()});
    } else {
      refuse(str_cat("normalizer ", t));
    }
  }

  void load_pretokenizer(const Json& p) {
    if (p.is_null()) return;
    const std::string t = p.at("type").as_string();
    PreTokenizer pt{};
    if (t == "Sequence") {
      for (const Json& x : p.at("pretokenizers").items()) load_pretokenizer(x);
      return;
    } else if (t == "ByteLevel") {
      pt.kind = PreTokenizer::ByteLevel;
      const Json* aps = p.find("add_prefix_space");
      pt.add_prefix_space = aps && aps->is_bool() && aps->as_bool();
      const Json* ur = p.find("use_regex");
      pt.use_regex = !ur || !ur->is_bool() || ur->as_bool();
    } else if (t == "Split") {
      const Json& pat = p.at("pattern");
      const std::string beh = p.at("behavior").as_string();
      const Json* inv = p.find("invert");
      if (inv && inv->is_bool() && inv->as_bool()) refuse("Split with invert true");
      if (beh != "Isolated" && beh != "Removed") refuse(str_cat("Split behavior ", beh));
      pt.removed = beh == "Removed";
      if (pat.contains("Regex")) {
        pt.kind = PreTokenizer::SplitRegexK;
        if (!split_regex_from_pattern(pat.at("Regex").as_string(), &pt.regex))
          refuse(str_cat("Split regex ", Json(pat.at("Regex").as_string()).dump(),
                         " (known: the GPT-2, Llama-3 and Qwen2 patterns)"));
      } else {
        pt.kind = PreTokenizer::SplitString;
        pt.literal = pat.at("String").as_string();
        if (pt.literal.empty()) refuse("Split with an empty string pattern");
      }
    } else if (t == "Metaspace") {
      pt.kind = PreTokenizer::Metaspace;
      pt.replacement = p.at("replacement").as_string();
      if (const Json* ps = p.find("prepend_scheme"); ps && ps->is_string()) {
        pt.prepend_scheme = ps->as_string();
      } else {  // older files: add_prefix_space
        const Json* aps = p.find("add_prefix_space");
        pt.prepend_scheme = (!aps || (aps->is_bool() && aps->as_bool())) ? "always" : "never";
      }
      if (pt.prepend_scheme != "always" && pt.prepend_scheme != "first" && pt.prepend_scheme != "never")
        refuse(str_cat("Metaspace prepend_scheme ", pt.prepend_scheme));
      const Json* sp = p.find("split");
      pt.split = !sp || !sp->is_bool() || sp->as_bool();
    } else if (t == "Digits") {
      pt.kind = PreTokenizer::Digits;
      const Json* d = p.find("individual_digits");
      pt.individual_digits = d && d->is_bool() && d->as_bool();
    } else {
      refuse(str_cat("pre-tokenizer ", t));
    }
    pretokenizers.push_back(pt);
  }

  void load_decoder(const Json& d) {
    if (d.is_null()) return;
    const std::string t = d.at("type").as_string();
    Decoder dc{};
    if (t == "Sequence") {
      for (const Json& x : d.at("decoders").items()) load_decoder(x);
      return;
    } else if (t == "ByteLevel") {
      dc.kind = Decoder::ByteLevel;
    } else if (t == "Metaspace") {
      dc.kind = Decoder::Metaspace;
      dc.a = d.at("replacement").as_string();
      if (const Json* ps = d.find("prepend_scheme"); ps && ps->is_string()) {
        dc.prepend = ps->as_string() != "never";
      } else {
        const Json* aps = d.find("add_prefix_space");
        dc.prepend = !aps || (aps->is_bool() && aps->as_bool());
      }
    } else if (t == "Replace") {
      const Json& p = d.at("pattern");
      if (!p.contains("String")) refuse("decoder Replace with a regex pattern");
      dc.kind = Decoder::Replace;
      dc.a = p.at("String").as_string();
      dc.b = d.at("content").as_string();
    } else if (t == "ByteFallback") {
      dc.kind = Decoder::ByteFallback;
    } else if (t == "Fuse") {
      dc.kind = Decoder::Fuse;
    } else if (t == "Strip") {
      dc.kind = Decoder::Strip;
      dc.a = d.at("content").as_string();
      dc.start = d.at("start").as_int();
      dc.stop = d.at("stop").as_int();
    } else {
      refuse(str_cat("decoder ", t));
    }
    decoders.push_back(dc);
  }

  void load_post_processor(const Json& p) {
    if (p.is_null()) return;
    const std::string t = p.at("type").as_string();
    if (t == "Sequence") {
      for (const Json& x : p.at("processors").items()) load_post_processor(x);
    } else if (t == "ByteLevel") {
      // Only adjusts offsets; ids are unchanged.
    } else if (t == "TemplateProcessing") {
      const Json& st = p.at("special_tokens");
      bool seen_seq = false;
      for (const Json& item : p.at("single").items()) {
        if (item.contains("Sequence")) {
          seen_seq = true;
          continue;
        }
        const std::string name = item.at("SpecialToken").at("id").as_string();
        const Json* spec = st.find(name);
        LZ_INPUT_CHECK(spec, source, ": post_processor template names special token \"", name,
                       "\" missing from its special_tokens");
        for (const Json& id : spec->at("ids").items())
          (seen_seq ? suffix_ids : prefix_ids).push_back(token_id(id, name));
      }
    } else {
      refuse(str_cat("post-processor ", t));
    }
  }

  // Ids index dense tables: bound them (as model.vocab_size is) before any table grows to
  // fit, and before the int32 cast could wrap a large id onto a small one.
  static constexpr int64_t kMaxTokenId = int64_t(1) << 24;
  int32_t token_id(const Json& v, const std::string& tok) const {
    const int64_t id = v.as_int();
    LZ_INPUT_CHECK(id >= 0 && id < kMaxTokenId, source, ": token ", Json(tok).dump(), " has id ",
                   id, ", expected an id in [0, ", kMaxTokenId, ")");
    return static_cast<int32_t>(id);
  }

  void set_token(const std::string& tok, int32_t id) {
    LZ_INPUT_CHECK(id >= 0, source, ": token ", Json(tok).dump(), " has negative id ", id);
    if (static_cast<size_t>(id) >= id_to_tok.size()) {
      id_to_tok.resize(id + 1);
      id_used.resize(id + 1, false);
      special.resize(id + 1, false);
    }
    id_to_tok[id] = tok;
    id_used[id] = true;
  }

  void load_model(const Json& m) {
    const Json* type = m.find("type");
    const std::string t = type && type->is_string() ? type->as_string() : "BPE";
    if (t != "BPE") refuse(str_cat("model ", t));
    for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      const Json* v = m.find(k);
      if (v && v->is_string() && !v->as_string().empty()) refuse(str_cat("BPE ", k));
    }
    if (const Json* dr = m.find("dropout"); dr && dr->is_number() && dr->as_double() > 0)
      refuse("BPE dropout");
    const Json& v = m.at("vocab");
    vocab.reserve(v.keys().size() * 2);
    for (size_t i = 0; i < v.keys().size(); ++i) {
      const int32_t id = token_id(v.values()[i], v.keys()[i]);
      vocab[v.keys()[i]] = id;
      set_token(v.keys()[i], id);
    }
    auto id_of = [&](const std::string& s) -> int32_t {
      auto it = vocab.find(s);
      LZ_INPUT_CHECK(it != vocab.end(), source, ": merge uses ", Json(s).dump(),
                     ", which is not in the vocab");
      return it->second;
    };
    const Json& ms = m.at("merges");
    merges.reserve(ms.size() * 2);
    int32_t rank = 0;
    for (const Json& mg : ms.items()) {
      std::string a, b;
      if (mg.is_string()) {  // "a b" (older files)
        const std::string& s = mg.as_string();
        const size_t sp = s.find(' ', 1);
        LZ_INPUT_CHECK(sp != std::string::npos, source, ": merge ", mg.dump(), " is not \"a b\"");
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else {  // ["a", "b"] (tokenizers >= 0.20)
        LZ_INPUT_CHECK(mg.is_array() && mg.size() == 2, source, ": merge ", mg.dump(),
                       " is neither \"a b\" nor [a, b]");
        a = mg[0].as_string();
        b = mg[1].as_string();
      }
      const int32_t ia = id_of(a), ib = id_of(b), im = id_of(a + b);
      const uint64_t key = (static_cast<uint64_t>(ia) << 32) | static_cast<uint32_t>(ib);
      merges.emplace(key, std::make_pair(rank++, im));  // first (lowest rank) wins on repeats
    }
    if (const Json* u = m.find("unk_token"); u && u->is_string()) {
      auto it = vocab.find(u->as_string());
      LZ_INPUT_CHECK(it != vocab.end(), source, ": unk_token ", u->dump(), " is not in the vocab");
      unk_id = it->second;
    }
    auto flag = [&](const char* k) {
      const Json* f = m.find(k);
      return f && f->is_bool() && f->as_bool();
    };
    fuse_unk = flag("fuse_unk");
    byte_fallback = flag("byte_fallback");
    ignore_merges = flag("ignore_merges");
    for (int b = 0; b < 256; ++b) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "<0x%02X>", b);
      auto it = vocab.find(buf);
      byte_ids[b] = it == vocab.end() ? -1 : it->second;
    }
  }

  void load_added(const Json& list) {
    if (list.is_null()) return;
    for (const Json& a : list.items()) {
      AddedToken t;
      t.content = a.at("content").as_string();
      t.id = token_id(a.at("id"), t.content);
      auto flag = [&](const char* k) {
        const Json* f = a.find(k);
        return f && f->is_bool() && f->as_bool();
      };
      t.special = flag("special");
      t.lstrip = flag("lstrip");
      t.rstrip = flag("rstrip");
      t.single_word = flag("single_word");
      LZ_INPUT_CHECK(!t.content.empty(), source, ": added token ", t.id, " is empty");
      set_token(t.content, t.id);
      special[t.id] = t.special;
      added_by_first_byte[static_cast<unsigned char>(t.content[0])].push_back(added.size());
      added.push_back(t);
    }
  }

  void load(const Json& j) {
    byte_to_cp = bytes_to_unicode();
    for (int b = 0; b < 256; ++b) cp_to_byte[byte_to_cp[b]] = static_cast<uint8_t>(b);
    const Json* model = j.find("model");
    LZ_INPUT_CHECK(model && model->is_object(), source, ": no \"model\" object");
    load_model(*model);
    auto opt = [&](const char* k) -> const Json& {
      static const Json null;
      const Json* v = j.find(k);
      return v ? *v : null;
    };
    load_normalizer(opt("normalizer"));
    load_pretokenizer(opt("pre_tokenizer"));
    load_post_processor(opt("post_processor"));
    load_decoder(opt("decoder"));
    load_added(opt("added_tokens"));
    // encode() emits the template's ids as they are: each must be a token.
    for (const auto* ids : {&prefix_ids, &suffix_ids})
      for (int32_t id : *ids)
        LZ_INPUT_CHECK(static_cast<size_t>(id) < id_used.size() && id_used[id], source,
                       ": post_processor template adds id ", id,
                       ", which is neither in the vocab nor an added token");
  }

  // ---------------------------------------------------------------- encoding

  // Splits raw text on added tokens: leftmost, then longest match.
  // Emits (text, -1) for plain segments and ("", id) for added tokens.
  std::vector<std::pair<std::string, int32_t>> split_added(const std::string& s) const {
    std::vector<std::pair<std::string, int32_t>> out;
    size_t seg = 0, i = 0;
    while (i < s.size()) {
      const auto& cands = added_by_first_byte[static_cast<unsigned char>(s[i])];
      const AddedToken* best = nullptr;
      for (size_t k : cands) {
        const AddedToken& t = added[k];
        if (s.compare(i, t.content.size(), t.content) != 0) continue;
        if (t.single_word) {
          auto word = [](unsigned char c) { return std::isalnum(c) || c == '_' || c >= 0x80; };
          const size_t e = i + t.content.size();
          if ((i > 0 && word(s[i - 1])) || (e < s.size() && word(s[e]))) continue;
        }
        if (!best || t.content.size() > best->content.size()) best = &t;
      }
      if (!best) {
        ++i;
        continue;
      }
      size_t b = i, e = i + best->content.size();
      if (best->lstrip)
        while (b > seg && is_ascii_space(s[b - 1])) --b;
      if (best->rstrip)
        while (e < s.size() && is_ascii_space(s[e])) ++e;
      if (b > seg) out.emplace_back(s.substr(seg, b - seg), -1);
      out.emplace_back(std::string(), best->id);
      seg = i = e;
    }
    if (seg < s.size()) out.emplace_back(s.substr(seg), -1);
    return out;
  }

  std::string normalize(std::string s) const {
    for (const Normalizer& n : normalizers) {
      switch (n.kind) {
        case Normalizer::Nfc: s = nfc(s); break;
        case Normalizer::Prepend:
          if (!s.empty()) s = n.a + s;  // tokenizers does not prepend to an empty string
          break;
        case Normalizer::Replace: s = replace_all(s, n.a, n.b); break;
      }
    }
    return s;
  }

  // Splits every piece at the spans of `spans_of` (Isolated: matches and gaps both kept).
  template <class SpanFn>
  static std::vector<Piece> split_pieces(const std::vector<Piece>& in, bool removed, SpanFn spans_of) {
    std::vector<Piece> out;
    for (const Piece& p : in) {
      const std::vector<uint32_t> cps = utf8_decode(p.text);
      // Code point index -> byte offset (text is valid UTF-8 after decode/re-encode below).
      const std::string norm = utf8_encode(cps);
      std::vector<size_t> off(cps.size() + 1, 0);
      for (size_t k = 0, b = 0; k < cps.size(); ++k) {
        off[k] = b;
        b += cps[k] < 0x80 ? 1 : cps[k] < 0x800 ? 2 : cps[k] < 0x10000 ? 3 : 4;
        off[k + 1] = b;
      }
      size_t prev = 0;
      bool first = p.first;
      auto emit = [&](size_t a, size_t b) {
        if (b > a) out.push_back({norm.substr(off[a], off[b] - off[a]), first});
        first = false;
      };
      for (const auto& [a, b] : spans_of(cps)) {
        emit(prev, a);
        if (!removed) emit(a, b);
        else first = false;
        prev = b;
      }
      emit(prev, cps.size());
    }
    return out;
  }

  std::vector<Piece> pretokenize(std::vector<Piece> pieces) const {
    for (const PreTokenizer& pt : pretokenizers) {
      switch (pt.kind) {
        case PreTokenizer::SplitRegexK:
          pieces = split_pieces(pieces, pt.removed, [&](const std::vector<uint32_t>& c) {
            return split_regex_matches(pt.regex, c);
          });
          break;
        case PreTokenizer::SplitString:
          pieces = split_pieces(pieces, pt.removed, [&](const std::vector<uint32_t>& c) {
            const std::vector<uint32_t> lit = utf8_decode(pt.literal);
            std::vector<std::pair<size_t, size_t>> spans;
            for (size_t i = 0; i + lit.size() <= c.size();) {
              if (std::equal(lit.begin(), lit.end(), c.begin() + i)) {
                spans.emplace_back(i, i + lit.size());
                i += lit.size();
              } else {
                ++i;
              }
            }
            return spans;
          });
          break;
        case PreTokenizer::Digits:
          pieces = split_pieces(pieces, false, [&](const std::vector<uint32_t>& c) {
            std::vector<std::pair<size_t, size_t>> spans;
            for (size_t i = 0; i < c.size();) {
              if (c[i] >= '0' && c[i] <= '9') {
                size_t j = i + 1;
                if (!pt.individual_digits)
                  while (j < c.size() && c[j] >= '0' && c[j] <= '9') ++j;
                spans.emplace_back(i, j);
                i = j;
              } else {
                ++i;
              }
            }
            return spans;
          });
          break;
        case PreTokenizer::ByteLevel: {
          if (pt.add_prefix_space)
            for (Piece& p : pieces)
              if (!p.text.empty() && p.text[0] != ' ') p.text = " " + p.text;
          if (pt.use_regex)
            pieces = split_pieces(pieces, false, [](const std::vector<uint32_t>& c) {
              return split_regex_matches(SplitRegex::Gpt2, c);
            });
          for (Piece& p : pieces) {
            std::string m;
            m.reserve(p.text.size() * 2);
            for (unsigned char b : p.text) utf8_append(byte_to_cp[b], m);
            p.text = std::move(m);
          }
          break;
        }
        case PreTokenizer::Metaspace: {
          for (Piece& p : pieces) {
            p.text = replace_all(p.text, " ", pt.replacement);
            const bool prepend = pt.prepend_scheme == "always" || (pt.prepend_scheme == "first" && p.first);
            if (prepend && !starts_with(p.text, pt.replacement)) p.text = pt.replacement + p.text;
          }
          if (pt.split) {
            // MergedWithNext: every replacement char starts a new piece.
            std::vector<Piece> out;
            for (const Piece& p : pieces) {
              size_t start = 0;
              bool first = p.first;
              for (size_t k = p.text.find(pt.replacement, 1); k != std::string::npos;
                   k = p.text.find(pt.replacement, k + pt.replacement.size())) {
                out.push_back({p.text.substr(start, k - start), first});
                first = false;
                start = k;
              }
              if (start < p.text.size()) out.push_back({p.text.substr(start), first});
            }
            pieces = std::move(out);
          }
          break;
        }
      }
    }
    return pieces;
  }

  // BPE on one pre-tokenized word.
  void bpe(const std::string& word, std::vector<int32_t>& out) const {
    if (word.empty()) return;
    if (ignore_merges) {
      auto it = vocab.find(word);
      if (it != vocab.end()) {
        out.push_back(it->second);
        return;
      }
    }
    // Initial symbols: one per character (or its bytes / unk when not in the vocab).
    std::vector<int32_t> sym;
    sym.reserve(word.size());
    bool last_unk = false;
    for (size_t i = 0; i < word.size();) {
      const size_t len = std::min<size_t>(utf8_len(static_cast<unsigned char>(word[i])), word.size() - i);
      auto it = vocab.find(word.substr(i, len));
      if (it != vocab.end()) {
        sym.push_back(it->second);
        last_unk = false;
      } else {
        bool done = false;
        if (byte_fallback) {
          bool all = true;
          for (size_t k = 0; k < len; ++k) all &= byte_ids[static_cast<unsigned char>(word[i + k])] >= 0;
          if (all) {
            for (size_t k = 0; k < len; ++k) sym.push_back(byte_ids[static_cast<unsigned char>(word[i + k])]);
            done = true;
            last_unk = false;
          }
        }
        if (!done && unk_id >= 0) {
          if (!(fuse_unk && last_unk)) sym.push_back(unk_id);
          last_unk = true;
        }
      }
      i += len;
    }
    // Merge the lowest-rank adjacent pair, leftmost first, until none applies. A heap of
    // candidate pairs over a linked list keeps this O(n log n) for long unsplit words.
    const int n = static_cast<int>(sym.size());
    std::vector<int> prev(n), next(n);
    for (int k = 0; k < n; ++k) prev[k] = k - 1, next[k] = k + 1 < n ? k + 1 : -1;
    struct Cand {
      int32_t rank;
      int pos;
      int32_t left, right;  // the ids when queued, to detect stale entries
      bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
    auto push = [&](int a) {
      if (a < 0 || next[a] < 0) return;
      const uint64_t key = (static_cast<uint64_t>(sym[a]) << 32) | static_cast<uint32_t>(sym[next[a]]);
      auto it = merges.find(key);
      if (it != merges.end()) heap.push({it->second.first, a, sym[a], sym[next[a]]});
    };
    for (int k = 0; k + 1 < n; ++k) push(k);
    std::vector<bool> dead(n, false);
    while (!heap.empty()) {
      const Cand c = heap.top();
      heap.pop();
      const int a = c.pos;
      if (dead[a] || next[a] < 0 || sym[a] != c.left || sym[next[a]] != c.right) continue;
      const int b = next[a];
      sym[a] = merges.at((static_cast<uint64_t>(c.left) << 32) | static_cast<uint32_t>(c.right)).second;
      dead[b] = true;
      next[a] = next[b];
      if (next[b] >= 0) prev[next[b]] = a;
      push(prev[a]);
      push(a);
    }
    for (int k = 0; k >= 0 && k < n; k = next[k]) out.push_back(sym[k]);
  }

  std::vector<int32_t> encode(const std::string& text, bool add_special) const {
    std::vector<int32_t> ids;
    if (add_special) ids = prefix_ids;
    bool first = true;
    for (const auto& [seg, id] : split_added(text)) {
      if (id >= 0) {
        ids.push_back(id);
        first = false;
        continue;
      }
      std::vector<Piece> pieces{{normalize(seg), first}};
      first = false;
      for (const Piece& p : pretokenize(std::move(pieces))) bpe(p.text, ids);
    }
    if (add_special) ids.insert(ids.end(), suffix_ids.begin(), suffix_ids.end());
    return ids;
  }

  // ---------------------------------------------------------------- decoding

  std::string decode(const std::vector<int32_t>& ids, bool skip_special) const {
    std::vector<std::string> toks;
    for (int32_t id : ids) {
      LZ_INPUT_CHECK(id >= 0 && static_cast<size_t>(id) < id_used.size() && id_used[id], source,
                     ": cannot decode unknown token id ", id);
      if (skip_special && special[id]) continue;
      toks.push_back(id_to_tok[id]);
    }
    for (const Decoder& d : decoders) {
      switch (d.kind) {
        case Decoder::ByteLevel: {
          std::string bytes;
          for (const std::string& t : toks)
            for (uint32_t cp : utf8_decode(t)) {
              auto it = cp_to_byte.find(cp);
              if (it != cp_to_byte.end()) bytes += static_cast<char>(it->second);
              else utf8_append(cp, bytes);  // not from the byte map (e.g. added tokens): as is
            }
          toks = {utf8_encode(utf8_decode(bytes))};  // invalid UTF-8 -> U+FFFD, like from_utf8_lossy
          break;
        }
        case Decoder::Replace:
          for (std::string& t : toks) t = replace_all(t, d.a, d.b);
          break;
        case Decoder::ByteFallback: {
          std::vector<std::string> out;
          std::string pending;
          size_t n_pending = 0;
          auto flush = [&] {
            if (!n_pending) return;
            // Valid UTF-8 becomes one token; otherwise one U+FFFD per byte (as tokenizers does).
            const std::string round = utf8_encode(utf8_decode(pending));
            if (round == pending) out.push_back(pending);
            else
              for (size_t k = 0; k < n_pending; ++k) out.push_back("\xEF\xBF\xBD");
            pending.clear();
            n_pending = 0;
          };
          for (const std::string& t : toks) {
            unsigned v = 0;
            if (t.size() == 6 && starts_with(t, "<0x") && t[5] == '>' &&
                std::sscanf(t.c_str() + 3, "%2X", &v) == 1) {
              pending += static_cast<char>(v);
              ++n_pending;
            } else {
              flush();
              out.push_back(t);
            }
          }
          flush();
          toks = std::move(out);
          break;
        }
        case Decoder::Fuse: {
          std::string all;
          for (const std::string& t : toks) all += t;
          toks = {all};
          break;
        }
        case Decoder::Strip: {
          for (std::string& t : toks) {
            std::vector<uint32_t> c = utf8_decode(t);
            const std::vector<uint32_t> content = utf8_decode(d.a);
            if (content.size() != 1) break;
            size_t b = 0, e = c.size();
            for (int64_t k = 0; k < d.start && b < e && c[b] == content[0]; ++k) ++b;
            for (int64_t k = 0; k < d.stop && e > b && c[e - 1] == content[0]; ++k) --e;
            t = utf8_encode(std::vector<uint32_t>(c.begin() + b, c.begin() + e));
          }
          break;
        }
        case Decoder::Metaspace:
          for (size_t k = 0; k < toks.size(); ++k) {
            toks[k] = replace_all(toks[k], d.a, " ");
            if (k == 0 && d.prepend && starts_with(toks[k], " ")) toks[k].erase(0, 1);
          }
          break;
      }
    }
    std::string out;
    for (const std::string& t : toks) out += t;
    return out;
  }
};

Tokenizer Tokenizer::from_file(const std::string& path) {
  std::string p = path;
  if (std::filesystem::is_directory(p)) p = (std::filesystem::path(p) / "tokenizer.json").string();
  return from_json(load_json_file(p), p);
}

Tokenizer Tokenizer::from_json(const Json& j, const std::string& source) {
  auto impl = std::make_shared<Impl>();
  impl->source = source;
  try {
    impl->load(j);
  } catch (const InputError& e) {
    const std::string msg = e.what();
    if (msg.rfind(source, 0) == 0) throw;
    throw InputError(str_cat(source, ": ", msg));  // a type error deep in the JSON: name the file
  }
  Tokenizer t;
  t.impl_ = std::move(impl);
  return t;
}

std::vector<int32_t> Tokenizer::encode(const std::string& text, bool add_special) const {
  return impl_->encode(text, add_special);
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  return impl_->decode(ids, skip_special);
}

int64_t Tokenizer::vocab_size() const { return static_cast<int64_t>(impl_->id_to_tok.size()); }

int32_t Tokenizer::token_to_id(const std::string& token) const {
  for (const AddedToken& a : impl_->added)
    if (a.content == token) return a.id;
  auto it = impl_->vocab.find(token);
  return it == impl_->vocab.end() ? -1 : it->second;
}

const std::string& Tokenizer::id_to_token(int32_t id) const {
  LZ_INPUT_CHECK(id >= 0 && static_cast<size_t>(id) < impl_->id_used.size() && impl_->id_used[id],
                 impl_->source, ": no token with id ", id);
  return impl_->id_to_tok[id];
}

int32_t Tokenizer::bos_id() const { return impl_->prefix_ids.empty() ? -1 : impl_->prefix_ids[0]; }
int32_t Tokenizer::eos_id() const { return impl_->suffix_ids.empty() ? -1 : impl_->suffix_ids[0]; }

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < impl_->special.size() && impl_->special[id];
}

}  // namespace lizard::io
