#include <gtest/gtest.h>

#include "lizard/autograd/nn_functions.h"
#include "lizard/nn/llama.h"
#include "test_util.h"

using namespace lizard;
using namespace lizard::nn;
namespace ag = lizard::autograd;

namespace {
LlamaConfig tiny(bool tied = false, bool bias = false) {
  LlamaConfig c;
  c.vocab_size = 37;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 4;
  c.tie_word_embeddings = tied;
  c.attention_bias = bias;
  return c;
}
Tensor ids_of(int64_t B, int64_t T, int64_t V, uint64_t seed) {
  std::vector<double> v(B * T);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<double>((i * 7 + seed * 13) % V);
  return Tensor::from_vector(v, {B, T}, DType::I32);
}
}  // namespace

TEST(Llama, HFParameterNamesAndCount) {
  LlamaConfig c = tiny(false, true);
  LlamaForCausalLM m(c);
  auto names = m.named_parameters();
  std::vector<std::string> want = {"model.embed_tokens.weight",
                                   "model.layers.0.input_layernorm.weight",
                                   "model.layers.0.self_attn.q_proj.weight",
                                   "model.layers.0.self_attn.q_proj.bias",
                                   "model.layers.1.mlp.down_proj.weight",
                                   "model.norm.weight",
                                   "lm_head.weight"};
  for (const auto& w : want) EXPECT_NO_THROW(m.parameter(w)) << w;
  EXPECT_EQ(m.num_parameters(), c.num_parameters());
  LlamaForCausalLM tied(tiny(true));
  EXPECT_EQ(tied.lm_head, nullptr);
  EXPECT_EQ(tied.num_parameters(), tiny(true).num_parameters());
}

TEST(Llama, CausalityAndShapes) {
  LlamaForCausalLM m(tiny(), {}, {}, DType::F64);
  m.init_random(3, 0.2);
  ag::NoGradGuard ng;
  Tensor a = ids_of(1, 9, 37, 1);
  Var la = m.forward(a);
  EXPECT_EQ(la.shape(), (Shape{1, 9, 37}));
  // Changing the last token must not change earlier logits.
  auto v = a.to_vector();
  v[8] = static_cast<double>((static_cast<int>(v[8]) + 5) % 37);
  Var lb = m.forward(Tensor::from_vector(v, {1, 9}, DType::I32));
  Tensor pa = la.data().slice(1, 0, 8), pb = lb.data().slice(1, 0, 8);
  EXPECT_EQ(test::max_abs_diff(pa, pb), 0.0);
  EXPECT_GT(test::max_abs_diff(la.data().slice(1, 8, 9), lb.data().slice(1, 8, 9)), 1e-6);
}

TEST(Llama, GradientsMatchFiniteDifferences) {
  // d loss / d (one weight matrix of each kind), f64.
  LlamaForCausalLM m(tiny(true, true), {}, {}, DType::F64);
  m.init_random(5, 0.3);
  Tensor ids = ids_of(2, 5, 37, 2);
  std::vector<double> tv = ids.to_vector();
  std::vector<double> targets(tv.size());
  for (size_t i = 0; i < tv.size(); ++i) targets[i] = i % 5 == 4 ? -1 : tv[(i + 1) % tv.size()];
  Tensor tg = Tensor::from_vector(targets, {10}, DType::I32);
  for (const char* name : {"model.layers.1.self_attn.k_proj.weight", "model.layers.0.mlp.up_proj.weight",
                           "model.layers.0.self_attn.v_proj.bias", "model.norm.weight",
                           "model.embed_tokens.weight"}) {
    Var p = m.parameter(name);
    Tensor p0 = p.data().clone();
    auto loss_fn = [&]() {
      return ag::cross_entropy(ag::reshape(m.forward(ids), {10, 37}), tg).loss;
    };
    for (auto& q : m.named_parameters()) {
      q.second.set_requires_grad(true);
      q.second.zero_grad();
    }
    loss_fn().backward();
    auto g = p.grad().to_vector();
    auto base = p0.to_vector();
    // check a handful of elements
    for (size_t i = 0; i < base.size(); i += std::max<size_t>(1, base.size() / 7)) {
      auto at = [&](double delta) {
        auto v = base;
        v[i] += delta;
        p.set_data(Tensor::from_vector(v, p0.shape(), DType::F64));
        ag::NoGradGuard ng;
        return loss_fn().data().item();
      };
      const double eps = 1e-6;
      const double num = (at(eps) - at(-eps)) / (2 * eps);
      p.set_data(p0);
      EXPECT_NEAR(g[i], num, 1e-6 * (1 + std::abs(num))) << name << "[" << i << "]";
    }
  }
}

TEST(Llama, RecomputeGivesIdenticalGradients) {
  LlamaForCausalLM m(tiny(), {}, {}, DType::F64);
  m.init_random(9, 0.2);
  Tensor ids = ids_of(2, 6, 37, 3);
  for (auto& q : m.named_parameters()) q.second.set_requires_grad(true);
  auto run = [&](bool recompute) {
    for (auto& q : m.named_parameters()) q.second.zero_grad();
    ForwardOptions o;
    o.recompute = recompute;
    ag::sum(ag::square(m.forward(ids, o))).backward();
    std::vector<std::vector<double>> gs;
    for (auto& q : m.named_parameters()) gs.push_back(q.second.grad().to_vector());
    return gs;
  };
  EXPECT_EQ(run(false), run(true));
}

TEST(Llama, LoraStartsAsIdentityAndFreezesBase) {
  LlamaConfig c = tiny();
  LoraConfig lc;
  LoraSpec spec{lc, {true, true, true}, 11};
  LlamaForCausalLM base(c, {}, {}, DType::F64);
  base.init_random(4, 0.2);
  LlamaForCausalLM lora(c, {}, spec, DType::F64);
  for (auto& [n, v] : base.named_parameters()) lora.parameter(n).set_data(v.data());
  Tensor ids = ids_of(1, 7, 37, 4);
  ag::NoGradGuard ng;
  EXPECT_EQ(test::max_abs_diff(base.forward(ids).data(), lora.forward(ids).data()), 0.0);
  EXPECT_EQ(lora.parameter("model.layers.0.self_attn.q_proj.weight").tag(), ParamTag::Frozen);
  EXPECT_EQ(lora.parameter("model.layers.0.self_attn.q_proj.lora_A.weight").tag(), ParamTag::Adapter);
  EXPECT_EQ(lora.named_parameters({ParamTag::Adapter}).size(), 2u * 3u * 2u);
}
