// The fused GEMM accumulates (LoRA up-projection, o_proj + residual, down_proj + residual)
// give the outputs and gradients of the unfused composition they replaced.
#include <gtest/gtest.h>

#include "lizard/autograd/functions.h"
#include "lizard/nn/linear.h"
#include "lizard/nn/llama.h"
#include "test_util.h"

using namespace lizard;
using namespace lizard::nn;
namespace ag = lizard::autograd;
using lizard::test::rand;
using lizard::test::rel_err;

namespace {
// f64 everywhere: fused and unfused differ only in summation order (~1e-16 relative per
// op), so 1e-12 separates "same math" from any real difference (a missing alpha or a dropped
// residual is O(1)).
constexpr double kTol = 1e-12;
}  // namespace

TEST(FusedResidual, LoraLinearMatchesUnfusedComposition) {
  LoraConfig lc{4, 12.0, 0.0};  // alpha / r = 3
  LoRALinear lin(10, 7, false, lc, 21, 0, DType::F64);
  Var w = lin.weight(), la = lin.lora_a(), lb = lin.lora_b();  // copies share state
  w.set_data(rand({7, 10}, 22));
  lb.set_data(rand({7, 4}, 23));  // B = 0 at init would hide the LoRA term
  Tensor x0 = rand({2, 3, 10}, 24), r0 = rand({2, 3, 7}, 25), g = rand({2, 3, 7}, 26);
  for (bool with_residual : {false, true}) {
    // Fused.
    Var x(x0, true), r(r0, true);
    Var y = with_residual ? lin.forward_add(x, r) : lin.forward(x);
    y.backward(g);
    Tensor dA = lin.lora_a().grad(), dB = lin.lora_b().grad();
    la.zero_grad();
    lb.zero_grad();
    // Unfused: base = x W^T; low = scale((x A^T) B^T, alpha / r); y = base + low (+ r).
    Var x2(x0, true), r2(r0, true);
    Var A(lin.lora_a().data(), true), B(lin.lora_b().data(), true);
    Var xf = ag::reshape(x2, {6, 10});
    Var base = ag::matmul(xf, Var(lin.weight().data()), false, true);
    Var low = ag::scale(ag::matmul(ag::matmul(xf, A, false, true), B, false, true), 3.0);
    Var ref = ag::reshape(ag::add(base, low), {2, 3, 7});
    if (with_residual) ref = ag::add(r2, ref);
    ref.backward(g);
    const char* what = with_residual ? "forward_add" : "forward";
    EXPECT_LE(rel_err(y.data(), ref.data()), kTol) << what;
    EXPECT_LE(rel_err(x.grad(), x2.grad()), kTol) << what;
    EXPECT_LE(rel_err(dA, A.grad()), kTol) << what;
    EXPECT_LE(rel_err(dB, B.grad()), kTol) << what;
    if (with_residual) EXPECT_LE(rel_err(r.grad(), r2.grad()), kTol);
    EXPECT_FALSE(lin.weight().grad().defined()) << "the frozen base got a gradient";
  }
}

TEST(FusedResidual, DecoderLayerMatchesUnfusedComposition) {
  // The probed forward keeps the separate adds (a probe sees each module's own output), so
  // it is the unfused reference of the same layer. LoRA on q, k, v and o: o_proj then fuses
  // both its LoRA term and the residual.
  LlamaConfig c;
  c.vocab_size = 11;
  c.hidden_size = 12;
  c.intermediate_size = 20;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 3;
  c.num_key_value_heads = 1;
  c.head_dim = 4;
  LoraSpec spec{LoraConfig{2, 5.0, 0.0}, {true, true, true, true}, 31};
  LlamaForCausalLM m(c, {}, spec, DType::F64);
  m.init_random(32, 0.3);
  uint64_t seed = 40;
  for (auto& [name, v] : m.named_parameters()) {
    if (is_lora_parameter(name)) v.set_data(rand(v.shape(), ++seed));
    v.set_requires_grad(true);
  }
  const DecoderLayer* layer = m.model->layers[0];
  const ops::RopeTable& rope = m.rope(5, Device::cpu());
  Tensor x0 = rand({2, 5, 12}, 50), g = rand({2, 5, 12}, 51);
  auto run = [&](bool probed) {
    for (auto& q : m.named_parameters()) q.second.zero_grad();
    Var x(x0, true);
    int probes = 0;
    const ModuleProbe probe = [&](const std::string&, const Var&) { ++probes; };
    Var y = layer->forward(x, rope, true, false, probed ? &probe : nullptr);
    EXPECT_EQ(probes, probed ? 2 : 0);
    y.backward(g);
    std::vector<Tensor> out{y.data(), x.grad()};
    for (auto& q : m.named_parameters())
      if (q.first.find("layers.0.") != std::string::npos) out.push_back(q.second.grad());
    return out;
  };
  const std::vector<Tensor> fused = run(false), unfused = run(true);
  ASSERT_EQ(fused.size(), unfused.size());
  // Every parameter of the layer (LoRA A/B, norms, MLP, frozen bases get none) plus y and dx.
  for (size_t i = 0; i < fused.size(); ++i) {
    ASSERT_EQ(fused[i].defined(), unfused[i].defined()) << i;
    if (fused[i].defined()) EXPECT_LE(rel_err(fused[i], unfused[i]), kTol) << "tensor " << i;
  }
}
