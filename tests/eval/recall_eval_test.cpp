// MQAR and passkey accuracy bookkeeping on models whose predictions are known.
#include <gtest/gtest.h>

#include "eval_test_util.h"
#include "lizard/eval/recall_eval.h"

namespace lizard::eval {
namespace {

// A bigram model that maps key i to value (i mod num_values) (everything else to pad): a query
// is right exactly when its pair's value happens to be that value. The accuracy, split at the
// window, must equal that count made from the samples alone.
TEST(RecallEval, MqarCountsMatchAKnownPredictor) {
  SyntheticVocab v({6, 3});
  std::vector<int32_t> next(static_cast<size_t>(v.size()), SyntheticVocab::pad());
  for (int64_t i = 0; i < v.num_keys(); ++i) next[static_cast<size_t>(v.key(i))] = v.value(i % 3);
  auto m = test::bigram_model(v.size(), next);
  MqarSpec spec{40, 5, 0, 1, 0};
  const auto samples = mqar_samples(v, spec, 9, 21);
  const int64_t window = 12;
  EvalOptions opt;
  opt.batch_size = 4;
  const MqarResult r = mqar_accuracy(*m, samples, window, opt);
  int64_t in = 0, in_ok = 0, out = 0, out_ok = 0;
  std::vector<int64_t> slot_n(5, 0), slot_ok(5, 0);  // 5 pairs: slots 0..4
  for (const auto& s : samples)
    for (const auto& q : s.queries) {
      const bool ok = q.value == next[static_cast<size_t>(q.key)];
      const size_t slot = static_cast<size_t>((q.key_pos - 1) / 2);
      ++slot_n[slot];
      slot_ok[slot] += ok;
      if (q.distance() < window) {
        ++in;
        in_ok += ok;
      } else {
        ++out;
        out_ok += ok;
      }
    }
  EXPECT_EQ(r.queries, 45);
  EXPECT_EQ(r.inside, in);
  EXPECT_EQ(r.beyond, out);
  EXPECT_EQ(r.inside_correct, in_ok);
  EXPECT_EQ(r.beyond_correct, out_ok);
  EXPECT_EQ(r.correct, in_ok + out_ok);
  EXPECT_EQ(r.slot_queries, slot_n);
  EXPECT_EQ(r.slot_correct, slot_ok);
  EXPECT_GT(in, 0);
  EXPECT_GT(out, 0);
  EXPECT_GT(r.correct, 0) << "about a third of the queries should be right";
  EXPECT_LT(r.correct, r.queries);
}

// Passkey: "is" -> digit 4, digit d -> digit (d + 1) mod 10. A sample is right iff its key is
// 4 5 6 7 8 ...; per-digit hits are counted from the answer alone.
TEST(RecallEval, PasskeyCountsMatchAKnownPredictor) {
  SyntheticVocab v;
  std::vector<int32_t> next(static_cast<size_t>(v.size()), SyntheticVocab::pad());
  next[static_cast<size_t>(v.id("is"))] = v.digit(4);
  for (int d = 0; d < 10; ++d) next[static_cast<size_t>(v.digit(d))] = v.digit((d + 1) % 10);
  auto m = test::bigram_model(v.size(), next);
  PasskeySpec spec;
  spec.num_digits = 2;
  EvalOptions opt;
  opt.batch_size = 3;
  const auto res = passkey_accuracy(*m, v, {60, 75}, {0.0, 0.5, 1.0}, 12, 77, spec, opt);
  ASSERT_EQ(res.size(), 2u);
  for (size_t li = 0; li < 2; ++li) {
    const int64_t len = li == 0 ? 60 : 75;
    int64_t ok = 0, digits_ok = 0;
    for (size_t di = 0; di < 3; ++di)
      for (int64_t t = 0; t < 12; ++t) {
        PasskeySpec s = spec;
        s.length = len;
        s.depth = di * 0.5;
        const auto sample = passkey_sample(v, s, 77, di * 12 + static_cast<uint64_t>(t));
        const bool d0 = sample.answer[0] == v.digit(4);
        const bool d1 = sample.answer[1] == next[static_cast<size_t>(sample.answer[0])];
        digits_ok += d0 + d1;
        ok += d0 && d1;
      }
    EXPECT_EQ(res[li].length, len);
    EXPECT_EQ(res[li].samples, 36);
    EXPECT_EQ(res[li].digits, 72);
    EXPECT_EQ(res[li].digits_correct, digits_ok);
    EXPECT_EQ(res[li].correct, ok);
    EXPECT_GT(digits_ok, 0);
  }
}

}  // namespace
}  // namespace lizard::eval
