// Logits, greedy continuations and perplexity against Hugging Face transformers' own outputs
// (tests/fixtures/hf, made by scripts/make_hf_fixtures.py with transformers 5 on the GPU machine).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "lizard/autograd/nn_functions.h"
#include "lizard/io/hf_config.h"
#include "lizard/io/hf_model.h"
#include "lizard/io/json.h"
#include "lizard/io/safetensors.h"
#include "test_util.h"

using namespace lizard;
namespace ag = lizard::autograd;
namespace fs = std::filesystem;

namespace {

const std::string kFixtures = std::string(LIZARD_SOURCE_DIR) + "/tests/fixtures/hf/";

Tensor ids_tensor(const io::Json& arr) {
  std::vector<double> v;
  for (const auto& x : arr.items()) v.push_back(static_cast<double>(x.as_int()));
  return Tensor::from_vector(v, {1, static_cast<int64_t>(v.size())}, DType::I32);
}

class HFParity : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dir_ = kFixtures + GetParam();
    if (!fs::exists(dir_ + "/expected.json")) GTEST_SKIP() << "fixture " << dir_ << " absent";
    expected_ = io::load_json_file(dir_ + "/expected.json");
  }
  std::string dir_;
  io::Json expected_;
};

// Greedy continuation with a full forward per step (the reference path). The fixture used
// min_new_tokens, which forbids eos: so do we.
std::vector<int32_t> greedy(const nn::LlamaForCausalLM& m, std::vector<int32_t> ids, size_t total,
                            Device dev) {
  const int64_t eos = m.config().eos_token_id;
  ag::NoGradGuard ng;
  while (ids.size() < total) {
    std::vector<double> v(ids.begin(), ids.end());
    Tensor t = Tensor::from_vector(v, {1, static_cast<int64_t>(v.size())}, DType::I32).to(dev);
    Tensor logits = m.forward(t).data().to(Device::cpu(), DType::F32);
    const int64_t V = logits.size(2);
    const float* last = logits.data<float>() + (logits.size(1) - 1) * V;
    int32_t best = eos == 0 ? 1 : 0;
    for (int64_t j = 0; j < V; ++j)
      if (j != eos && last[j] > last[best]) best = static_cast<int32_t>(j);
    ids.push_back(best);
  }
  return ids;
}

}  // namespace

TEST_P(HFParity, LogitsMatchTransformersCpuF32) {
  auto m = io::load_hf_model(dir_);
  Tensor ids = ids_tensor(expected_.at("input_ids"));
  ag::NoGradGuard ng;
  Tensor ours = m->forward(ids).data();
  io::SafetensorsFile ref_file(dir_ + "/logits.safetensors");
  Tensor ref = ref_file.load("logits");
  ASSERT_EQ(ours.shape(), ref.shape());
  double scale = 0;
  for (double v : ref.to_vector()) scale = std::max(scale, std::abs(v));
  // Both sides compute in fp32 with different summation orders; 1e-4 of the logits' scale
  // leaves ~100x margin over the observed fp32 reordering error.
  EXPECT_LE(test::max_abs_diff(ours, ref), 1e-4 * scale) << "scale " << scale;
}

TEST_P(HFParity, GreedyContinuationMatchesGenerate) {
  auto m = io::load_hf_model(dir_);
  std::vector<int32_t> prompt, want;
  for (const auto& x : expected_.at("greedy_prompt").items()) prompt.push_back(static_cast<int32_t>(x.as_int()));
  for (const auto& x : expected_.at("greedy_ids").items()) want.push_back(static_cast<int32_t>(x.as_int()));
  EXPECT_EQ(greedy(*m, prompt, want.size(), Device::cpu()), want);
}

TEST_P(HFParity, PerplexityMatches) {
  auto m = io::load_hf_model(dir_);
  Tensor ids = ids_tensor(expected_.at("ppl_ids"));
  const int64_t T = ids.size(1);
  ag::NoGradGuard ng;
  ag::Var logits = m->forward(ids.slice(1, 0, T - 1).contiguous());
  Tensor targets = ids.slice(1, 1, T).contiguous().reshape({T - 1});
  auto ce = ag::cross_entropy(ag::reshape(logits, {T - 1, m->config().vocab_size}), targets);
  const double ppl = std::exp(ce.loss.data().item());
  EXPECT_NEAR(ppl, expected_.at("perplexity").as_double(), 1e-4 * ppl);
}

TEST_P(HFParity, LogitsMatchTransformersCudaBf16) {
  LZ_REQUIRE_GPU();
  io::LoadOptions o;
  o.device = Device::cuda(0);
  o.dtype = DType::BF16;
  auto m = io::load_hf_model(dir_, o);
  Tensor ids = ids_tensor(expected_.at("input_ids")).to(o.device);
  ag::NoGradGuard ng;
  Tensor ours = m->forward(ids).data().to(Device::cpu(), DType::F32);
  Tensor ref = io::SafetensorsFile(dir_ + "/logits.safetensors").load("logits");
  // bf16 weights and activations: each rounding is <= 2^-9 relative; through 2 layers of
  // GEMMs with fp32 accumulation the logits keep a few percent of relative error. The test
  // bounds the relative L2 error by 3e-2 (observed ~1e-2) and requires the same argmax on
  // most positions.
  EXPECT_LE(test::rel_err(ours, ref), 3e-2);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, HFParity,
                         ::testing::Values("llama", "llama3_rope", "mistral_swa", "qwen2",
                                           "llama_tied"));

TEST(HFConfig, BothDialectsGiveTheSameModel) {
  for (const char* name : {"llama", "llama3_rope", "mistral_swa", "qwen2", "llama_tied"}) {
    const std::string d = kFixtures + name;
    if (!fs::exists(d + "/config_v4.json")) GTEST_SKIP() << "fixtures absent";
    auto a = io::load_hf_config(d + "/config.json");
    auto b = io::load_hf_config(d + "/config_v4.json");
    EXPECT_EQ(a.rope_theta, b.rope_theta) << name;
    EXPECT_EQ(a.rope_scaling.type, b.rope_scaling.type) << name;
    EXPECT_EQ(a.rope_scaling.factor, b.rope_scaling.factor) << name;
    EXPECT_EQ(a.sliding_window, b.sliding_window) << name;
    EXPECT_EQ(a.num_parameters(), b.num_parameters()) << name;
  }
}
