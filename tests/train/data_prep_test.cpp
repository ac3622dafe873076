// Raw readers and document tokenization with a byte tokenizer (so expected ids are the bytes).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "lizard/core/error.h"
#include "lizard/train/data_prep.h"

namespace lizard::train {
namespace {

namespace fs = std::filesystem;

constexpr int32_t kBos = 256, kEos = 257;

/// Bytes as ids; BOS first when add_special.
std::vector<int32_t> byte_encode(const std::string& s, bool special) {
  std::vector<int32_t> out;
  if (special) out.push_back(kBos);
  for (unsigned char c : s) out.push_back(c);
  return out;
}

fs::path write_file(const std::string& name, const std::string& text) {
  fs::path p = fs::temp_directory_path() / ("lizard_prep_" + std::to_string(getpid()) + "_" + name);
  std::ofstream(p) << text;
  return p;
}

TEST(DataPrep, AlpacaPromptIsMaskedAndTemplated) {
  const fs::path list = write_file("a.json",
      R"([{"instruction": "Add", "input": "1 2", "output": "3"},
          {"instruction": "Hi", "input": "", "output": "Hello"}])");
  const fs::path jsonl = write_file("a.jsonl",
      "{\"instruction\": \"Add\", \"input\": \"1 2\", \"output\": \"3\"}\n\n"
      "{\"instruction\": \"Hi\", \"output\": \"Hello\"}\n");
  AlpacaTemplate tmpl;
  tmpl.with_input = "I:{instruction} X:{input} R:";
  tmpl.no_input = "I:{instruction} R:";
  for (const fs::path& p : {list, jsonl}) {
    auto docs = read_alpaca(p.string(), tmpl);
    ASSERT_EQ(docs.size(), 2u);
    EXPECT_EQ(docs[0].prompt, "I:Add X:1 2 R:");
    EXPECT_EQ(docs[0].response, "3");
    EXPECT_EQ(docs[1].prompt, "I:Hi R:");
    TokenizedDocument t = tokenize_document(docs[0], byte_encode, kEos);
    std::vector<int32_t> want{kBos};
    for (char c : std::string("I:Add X:1 2 R:3")) want.push_back(c);
    want.push_back(kEos);
    EXPECT_EQ(t.tokens, want);
    std::vector<uint8_t> mask(want.size(), 0);
    mask[mask.size() - 2] = mask[mask.size() - 1] = 1;  // "3" and EOS only
    EXPECT_EQ(t.mask, mask);
  }
  // Default template: the Stanford Alpaca text.
  auto d = read_alpaca(list.string());
  EXPECT_NE(d[0].prompt.find("### Input:\n1 2\n\n### Response:\n"), std::string::npos);
  EXPECT_EQ(d[1].prompt.find("### Input:"), std::string::npos);
  fs::remove(list);
  fs::remove(jsonl);
}

TEST(DataPrep, TextAndJsonlDocuments) {
  const fs::path txt = write_file("t.txt", "one\ntwo\n\n\nthree\r\n\n");
  auto blank = read_text(txt.string(), false);
  ASSERT_EQ(blank.size(), 2u);
  EXPECT_EQ(blank[0].response, "one\ntwo");
  EXPECT_EQ(blank[1].response, "three");
  EXPECT_EQ(read_text(txt.string(), true).size(), 3u);
  TokenizedDocument t = tokenize_document(blank[1], byte_encode, -1);
  EXPECT_EQ(t.tokens, (std::vector<int32_t>{kBos, 't', 'h', 'r', 'e', 'e'}));
  EXPECT_EQ(t.mask, std::vector<uint8_t>(6, 1));
  EXPECT_EQ(tokenize_document(blank[1], byte_encode, kEos, 3).tokens.size(), 3u);  // truncated

  const fs::path jl = write_file("t.jsonl", "{\"text\": \"abc\"}\n{\"text\": \"\"}\n{\"text\": \"d\"}\n");
  auto docs = read_jsonl_text(jl.string());
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[1].response, "d");
  fs::remove(txt);
  fs::remove(jl);
}

TEST(DataPrep, BadRecordsNameFileAndRecord) {
  const fs::path p = write_file("bad.jsonl", "{\"instruction\": \"x\", \"output\": \"y\"}\n{\"instruction\": \"x\"}\n");
  try {
    read_alpaca(p.string());
    FAIL();
  } catch (const InputError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("bad.jsonl line 2"), std::string::npos) << m;
    EXPECT_NE(m.find("\"output\""), std::string::npos) << m;
  }
  const fs::path q = write_file("broken.json", "[{\"instruction\": ");
  EXPECT_THROW(read_alpaca(q.string()), InputError);
  const fs::path r = write_file("num.jsonl", "{\"text\": 5}\n");
  EXPECT_THROW(read_jsonl_text(r.string()), InputError);
  EXPECT_EQ(file_hash(p.string()).size(), 16u);
  EXPECT_NE(file_hash(p.string()), file_hash(q.string()));
  for (const auto& f : {p, q, r}) fs::remove(f);
}

}  // namespace
}  // namespace lizard::train
