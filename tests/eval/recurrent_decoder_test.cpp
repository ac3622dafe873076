// The constant-memory decoder (eval::RecurrentStepModel) against the reference decoder that
// re-runs the whole forward (RecomputeStepModel): equal logits at every position for a
// teacher, all-Lizard students (paper; plus with window RoPE, per-head gate, per-head sinks,
// convex combine), a hybrid with a softmax layer, and a sliding-window (Mistral) teacher; and
// decoding state that does not grow with the position for an all-Lizard model.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "eval_test_util.h"
#include "test_util.h"
#include "lizard/eval/recurrent_decoder.h"
#include "lizard/nn/lizard_attention.h"

namespace lizard::eval {
namespace {

constexpr int64_t kVocab = 37;

// max |a - b| / max |b|: one scale for the whole logit row.
double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, std::abs(static_cast<double>(a[i]) - b[i]));
    den = std::max(den, std::abs(static_cast<double>(b[i])));
  }
  return num / std::max(den, 1e-30);
}

ops::LizardConfig small_lizard(bool plus) {
  ops::LizardConfig c;
  c.preset = plus ? ops::Preset::Plus : ops::Preset::Paper;
  c.feature_dim = 6;
  c.window = 5;     // shorter than the sequences below: the ring buffer wraps
  c.sinks = 3;
  c.chunk = 4;      // the prefill's chunked form crosses several chunks
  if (plus) {
    c.sinks_per_head = true;
    c.combine = ops::Combine::Convex;
  }
  return c.resolved();
}

// A tiny random model; Lizard parameters moved off their initial values (identity maps, zero
// gate weights) so that every term of the recurrence is exercised.
std::unique_ptr<nn::LlamaForCausalLM> make_model(int64_t layers, bool student, bool plus,
                                                 std::vector<int64_t> softmax_layers = {},
                                                 int64_t sliding_window = 0,
                                                 Device dev = Device::cpu(),
                                                 DType dtype = DType::F32) {
  nn::LlamaConfig cfg = test::tiny_config(kVocab, 16, layers);
  cfg.sliding_window = sliding_window;
  nn::AttentionFactory f;
  if (student) f = nn::lizard_factory(small_lizard(plus), softmax_layers, dtype, dev);
  auto m = std::make_unique<nn::LlamaForCausalLM>(cfg, f, nn::LoraSpec{}, dtype, dev);
  m->init_random(7, 0.3);
  uint64_t off = 100;
  for (auto& [name, v] : m->named_parameters())
    if (nn::is_lizard_parameter(name))
      v.set_data(Tensor::normal(v.shape(), 0.0, 0.5, 11, off++, DType::F32).to(dev));
  return m;
}

std::vector<int32_t> tokens(int64_t n, uint64_t seed) {
  std::vector<int32_t> t;
  for (int64_t i = 0; i < n; ++i) t.push_back(static_cast<int32_t>((seed * 7 + i * 13 + i * i) % kVocab));
  return t;
}

// Prefill `prompt_len` tokens, then feed the rest one by one; both decoders must agree at
// every position. Returns the largest relative error seen.
double max_error(const nn::LlamaForCausalLM& m, bool teacher, int64_t prompt_len, int64_t total,
                 double tol = 1e-4) {
  const std::vector<int32_t> ids = tokens(total, static_cast<uint64_t>(prompt_len));
  RecomputeStepModel ref(m, teacher);
  RecurrentStepModel rec(m, teacher);
  const std::vector<int32_t> prompt(ids.begin(), ids.begin() + prompt_len);
  double worst = rel_err(rec.prefill(prompt), ref.prefill(prompt));
  for (int64_t t = prompt_len; t < total; ++t) {
    const double e = rel_err(rec.step(ids[t]), ref.step(ids[t]));
    EXPECT_LE(e, tol) << "position " << t << " (prompt " << prompt_len << ")";
    worst = std::max(worst, e);
  }
  EXPECT_EQ(rec.position(), total);
  return worst;
}

// f32 on both sides; the recurrence sums the same terms in another order (state decayed per
// token vs chunk tiles), so agreement is ~1e-6 relative; 1e-4 leaves room without hiding a
// wrong term (a dropped sink, decay or window entry moves logits by 1e-2 or more here).
constexpr double kTol = 1e-4;

TEST(RecurrentDecoder, TeacherEqualsRecompute) {
  auto m = make_model(2, false, false);
  EXPECT_LE(max_error(*m, true, 1, 20), kTol);
  EXPECT_LE(max_error(*m, true, 7, 20), kTol);
}

TEST(RecurrentDecoder, SlidingWindowTeacherEqualsRecompute) {
  auto m = make_model(2, false, false, {}, /*sliding_window=*/6);
  EXPECT_LE(max_error(*m, true, 9, 24), kTol);
}

TEST(RecurrentDecoder, PaperStudentEqualsRecompute) {
  auto m = make_model(2, true, false);
  EXPECT_LE(max_error(*m, false, 1, 26), kTol);
  EXPECT_LE(max_error(*m, false, 9, 26), kTol);
}

TEST(RecurrentDecoder, PlusStudentEqualsRecompute) {
  auto m = make_model(2, true, true);  // window RoPE, per-head gate, per-head sinks, convex
  EXPECT_LE(max_error(*m, false, 1, 26), kTol);
  EXPECT_LE(max_error(*m, false, 10, 26), kTol);
}

TEST(RecurrentDecoder, HybridEqualsRecompute) {
  auto m = make_model(3, true, true, /*softmax_layers=*/{1});
  EXPECT_LE(max_error(*m, false, 6, 24), kTol);
  // The teacher path of the same model too (every layer softmax).
  EXPECT_LE(max_error(*m, true, 6, 24), kTol);
}

// The comparisons above are not vacuous: the student path differs from the teacher path.
TEST(RecurrentDecoder, StudentAndTeacherPathsDiffer) {
  auto m = make_model(2, true, false);
  const std::vector<int32_t> ids = tokens(12, 3);
  RecurrentStepModel s(*m, false), t(*m, true);
  EXPECT_GT(rel_err(s.prefill(ids), t.prefill(ids)), 1e-2);
}

TEST(RecurrentDecoder, LizardStateDoesNotGrow) {
  auto m = make_model(2, true, false);
  RecurrentStepModel rec(*m, false);
  const std::vector<int32_t> ids = tokens(101, 5);
  rec.prefill({ids[0]});
  int64_t at10 = 0;
  for (int64_t t = 1; t < 100; ++t) {
    rec.step(ids[t]);
    if (rec.position() == 10) at10 = rec.state_bytes();
  }
  ASSERT_EQ(rec.position(), 100);
  EXPECT_GT(at10, 0);
  EXPECT_EQ(rec.state_bytes(), at10) << "all-Lizard decoding state must be constant in T";
  // A softmax layer's cache does grow: the measurement sees it.
  auto h = make_model(2, true, false, {0});
  RecurrentStepModel hyb(*h, false);
  hyb.prefill({ids[0]});
  for (int64_t t = 1; t < 10; ++t) hyb.step(ids[t]);
  const int64_t h10 = hyb.state_bytes();
  for (int64_t t = 10; t < 100; ++t) hyb.step(ids[t]);
  // 90 more tokens x (k + v) x Hkv 1 x D 8 x 4 bytes in the one softmax layer.
  EXPECT_EQ(hyb.state_bytes() - h10, 90 * 2 * 1 * 8 * 4);
}

TEST(RecurrentDecoder, GreedyGenerationMatchesRecompute) {
  auto m = make_model(2, true, true);
  SamplingOptions opt;
  opt.max_new_tokens = 15;
  RecomputeStepModel ref(*m, false);
  RecurrentStepModel rec(*m, false);
  EXPECT_EQ(generate(rec, {3, 1, 4}, opt), generate(ref, {3, 1, 4}, opt));
}

// On a CUDA model the projections, MLPs and the prefill's softmax attention run on the GPU and
// the Lizard state on the host; the reference runs the CUDA Lizard kernels. f32 weights, but
// the CUDA GEMMs and kernels sum in other orders (and may use TF32): 2e-3 relative.
TEST(RecurrentDecoder, CudaModelEqualsRecompute) {
  LZ_REQUIRE_GPU();
  for (bool plus : {false, true}) {
    auto m = make_model(3, true, plus, {1}, 0, Device::cuda(0), DType::F32);
    EXPECT_LE(max_error(*m, false, 9, 30, 2e-3), 2e-3) << (plus ? "plus" : "paper");
    EXPECT_LE(max_error(*m, true, 9, 30, 2e-3), 2e-3) << "teacher path";
  }
  // bf16 weights (the CLI's default on GPU): activations round to 8 bits of mantissa on both
  // sides at different points; 5e-2 relative still catches a wrong state or position.
  auto b = make_model(2, true, true, {}, 0, Device::cuda(0), DType::BF16);
  EXPECT_LE(max_error(*b, false, 7, 24, 5e-2), 5e-2);
}

}  // namespace
}  // namespace lizard::eval
