#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>

#include "io_test_util.h"
#include "lizard/core/error.h"
#include "lizard/io/pretokenize_regex.h"
#include "lizard/io/tokenizer.h"
#include "lizard/io/unicode.h"

using namespace lizard;
using namespace lizard::io;
using lizard::test::error_of;

namespace {

std::vector<std::string> pieces(SplitRegex r, const std::string& s) {
  const auto cps = utf8_decode(s);
  std::vector<std::string> out;
  for (auto [a, b] : split_regex_matches(r, cps))
    out.push_back(utf8_encode(std::vector<uint32_t>(cps.begin() + a, cps.begin() + b)));
  return out;
}

using V = std::vector<std::string>;

// A byte-level tokenizer: the 256 byte symbols (ids = byte values), merges given as pairs.
Json byte_level_json(const V& merged_tokens, const Json& merges, const std::string& regex) {
  Json vocab = Json::object();
  // GPT-2 byte map, written independently of the library: printable bytes map to themselves,
  // the rest to 256, 257, ... in byte order.
  uint32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
    std::string s;
    utf8_append(printable ? b : next++, s);
    vocab.set(s, b);
  }
  int id = 256;
  for (const auto& t : merged_tokens) vocab.set(t, id++);
  Json j = parse_json(R"({"version":"1.0","added_tokens":[
    {"id":300,"content":"<|bos|>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},
    {"id":301,"content":"<tool>","single_word":false,"lstrip":true,"rstrip":true,"normalized":false,"special":false}],
    "normalizer":null,"decoder":{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true},
    "post_processor":{"type":"Sequence","processors":[{"type":"ByteLevel","trim_offsets":false},
      {"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<|bos|>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}],
       "pair":[],"special_tokens":{"<|bos|>":{"id":"<|bos|>","ids":[300],"tokens":["<|bos|>"]}}}]}})");
  Json pre = parse_json(R"({"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":""},
    "behavior":"Isolated","invert":false},{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":false}]})");
  Json split = pre.at("pretokenizers")[0];
  split.set("pattern", Json::object());
  Json pat = Json::object();
  pat.set("Regex", regex);
  split.set("pattern", pat);
  Json pts = Json::array({split, pre.at("pretokenizers")[1]});
  pre.set("pretokenizers", pts);
  j.set("pre_tokenizer", pre);
  Json model = Json::object();
  model.set("type", "BPE");
  model.set("dropout", Json());
  model.set("unk_token", Json());
  model.set("fuse_unk", false);
  model.set("byte_fallback", false);
  model.set("ignore_merges", false);
  model.set("vocab", vocab);
  model.set("merges", merges);
  j.set("model", model);
  return j;
}

}  // namespace

TEST(SplitRegex, Llama3Qwen2Gpt2ByHand) {
  const std::string s = "I'm 12345 ok!!\n\n  x";
  EXPECT_EQ(pieces(SplitRegex::Llama3, s), (V{"I", "'m", " ", "123", "45", " ok", "!!\n\n", " ", " x"}));
  EXPECT_EQ(pieces(SplitRegex::Qwen2, s), (V{"I", "'m", " ", "1", "2", "3", "4", "5", " ok", "!!\n\n", " ", " x"}));
  EXPECT_EQ(pieces(SplitRegex::Gpt2, s), (V{"I", "'m", " 12345", " ok", "!!", "\n\n ", " x"}));
  // Case-insensitive contractions in Llama-3 only; GPT-2 splits "'S" as a symbol then a letter.
  EXPECT_EQ(pieces(SplitRegex::Llama3, "HE'S it'LL"), (V{"HE", "'S", " it", "'LL"}));
  EXPECT_EQ(pieces(SplitRegex::Gpt2, "HE'S"), (V{"HE", "'", "S"}));
  // A punctuation char glues to the following letters; whitespace before newlines; trailing ws.
  EXPECT_EQ(pieces(SplitRegex::Llama3, "(hello) \t\n x  "), (V{"(hello", ")", " \t\n", " x", "  "}));
  // Non-ASCII letters and numbers; tab before a word is its optional prefix.
  EXPECT_EQ(pieces(SplitRegex::Llama3, "Zürich\tcafé ٣٤٥٦"), (V{"Zürich", "\tcafé", " ", "٣٤٥", "٦"}));
  EXPECT_EQ(pieces(SplitRegex::Llama3, "a\u00a0b"), (V{"a", "\u00a0b"}));  // NBSP is \s but not \r\n
  EXPECT_TRUE(pieces(SplitRegex::Llama3, "").empty());
  SplitRegex r;
  EXPECT_TRUE(split_regex_from_pattern(split_regex_pattern(SplitRegex::Qwen2), &r));
  EXPECT_EQ(r, SplitRegex::Qwen2);
  EXPECT_FALSE(split_regex_from_pattern("\\w+", &r));
}

TEST(Unicode, ClassesAndNfc) {
  EXPECT_TRUE(is_letter(U'é'));
  EXPECT_TRUE(is_letter(0x65E5));   // 日
  EXPECT_FALSE(is_letter(0x1F642)); // emoji
  EXPECT_TRUE(is_number(0x0663));   // Arabic-indic 3
  EXPECT_TRUE(is_number(0x00BD));   // ½ (No)
  EXPECT_TRUE(is_whitespace(0x3000));
  EXPECT_FALSE(is_whitespace(0x200B));  // zero width space is not White_Space
  EXPECT_EQ(nfc("e\u0301"), "\u00e9");
  EXPECT_EQ(nfc("\u1e0b\u0323"), "\u1e0d\u0307");       // reorder then compose
  EXPECT_EQ(nfc("\u1100\u1161\u11a8"), "\uac01");       // Hangul L V T
  EXPECT_EQ(nfc("\u212b"), "\u00c5");                   // singleton (Angstrom) decomposes
  EXPECT_EQ(nfc("\u0958"), "\u0915\u093c");             // composition exclusion stays split
  EXPECT_EQ(nfc("plain ascii"), "plain ascii");
  EXPECT_EQ(utf8_decode("a\xff" "b").size(), 3u);       // bad byte -> U+FFFD
  EXPECT_EQ(utf8_decode("a\xff" "b")[1], 0xFFFDu);
}

TEST(Tokenizer, ByteLevelBpeMergesBothForms) {
  // Merges: "Ġ w" (rank 0), "o r" (1), "Ġw or" (2), "l d" (3), "Ġwor ld" (4).
  const V toks = {"Ġw", "or", "Ġwor", "ld", "Ġworld"};
  const Json pair_form = parse_json(R"([["Ġ","w"],["o","r"],["Ġw","or"],["l","d"],["Ġwor","ld"]])");
  const Json str_form = parse_json(R"(["Ġ w","o r","Ġw or","l d","Ġwor ld"])");
  for (const Json& merges : {pair_form, str_form}) {
    Tokenizer t = Tokenizer::from_json(byte_level_json(toks, merges, split_regex_pattern(SplitRegex::Llama3)));
    // "hi world": pieces "hi", " world"; " world" merges fully to Ġworld (260).
    EXPECT_EQ(t.encode("hi world", false), (std::vector<int32_t>{'h', 'i', 260}));
    EXPECT_EQ(t.encode("hi world", true), (std::vector<int32_t>{300, 'h', 'i', 260}));
    EXPECT_EQ(t.bos_id(), 300);
    // "wor" without the space: only "o r" applies.
    EXPECT_EQ(t.encode("word", false), (std::vector<int32_t>{'w', 257, 'd'}));
    // Non-ASCII: é is bytes C3 A9, both printable in the byte map (ids = byte values).
    EXPECT_EQ(t.encode("é", false), (std::vector<int32_t>{0xC3, 0xA9}));
    // A space maps to Ġ (id 32 since ids are byte values); newline to Ċ (id 10).
    EXPECT_EQ(t.encode("a\n", false), (std::vector<int32_t>{'a', '\n'}));
    for (const std::string s : {"hi world", "é ü 日本 🙂\n\t x", "a  b   "})
      EXPECT_EQ(t.decode(t.encode(s, true)), s);
    // Added tokens: special one split out and skipped on decode; lstrip/rstrip eat spaces.
    EXPECT_EQ(t.encode("x<|bos|>y", false), (std::vector<int32_t>{'x', 300, 'y'}));
    EXPECT_EQ(t.encode("a  <tool>  b", false), (std::vector<int32_t>{'a', 301, 'b'}));
    EXPECT_EQ(t.decode({'x', 300, 'y'}), "xy");
    EXPECT_EQ(t.decode({'x', 300, 'y'}, false), "x<|bos|>y");
    EXPECT_EQ(t.vocab_size(), 302);
    EXPECT_EQ(t.token_to_id("Ġworld"), 260);
    EXPECT_EQ(t.token_to_id("<tool>"), 301);
    EXPECT_THROW(t.decode({299}), InputError);  // id 299 unused
  }
}

TEST(Tokenizer, MergePriorityIsRankThenLeftmost) {
  Json j = byte_level_json({"aa", "aaa", "bc", "abc"},
                           parse_json(R"([["a","a"],["aa","a"],["b","c"],["a","bc"]])"),
                           split_regex_pattern(SplitRegex::Gpt2));
  Tokenizer t = Tokenizer::from_json(j);
  // "aaaa": (a,a) leftmost first -> aa a a -> aa aa? no: after aa at 0, next (a,a) at 2 (rank 0)
  // beats (aa,a) (rank 1) -> [aa, aa].
  EXPECT_EQ(t.encode("aaaa", false), (std::vector<int32_t>{256, 256}));
  EXPECT_EQ(t.encode("aaa", false), (std::vector<int32_t>{257}));  // aa a -> aaa
  EXPECT_EQ(t.encode("abc", false), (std::vector<int32_t>{259}));  // bc first (rank 2), then a bc
}

TEST(Tokenizer, ByteFallbackLlama2Style) {
  Json vocab = Json::object();
  vocab.set("<unk>", 0);
  vocab.set("<s>", 1);
  vocab.set("</s>", 2);
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    vocab.set(buf, 3 + b);
  }
  const V extra = {"▁", "h", "i", "▁h", "▁hi", "x"};
  for (size_t k = 0; k < extra.size(); ++k) vocab.set(extra[k], static_cast<int64_t>(259 + k));
  Json j = parse_json(R"({"added_tokens":[
      {"id":0,"content":"<unk>","special":true},{"id":1,"content":"<s>","special":true},
      {"id":2,"content":"</s>","special":true}],
    "normalizer":{"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"▁"},
      {"type":"Replace","pattern":{"String":" "},"content":"▁"}]},
    "pre_tokenizer":null,
    "post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>","type_id":0}},
      {"Sequence":{"id":"A","type_id":0}}],"pair":[],"special_tokens":{"<s>":{"id":"<s>","ids":[1],"tokens":["<s>"]}}},
    "decoder":{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"String":"▁"},"content":" "},
      {"type":"ByteFallback"},{"type":"Fuse"},{"type":"Strip","content":" ","start":1,"stop":0}]},
    "model":{"type":"BPE","dropout":null,"unk_token":"<unk>","fuse_unk":true,"byte_fallback":true,
      "merges":["▁ h","▁h i"]}})");
  Json model = j.at("model");
  model.set("vocab", vocab);
  j.set("model", model);
  Tokenizer t = Tokenizer::from_json(j);
  const int32_t sp = 259, hi = 263, x = 264;
  // "hi hi é" -> ▁hi▁hi▁é: é is not in the vocab -> bytes C3 A9 (ids 3 + byte).
  EXPECT_EQ(t.encode("hi hi é", true), (std::vector<int32_t>{1, hi, hi, sp, 3 + 0xC3, 3 + 0xA9}));
  EXPECT_EQ(t.decode(t.encode("hi hi é", true)), "hi hi é");
  // "xhi": both merges need "▁" right before "h", so inside a word nothing merges: ▁ x h i.
  EXPECT_EQ(t.encode("xhi", false), (std::vector<int32_t>{sp, x, 260, 261}));
  // Added tokens are split before the normalizer; each segment gets its own "▁" prefix.
  EXPECT_EQ(t.encode("<s>hi", false), (std::vector<int32_t>{1, hi}));
  EXPECT_EQ(t.bos_id(), 1);
  // Invalid UTF-8 from byte tokens decodes to U+FFFD per byte.
  EXPECT_EQ(t.decode({3 + 0xC3, x}), "\xEF\xBF\xBDx");
}

TEST(Tokenizer, RefusesUnknownComponents) {
  Json base = byte_level_json({}, Json::array(), split_regex_pattern(SplitRegex::Llama3));
  struct Case {
    std::string key;
    std::string json;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {"model", R"({"type":"WordPiece","vocab":{}})", "model WordPiece"},
      {"normalizer", R"({"type":"BertNormalizer"})", "normalizer BertNormalizer"},
      {"pre_tokenizer", R"({"type":"Split","pattern":{"Regex":"\\w+"},"behavior":"Isolated","invert":false})", "Split regex"},
      {"pre_tokenizer", R"({"type":"Whitespace"})", "pre-tokenizer Whitespace"},
      {"decoder", R"({"type":"WordPiece"})", "decoder WordPiece"},
      {"post_processor", R"({"type":"BertProcessing"})", "post-processor BertProcessing"},
  };
  for (const Case& c : cases) {
    Json j = base;
    j.set(c.key, parse_json(c.json));
    const std::string msg = error_of<InputError>([&] { Tokenizer::from_json(j, "tok/tokenizer.json"); });
    EXPECT_NE(msg.find("tok/tokenizer.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.expect), std::string::npos) << msg;
  }
  EXPECT_NE(error_of<InputError>([] { Tokenizer::from_file("/nonexistent/dir/tokenizer.json"); })
                .find("/nonexistent/dir/tokenizer.json"), std::string::npos);
}

// When scripts/make_hf_fixtures.py has been run: our ids equal those of the `tokenizers` library
// on every sample, with and without special tokens, and decode matches.
TEST(Tokenizer, MatchesHuggingFaceOnFixtures) {
  namespace fs = std::filesystem;
  const fs::path root = fs::path(LIZARD_SOURCE_DIR) / "tests" / "fixtures" / "hf";
  if (!fs::exists(root)) GTEST_SKIP() << "no HF fixtures at " << root << " (run scripts/make_hf_fixtures.py)";
  int checked = 0;
  for (const auto& e : fs::directory_iterator(root)) {
    if (!fs::exists(e.path() / "samples.json")) continue;
    Tokenizer t = Tokenizer::from_file(e.path().string());
    const Json samples = load_json_file((e.path() / "samples.json").string());
    for (const Json& s : samples.at("samples").items()) {
      const std::string& text = s.at("text").as_string();
      auto ids_of = [](const Json& a) {
        std::vector<int32_t> v;
        for (const Json& x : a.items()) v.push_back(static_cast<int32_t>(x.as_int()));
        return v;
      };
      EXPECT_EQ(t.encode(text, false), ids_of(s.at("ids"))) << e.path() << " text: " << text;
      EXPECT_EQ(t.encode(text, true), ids_of(s.at("ids_with_special"))) << e.path() << " text: " << text;
      EXPECT_EQ(t.decode(ids_of(s.at("ids"))), s.at("decoded").as_string()) << e.path() << " text: " << text;
      ++checked;
    }
  }
  EXPECT_GT(checked, 0);
}
