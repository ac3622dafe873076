// The fused GEMM accumulates (LoRA up-projection, o_proj + residual, down_proj + residual)
// give the outputs and gradients of the unfused composition they replaced.
#include <gtest/gtest.h>

#include <map>

#include "lizard/autograd/functions.h"
#include "lizard/autograd/nn_functions.h"
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
  // The layer's forward (residual adds in o_proj/down_proj GEMMs, LoRA terms in the up-
  // projections, gradient sums folded into dx GEMMs) against the same layer written out with
  // plain matmul/scale/add ops. LoRA on q, k, v and o: o_proj fuses its LoRA term and the
  // residual. The probed forward (separate residual adds) must agree too.
  LlamaConfig c;
  c.vocab_size = 11;
  c.hidden_size = 12;
  c.intermediate_size = 20;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 3;
  c.num_key_value_heads = 1;
  c.head_dim = 4;
  const LoraConfig lc{2, 5.0, 0.0};
  LoraSpec spec{lc, {true, true, true, true}, 31};
  LlamaForCausalLM m(c, {}, spec, DType::F64);
  m.init_random(32, 0.3);
  uint64_t seed = 40;
  std::vector<std::string> names;
  for (auto& [name, v] : m.named_parameters()) {
    if (is_lora_parameter(name)) v.set_data(rand(v.shape(), ++seed));
    v.set_requires_grad(true);  // frozen LoRA bases too: every weight-gradient GEMM is checked
    if (name.find("layers.0.") != std::string::npos) names.push_back(name);
  }
  const DecoderLayer* layer = m.model->layers[0];
  const int64_t B = 2, T = 5, d = 12;
  const ops::RopeTable& rope = m.rope(T, Device::cpu());
  Tensor x0 = rand({B, T, d}, 50), g = rand({B, T, d}, 51);
  // Independent leaves for the reference, holding the layer's values.
  std::map<std::string, Var> ref_params;
  for (const auto& n : names) ref_params[n] = Var(m.parameter(n).data(), m.parameter(n).requires_grad());
  auto P = [&](const std::string& n) { return ref_params.at("model.layers.0." + n); };
  auto lin = [&](const Var& x2, const std::string& n, bool lora) {
    Var y = ag::matmul(x2, P(n + ".weight"), false, true);
    if (!lora) return y;
    Var low = ag::matmul(ag::matmul(x2, P(n + ".lora_A.weight"), false, true),
                         P(n + ".lora_B.weight"), false, true);
    return ag::add(y, ag::scale(low, lc.alpha / static_cast<double>(lc.r)));
  };
  Var xr(x0, true);
  Var n1 = ag::reshape(ag::rmsnorm(xr, P("input_layernorm.weight"), c.rms_norm_eps), {B * T, d});
  Var q = ag::rope(ag::reshape(lin(n1, "self_attn.q_proj", true), {B, T, 3, 4}), rope);
  Var k = ag::rope(ag::reshape(lin(n1, "self_attn.k_proj", true), {B, T, 1, 4}), rope);
  Var v = ag::reshape(lin(n1, "self_attn.v_proj", true), {B, T, 1, 4});
  Var o = ag::causal_attention(q, k, v, 0.5).o;  // 1 / sqrt(head_dim)
  Var h = ag::add(xr, ag::reshape(lin(ag::reshape(o, {B * T, d}), "self_attn.o_proj", true), {B, T, d}));
  Var n2 = ag::reshape(ag::rmsnorm(h, P("post_attention_layernorm.weight"), c.rms_norm_eps), {B * T, d});
  Var mm = lin(ag::swiglu(lin(n2, "mlp.gate_proj", false), lin(n2, "mlp.up_proj", false)),
               "mlp.down_proj", false);
  Var yr = ag::add(h, ag::reshape(mm, {B, T, d}));
  yr.backward(g);

  for (bool probed : {false, true}) {
    for (auto& q2 : m.named_parameters()) q2.second.zero_grad();
    Var x(x0, true);
    int probes = 0;
    const ModuleProbe probe = [&](const std::string&, const Var&) { ++probes; };
    Var y = layer->forward(x, rope, true, false, probed ? &probe : nullptr);
    EXPECT_EQ(probes, probed ? 2 : 0);
    y.backward(g);
    const char* what = probed ? "probed" : "fused";
    EXPECT_LE(rel_err(y.data(), yr.data()), kTol) << what;
    EXPECT_LE(rel_err(x.grad(), xr.grad()), kTol) << what;
    int compared = 0;
    for (const auto& n : names) {
      const Tensor& got = m.parameter(n).grad();
      ASSERT_EQ(got.defined(), ref_params[n].grad().defined()) << n;
      if (!got.defined()) continue;
      EXPECT_LE(rel_err(got, ref_params[n].grad()), kTol) << what << " " << n;
      ++compared;
    }
    EXPECT_EQ(compared, 4 * 3 + 3 + 2) << "q/k/v/o with A and B, gate/up/down, two norms";
  }
}
