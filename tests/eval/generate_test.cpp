// Generation: greedy against a known bigram chain, top-p -> 0 equals greedy, reproducible
// sampling, the nucleus cut and the sampled frequencies.
#include <gtest/gtest.h>

#include <cmath>

#include "eval_test_util.h"
#include "lizard/core/error.h"
#include "lizard/eval/generate.h"

namespace lizard::eval {
namespace {

// next(i) = (3 i + 1) mod V: greedy decoding from a prompt must follow the chain exactly.
std::vector<int32_t> chain(int64_t V) {
  std::vector<int32_t> n;
  for (int64_t i = 0; i < V; ++i) n.push_back(static_cast<int32_t>((3 * i + 1) % V));
  return n;
}

TEST(Generate, GreedyFollowsTheBigramChain) {
  const int64_t V = 23;
  auto m = test::bigram_model(V, chain(V));
  SamplingOptions opt;
  opt.max_new_tokens = 12;
  const std::vector<int32_t> out = generate(*m, {4, 9, 2}, opt);
  ASSERT_EQ(out.size(), 12u);
  int32_t prev = 2;
  for (int32_t t : out) {
    EXPECT_EQ(t, (3 * prev + 1) % V);
    prev = t;
  }
  EXPECT_EQ(generate(*m, {4, 9, 2}, opt), out) << "greedy must be deterministic";
}

// Greedy on a random model equals an argmax over an independent full forward at every step.
TEST(Generate, GreedyMatchesArgmaxOfFullForward) {
  const int64_t V = 31;
  nn::LlamaForCausalLM m(test::tiny_config(V));
  m.init_random(12, 0.6);
  SamplingOptions opt;
  opt.max_new_tokens = 6;
  const std::vector<int32_t> out = generate(m, {1, 5}, opt);
  std::vector<int32_t> ids = {1, 5};
  for (int32_t t : out) {
    const auto rows = test::logits_of(m, ids);
    const auto& last = rows.back();
    EXPECT_EQ(t, std::max_element(last.begin(), last.end()) - last.begin());
    ids.push_back(t);
  }
}

TEST(Generate, TopPToZeroIsGreedy) {
  const int64_t V = 31;
  nn::LlamaForCausalLM m(test::tiny_config(V));
  m.init_random(4, 0.6);
  SamplingOptions greedy;
  greedy.max_new_tokens = 8;
  const auto g = generate(m, {3}, greedy);
  for (uint64_t seed : {0u, 1u, 99u}) {
    SamplingOptions p = greedy;
    p.temperature = 1.5;
    p.top_p = 1e-9;
    p.seed = seed;
    EXPECT_EQ(generate(m, {3}, p), g) << "seed " << seed;
  }
}

TEST(Generate, SamplingIsReproducibleBySeed) {
  const int64_t V = 31;
  nn::LlamaForCausalLM m(test::tiny_config(V));
  m.init_random(4, 0.3);
  SamplingOptions opt;
  opt.max_new_tokens = 16;
  opt.temperature = 2.0;
  opt.top_p = 0.95;
  opt.seed = 7;
  const auto a = generate(m, {3}, opt);
  EXPECT_EQ(generate(m, {3}, opt), a);
  opt.seed = 8;
  EXPECT_NE(generate(m, {3}, opt), a) << "a flat distribution over 31 tokens, 16 draws";
}

TEST(Generate, CallbackAndEosStop) {
  const int64_t V = 23;
  auto m = test::bigram_model(V, chain(V));
  SamplingOptions opt;
  opt.max_new_tokens = 10;
  std::vector<int32_t> seen;
  auto out = generate(*m, {2}, opt, true, [&](int32_t t) {
    seen.push_back(t);
    return seen.size() < 3;
  });
  EXPECT_EQ(out.size(), 3u);
  EXPECT_EQ(seen, out);
  opt.eos = (3 * 7 + 1) % V;  // the chain from 2 is 7, 22, ...
  out = generate(*m, {2}, opt);
  EXPECT_EQ(out, (std::vector<int32_t>{7, static_cast<int32_t>(opt.eos)}));
  opt.max_new_tokens = 0;
  EXPECT_TRUE(generate(*m, {2}, opt).empty());
  EXPECT_THROW(generate(*m, {}, SamplingOptions{}), InputError);
}

// p = [0.4, 0.3, 0.2, 0.1] (logits = log p): top_p 0.5 keeps {0, 1} (0.4 < 0.5 <= 0.7), drawn
// 4:3; top_p 1 draws all four in proportion. 40000 draws: the standard error of a frequency is
// below 0.0025, so 0.015 is a 6-sigma bound.
TEST(SampleToken, NucleusAndFrequencies) {
  const std::vector<float> logits = {std::log(0.4f), std::log(0.3f), std::log(0.2f), std::log(0.1f)};
  const int N = 40000;
  std::vector<int> c_half(4, 0), c_all(4, 0);
  for (int i = 0; i < N; ++i) {
    ++c_half[static_cast<size_t>(sample_token(logits, 1.0, 0.5, 123, static_cast<uint64_t>(i)))];
    ++c_all[static_cast<size_t>(sample_token(logits, 1.0, 1.0, 123, static_cast<uint64_t>(i)))];
  }
  EXPECT_EQ(c_half[2] + c_half[3], 0);
  EXPECT_NEAR(c_half[0] / double(N), 4.0 / 7.0, 0.015);
  const double p[4] = {0.4, 0.3, 0.2, 0.1};
  for (int k = 0; k < 4; ++k) EXPECT_NEAR(c_all[static_cast<size_t>(k)] / double(N), p[k], 0.015);
  // Temperature sharpens: at T = 0.25, p ~ p^4 normalised -> token 0 takes 0.4^4 / sum = 0.716.
  int zero = 0;
  for (int i = 0; i < N; ++i) zero += sample_token(logits, 0.25, 1.0, 5, static_cast<uint64_t>(i)) == 0;
  EXPECT_NEAR(zero / double(N), 0.0256 / (0.0256 + 0.0081 + 0.0016 + 0.0001), 0.015);
  EXPECT_EQ(sample_token(logits, 0.0, 1.0, 0, 0), 0);
  EXPECT_THROW(sample_token(logits, 1.0, 0.0, 0, 0), InputError);
  EXPECT_THROW(sample_token(logits, -1.0, 1.0, 0, 0), InputError);
}

// A StepModel that is not a LlamaForCausalLM: generate() only talks through the interface.
class CountingStepModel : public StepModel {
 public:
  std::vector<float> prefill(const std::vector<int32_t>& prompt) override {
    ++prefills;
    return logits_after(prompt.back());
  }
  std::vector<float> step(int32_t token) override {
    ++steps;
    return logits_after(token);
  }
  int prefills = 0, steps = 0;

 private:
  static std::vector<float> logits_after(int32_t t) {
    std::vector<float> l(10, 0.0f);
    l[static_cast<size_t>((t + 1) % 10)] = 5.0f;
    return l;
  }
};

TEST(Generate, DrivesAnyStepModel) {
  CountingStepModel sm;
  SamplingOptions opt;
  opt.max_new_tokens = 4;
  EXPECT_EQ(generate(sm, {8}, opt), (std::vector<int32_t>{9, 0, 1, 2}));
  EXPECT_EQ(sm.prefills, 1);
  EXPECT_EQ(sm.steps, 3) << "no step after the last token";
}

}  // namespace
}  // namespace lizard::eval
