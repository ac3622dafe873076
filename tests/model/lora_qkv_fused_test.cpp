// Attention's fused q/k/v LoRA (autograd::lora_fused): when it applies, the lora_A weights are
// row blocks of one buffer (packed again after a load replaced their data), and a model's
// forward and every gradient match the per-adapter path (LIZARD_LORA_FUSED=0) with 6 fewer
// GEMMs per layer (4 in the first, whose input needs no gradient).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "lizard/nn/llama.h"
#include "lizard/ops/matmul.h"
#include "test_util.h"

using namespace lizard;
using namespace lizard::nn;
using lizard::test::max_abs_diff;
using lizard::test::rand;
using lizard::test::ScopedEnv;

namespace {

LlamaConfig tiny() {
  LlamaConfig c;
  c.vocab_size = 13;
  c.hidden_size = 12;
  c.intermediate_size = 20;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 3;
  c.num_key_value_heads = 1;  // k, v narrower than q
  c.head_dim = 4;
  return c;
}

// The q, k, v lora_A data are consecutive row blocks of one storage.
bool packed(const Attention& at) {
  std::vector<Tensor> d;
  for (const Linear* l : {at.q_proj, at.k_proj, at.v_proj})
    d.push_back(static_cast<const LoRALinear*>(l)->lora_a().data());
  int64_t at_off = d[0].offset();
  for (const Tensor& t : d) {
    if (t.storage() != d[0].storage() || t.offset() != at_off || !t.is_contiguous()) return false;
    at_off += t.numel();
  }
  return true;
}

struct StepRun {
  Tensor logits;
  std::map<std::string, Tensor> grads;
  int64_t gemms = 0;
};

// Forward + backward of the loss sum(logits * w) with every LoRA parameter trainable.
StepRun run(const LlamaForCausalLM& m, const Tensor& ids, const Tensor& w) {
  for (auto& [name, v] : m.named_parameters()) v.zero_grad();
  const int64_t before = ops::gemm_count();
  autograd::Var y = m.forward(ids);
  y.backward(w);
  StepRun r;
  r.gemms = ops::gemm_count() - before;
  r.logits = y.data();
  for (auto& [name, v] : m.named_parameters())
    if (v.grad().defined()) r.grads[name] = v.grad().clone();
  return r;
}

// f64: the paths form the same products in another summation order (~1e-16 relative per op,
// amplified by two layers of norms and softmax to well under 1e-12 of the largest |value|),
// while a wrong block or scale is off by O(1).
void expect_close(const Tensor& got, const Tensor& want, const std::string& what) {
  double m = 0;
  for (double v : want.to_vector()) m = std::max(m, std::abs(v));
  EXPECT_LE(max_abs_diff(got, want), 1e-12 * m) << what << " (max |want| " << m << ")";
}

}  // namespace

TEST(LoraQkvFused, AppliesOnlyToLikeAdaptersWithoutDropout) {
  const LlamaConfig c = tiny();
  auto attn0 = [](const LlamaForCausalLM& m) -> const Attention& {
    return *m.model->layers[0]->self_attn;
  };
  LlamaForCausalLM qkv(c, {}, LoraSpec{LoraConfig{4, 8.0, 0.0}, {true, true, true, false}, 1});
  EXPECT_TRUE(attn0(qkv).fuses_lora());
  EXPECT_TRUE(packed(attn0(qkv)));
  LlamaForCausalLM drop(c, {}, LoraSpec{LoraConfig{4, 8.0, 0.1}, {true, true, true, false}, 1});
  EXPECT_FALSE(attn0(drop).fuses_lora()) << "dropout draws per adapter";
  LlamaForCausalLM qv(c, {}, LoraSpec{LoraConfig{4, 8.0, 0.0}, {true, false, true, false}, 1});
  EXPECT_FALSE(attn0(qv).fuses_lora()) << "k has no adapter";
  LlamaForCausalLM none(c, {}, LoraSpec{});
  EXPECT_FALSE(attn0(none).fuses_lora());
}

TEST(LoraQkvFused, ModelMatchesThePerAdapterPathAfterALoad) {
  const LlamaConfig c = tiny();
  LlamaForCausalLM m(c, {}, LoraSpec{LoraConfig{3, 7.0, 0.0}, {true, true, true, true}, 5},
                     DType::F64);
  m.init_random(6, 0.3);
  // Loading replaces data (set_data): B random so every A gets a gradient, A's new values.
  uint64_t seed = 10;
  for (auto& [name, v] : m.named_parameters())
    if (is_lora_parameter(name)) v.set_data(rand(v.shape(), ++seed));
  const Attention& a0 = *m.model->layers[0]->self_attn;
  EXPECT_FALSE(packed(a0)) << "set_data gave each lora_A its own tensor";
  const Tensor ids = Tensor::from_data<int32_t>({1, 5, 7, 2, 11, 3, 0, 9, 4, 8}, {2, 5});
  const Tensor w = rand({2, 5, c.vocab_size}, 30);

  StepRun per_adapter;
  {
    ScopedEnv off("LIZARD_LORA_FUSED", "0");
    per_adapter = run(m, ids, w);
  }
  const StepRun fused = run(m, ids, w);
  EXPECT_TRUE(packed(a0)) << "the fused forward packs the loaded lora_A data again";
  // The packed data are the loaded values: the outputs agree with the per-adapter path's.
  expect_close(fused.logits, per_adapter.logits, "logits");
  ASSERT_EQ(fused.grads.size(), per_adapter.grads.size());
  EXPECT_EQ(fused.grads.size(), 2u * 8u) << "q, k, v, o adapters (A and B) of two layers";
  for (const auto& [name, g] : per_adapter.grads) {
    ASSERT_TRUE(fused.grads.count(name)) << name;
    expect_close(fused.grads.at(name), g, name);
  }
  // 6 fewer per layer (forward 6 -> 4, backward 12 -> 8); 4 in layer 0, whose input (the
  // frozen embedding's, normed) needs no gradient, so neither path runs dx GEMMs there.
  EXPECT_EQ(per_adapter.gemms - fused.gemms, 4 + 6 * (c.num_hidden_layers - 1));
  // A second step on the packed weights (no re-pack) gives the same again.
  const StepRun again = run(m, ids, w);
  EXPECT_EQ(max_abs_diff(again.logits, fused.logits), 0.0);
}

TEST(LoraQkvFused, UnknownSwitchValueNamesTheVariable) {
  LlamaForCausalLM m(tiny(), {}, LoraSpec{LoraConfig{2, 4.0, 0.0}, {true, true, true, false}, 1});
  const Tensor ids = Tensor::from_data<int32_t>({1, 5, 7}, {1, 3});
  ScopedEnv bad("LIZARD_LORA_FUSED", "off");
  try {
    m.forward(ids);
    FAIL() << "LIZARD_LORA_FUSED=off accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("LIZARD_LORA_FUSED"), std::string::npos) << e.what();
  }
}
