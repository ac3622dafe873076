// Perplexity against exact values (uniform model) and an independent f64 computation.
#include <gtest/gtest.h>

#include <cmath>

#include "eval_test_util.h"
#include "lizard/autograd/functions.h"
#include "lizard/eval/perplexity.h"

namespace lizard::eval {
namespace {

std::vector<int32_t> seq(int64_t n, int64_t V, int64_t salt) {
  std::vector<int32_t> s;
  for (int64_t i = 0; i < n; ++i) s.push_back(static_cast<int32_t>((i * 7 + salt * 13 + i * i) % V));
  return s;
}

// All weights zero: logits are exactly 0, every token has probability 1/V, so ppl == V. The
// only error is rounding log V to f32 inside the op (relative 6e-8 on the mean, x log V on ppl).
TEST(Perplexity, UniformModelIsVocabSize) {
  const int64_t V = 37;
  nn::LlamaForCausalLM m(test::tiny_config(V));
  PerplexityOptions opt;
  opt.max_length = 5;
  opt.batch_size = 3;
  std::vector<std::vector<int32_t>> seqs = {seq(1, V, 0), seq(2, V, 1), seq(11, V, 2), seq(5, V, 3), seq(6, V, 4)};
  const PerplexityResult r = perplexity(m, seqs, opt);
  // Chunks of at most 5 with no overlap: n - ceil(n / 5) predictions (a lone token: none).
  EXPECT_EQ(r.tokens, 0 + 1 + (11 - 3) + (5 - 1) + (6 - 2));
  EXPECT_NEAR(r.perplexity() / static_cast<double>(V), 1.0, 1e-6);
  EXPECT_NEAR(r.mean_nll(), std::log(static_cast<double>(V)), 1e-6);
}

// A random model: the batched, padded, chunked sum equals a per-chunk f64 log-softmax of the
// model's own logits computed one chunk at a time. Tolerance: the f32 forward of a padded batch
// and of a single row may differ in the last bits (different GEMM shapes), and the op sums in
// f32-rounded means; 1e-5 relative covers both with margin.
TEST(Perplexity, ChunkedMatchesF64Oracle) {
  const int64_t V = 29;
  nn::LlamaForCausalLM m(test::tiny_config(V));
  m.init_random(5, 0.5);  // large weights so the distribution is far from uniform
  std::vector<TokenDocument> docs(4);
  docs[0].tokens = seq(13, V, 1);
  docs[1].tokens = seq(4, V, 2);
  docs[2].tokens = seq(9, V, 3);
  docs[2].loss_mask = {0, 1, 0, 1, 1, 0, 0, 1, 1};  // only some targets count
  docs[3].tokens = seq(7, V, 4);
  PerplexityOptions opt;
  opt.max_length = 4;
  opt.batch_size = 2;
  const PerplexityResult r = perplexity(m, docs, opt);

  double nll = 0;
  int64_t count = 0;
  for (const auto& d : docs) {
    for (size_t start = 0; start < d.tokens.size(); start += 4) {
      std::vector<int32_t> chunk(d.tokens.begin() + start,
                                 d.tokens.begin() + std::min(d.tokens.size(), start + 4));
      if (chunk.size() < 2) continue;
      const auto rows = test::logits_of(m, chunk);
      for (size_t j = 1; j < chunk.size(); ++j) {
        if (!d.loss_mask.empty() && !d.loss_mask[start + j]) continue;
        nll -= test::log_prob(rows[j - 1], chunk[j]);
        ++count;
      }
    }
  }
  EXPECT_EQ(r.tokens, count);
  EXPECT_NEAR(r.nll_sum / nll, 1.0, 1e-5);
  EXPECT_GT(std::abs(r.mean_nll() - std::log(double(V))), 0.05) << "the model must not be uniform";
}

TEST(Perplexity, MaxLengthChangesOnlyTheCuts) {
  const int64_t V = 23;
  nn::LlamaForCausalLM m(test::tiny_config(V));
  m.init_random(8, 0.5);
  std::vector<std::vector<int32_t>> one = {seq(12, V, 6)};
  PerplexityOptions a, b;
  a.max_length = 12;
  b.max_length = 100;
  // One chunk either way: the same numbers.
  EXPECT_NEAR(perplexity(m, one, a).nll_sum, perplexity(m, one, b).nll_sum, 1e-5);
  a.max_length = 6;
  EXPECT_EQ(perplexity(m, one, a).tokens, 10);
  EXPECT_THROW(perplexity(m, one, PerplexityOptions{{true, 0}, 8}), InputError);
}

// A student whose token mixing outputs zeros: its perplexity must equal the teacher's of the
// same model with every o_proj zeroed (attention contributes nothing either way), and differ
// from the teacher's own. Proves ForwardOptions.teacher reaches the model.
class ZeroStudentAttention : public nn::Attention {
 public:
  using nn::Attention::Attention;
  autograd::Var student_mix(const autograd::Var&, const nn::QKV& qkv, const ops::RopeTable& rope) const override {
    return autograd::affine(softmax_mix(qkv, rope), 0.0);
  }
  bool is_linearized() const override { return true; }
};

TEST(Perplexity, StudentPathIsSelectable) {
  const int64_t V = 19;
  const nn::LlamaConfig cfg = test::tiny_config(V);
  nn::AttentionFactory zero_student = [](const nn::LlamaConfig& c, const nn::LoraSpec& l, int64_t i) {
    return std::unique_ptr<nn::Attention>(new ZeroStudentAttention(c, l, i, DType::F32, Device::cpu()));
  };
  nn::LlamaForCausalLM m(cfg, zero_student), no_attn(cfg);
  m.init_random(2, 0.5);
  no_attn.init_random(2, 0.5);
  for (auto& [name, p] : no_attn.named_parameters())
    if (name.find("o_proj") != std::string::npos) p.set_data(Tensor::zeros(p.shape()));
  std::vector<std::vector<int32_t>> seqs = {seq(9, V, 1), seq(6, V, 2)};
  PerplexityOptions teacher, student;
  student.teacher = false;
  const double s = perplexity(m, seqs, student).nll_sum;
  EXPECT_NEAR(s, perplexity(no_attn, seqs, teacher).nll_sum, 1e-5 * s);
  EXPECT_GT(std::abs(s - perplexity(m, seqs, teacher).nll_sum), 1e-3);
}

}  // namespace
}  // namespace lizard::eval
