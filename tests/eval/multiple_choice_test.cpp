// Multiple-choice scoring: acc vs acc_norm as lm-eval computes them, JSONL parsing, and the
// log-likelihoods against an independent f64 computation.
#include <gtest/gtest.h>

#include <cmath>

#include "eval_test_util.h"
#include "lizard/core/error.h"
#include "lizard/eval/multiple_choice.h"

namespace lizard::eval {
namespace {

TEST(MultipleChoice, DecisionRuleIsLmEvals) {
  // acc picks the larger ll; acc_norm divides by the character length of the choice.
  EXPECT_EQ(mc_predictions({-4.0, -5.0}, {"ab", "abcdef"}), (std::pair<int64_t, int64_t>{0, 1}));
  // Ties: numpy's argmax takes the first.
  EXPECT_EQ(mc_predictions({-3.0, -3.0}, {"abc", "xyz"}), (std::pair<int64_t, int64_t>{0, 0}));
  // Length is Python's len (code points): "é" is 2 bytes but 1 character.
  EXPECT_EQ(utf8_length("h\xc3\xa9llo"), 5);
  // "ab" scores -5/2 = -2.5; the 3-character (6-byte) choice -9/3 = -3 by characters but
  // -9/6 = -1.5 by bytes: only the character count makes choice 0 win.
  EXPECT_EQ(mc_predictions({-5.0, -9.0}, {"ab", "\xc3\xa9\xc3\xa9\xc3\xa9"}).second, 0);
}

// The uniform model gives every token log p = -log V, so ll = -n_tokens log V exactly, and a
// short choice wins acc while a long one wins acc_norm.
TEST(MultipleChoice, AccAndAccNormDifferOnAHandMadeCase) {
  SyntheticVocab v;
  nn::LlamaForCausalLM m(test::tiny_config(v.size()));
  Encoder enc = [&](const std::string& s) { return v.encode(s); };
  std::vector<McExample> ex = {
      // "dog": 1 token, 3 chars -> ll/len = -logV/3; "the big red dog": 4 tokens, 15 chars ->
      // -4 logV/15 (larger). acc picks 0, acc_norm picks 1 (gold).
      {"alice sees", {"dog", "the big red dog"}, 1},
      // Same token count and length: a tie, the first choice wins both (gold 0).
      {"the cat", {"sleeps", "smiles"}, 0},
  };
  McOptions opt;
  opt.bos = SyntheticVocab::bos();
  opt.batch_size = 3;  // requests straddle batches
  const McResult r = multiple_choice(m, ex, enc, opt);
  const double logV = std::log(static_cast<double>(v.size()));
  EXPECT_NEAR(r.lls[0][0], -1 * logV, 1e-5);
  EXPECT_NEAR(r.lls[0][1], -4 * logV, 1e-5);
  EXPECT_NEAR(r.lls[1][0], -1 * logV, 1e-5);
  EXPECT_EQ(r.pred, (std::vector<int64_t>{0, 0}));
  EXPECT_EQ(r.pred_norm, (std::vector<int64_t>{1, 0}));
  EXPECT_DOUBLE_EQ(r.acc, 0.5);
  EXPECT_DOUBLE_EQ(r.acc_norm, 1.0);
}

// A random model: each ll equals the f64 sum of log-softmax over the continuation tokens of
// [bos] + context + choice, including a context with a trailing space and a truncated input.
TEST(MultipleChoice, LogLikelihoodsMatchF64Oracle) {
  SyntheticVocab v({4, 4});
  nn::LlamaForCausalLM m(test::tiny_config(v.size()));
  m.init_random(3, 0.5);
  Encoder enc = [&](const std::string& s) { return v.encode(s); };
  std::vector<McExample> ex = {
      {"the old king ", {"sleeps", "sees a red boat", "runs quickly"}, 1},
      {"", {"alice", "two dogs"}, 0},
  };
  for (int64_t max_len : {int64_t{64}, int64_t{4}}) {
    McOptions opt;
    opt.bos = SyntheticVocab::bos();
    opt.max_length = max_len;
    opt.batch_size = 2;
    const McResult r = multiple_choice(m, ex, enc, opt);
    for (size_t e = 0; e < ex.size(); ++e)
      for (size_t c = 0; c < ex[e].choices.size(); ++c) {
        std::vector<int32_t> ctx{SyntheticVocab::bos()};
        for (int32_t id : v.encode(ex[e].context)) ctx.push_back(id);
        const std::vector<int32_t> cont = v.encode(ex[e].choices[c]);
        std::vector<int32_t> full = ctx;
        full.insert(full.end(), cont.begin(), cont.end());
        if (static_cast<int64_t>(full.size()) > max_len + 1) full.erase(full.begin(), full.end() - (max_len + 1));
        const std::vector<int32_t> input(full.begin(), full.end() - 1);
        const auto rows = test::logits_of(m, input);
        double ll = 0;
        for (size_t p = full.size() - cont.size(); p < full.size(); ++p) ll += test::log_prob(rows[p - 1], full[p]);
        // f32 forward, op sums in double and returns an f32 mean: 1e-5 relative.
        EXPECT_NEAR(r.lls[e][c], ll, 1e-5 * (1 + std::abs(ll))) << "example " << e << " choice " << c
                                                                 << " max_length " << max_len;
      }
  }
}

TEST(MultipleChoice, ParsesJsonl) {
  const std::string text =
      "{\"context\": \"Q: 2+2?\\nA:\", \"choices\": [\"3\", \"4\", \"caf\\u00e9\"], \"gold\": 1}\n"
      "\n"
      "{\"context\": \"x\", \"choices\": [\"a\", \"b\"], \"answer\": 0}\r\n";
  const auto ex = parse_mc_jsonl(text, "t.jsonl");
  ASSERT_EQ(ex.size(), 2u);
  EXPECT_EQ(ex[0].context, "Q: 2+2?\nA:");
  EXPECT_EQ(ex[0].choices, (std::vector<std::string>{"3", "4", "caf\xc3\xa9"}));
  EXPECT_EQ(ex[0].gold, 1);
  EXPECT_EQ(ex[1].gold, 0);
  // A surrogate pair is one code point (4 UTF-8 bytes): one character for acc_norm.
  const auto emoji = parse_mc_jsonl("{\"context\": \"c\", \"choices\": [\"\\ud83d\\ude00\", \"b\"], \"label\": 1}");
  ASSERT_EQ(emoji.size(), 1u);
  EXPECT_EQ(emoji[0].choices[0], "\xf0\x9f\x98\x80");
  EXPECT_EQ(utf8_length(emoji[0].choices[0]), 1);
  EXPECT_EQ(emoji[0].gold, 1);
}

TEST(MultipleChoice, BadJsonlNamesLineAndField) {
  auto message = [](const std::string& text) {
    try {
      parse_mc_jsonl(text, "f.jsonl");
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message("{\"context\": \"x\", \"choices\": [\"a\", \"b\"], \"gold\": 2}").find("f.jsonl:1"), std::string::npos);
  EXPECT_NE(message("\n{\"context\": \"x\", \"gold\": 0}").find("f.jsonl:2: missing array field 'choices'"), std::string::npos);
  EXPECT_NE(message("{\"choices\": [\"a\", \"b\"], \"gold\": 0}").find("'context'"), std::string::npos);
  EXPECT_NE(message("{\"context\": \"x\", \"choices\": [\"a\"], \"gold\": 0}").find("at least 2"), std::string::npos);
  EXPECT_NE(message("{\"context\": \"x\", \"choices\": [\"a\", \"b\"]}").find("'gold'"), std::string::npos);
  EXPECT_NE(message("{\"context\": \"x\", \"choices\": [\"a\", \"b\"], \"gold\": \"one\"}").find("f.jsonl:1"), std::string::npos);
  EXPECT_NE(message("{\"context\": \"x\", \"choices\": [\"a\", ").find("f.jsonl:1"), std::string::npos);
  EXPECT_THROW(load_mc_jsonl("/nonexistent/mc.jsonl"), InputError);
}

}  // namespace
}  // namespace lizard::eval
