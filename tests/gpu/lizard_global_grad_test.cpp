// The mma.sync global-branch gradient kernel (cuda/lizard_global_grad_mma.cu, the default)
// against the wmma kernel it replaces (LIZARD_GRAD_KERNEL=wmma) and against the CPU chunked
// reference (itself proven equal to the f64 oracle in tests/lizard), through the public op.
// Both kernels take the same operands (bf16 hi + lo pairs where the wmma kernel has them) and
// differ in the order of their f32 sums only; E and P are rounded to bf16 from f32 values that
// may differ in the last bits, so an element may round the other way (2^-9 of that element).
#include <cmath>
#include <cstdlib>
#include <string>
#include <tuple>

#include "lizard/core/error.h"
#include "lizard/cuda/lizard_attention.h"
#include "lizard/ops/lizard_attention.h"
#include "lizard/ops/lizard_attention_chunked.h"
#include "lizard_gpu_case.h"

namespace lizard::test {
namespace {

/// Training forward and backward on the GPU with the gradient kernel LIZARD_GRAD_KERNEL=`kernel`
/// selects (null: the default); the gradients on the CPU in f64.
ops::LizardGrads run_grads(const LizardCase& c, const Tensor& dy, const char* kernel) {
  ScopedEnv env("LIZARD_GRAD_KERNEL", kernel);
  const auto [in, p] = to_gpu(c);
  ops::LizardSaved saved;
  ops::lizard_attention_forward(c.cfg, in, p, &saved);
  ops::LizardGrads g = ops::lizard_attention_backward(c.cfg, in, p, saved, dy.to(Device::cuda(0), DType::BF16));
  LizardCase host = c;
  for (auto& [name, slot] : grad_slots(host, g))
    if (slot.second->defined()) *slot.second = slot.second->to(Device::cpu(), DType::F64);
  return g;
}

struct Shape {
  int64_t T, Hkv, D, F;
  double bias;  // gate bias: -13.8 gives gates near 1e-6, 13.8 near 1 - 1e-6
  bool convex;
  bool per_head = false;  // one gate per head (the db rows and bl of head h, not of head 0)
};

std::string describe(const Shape& sh) {
  return "T " + std::to_string(sh.T) + " Hkv " + std::to_string(sh.Hkv) + " D " + std::to_string(sh.D) +
         " F " + std::to_string(sh.F) + " bias " + std::to_string(sh.bias) + (sh.convex ? " convex" : " sum") +
         (sh.per_head ? " per-head gate" : "");
}

void expect_matches(const Shape& sh) {
  ops::LizardConfig cfg;
  cfg.feature_dim = sh.F;
  cfg.window = 40;
  cfg.sinks = 4;
  cfg.combine = sh.convex ? ops::Combine::Convex : ops::Combine::Sum;
  if (sh.per_head) cfg.gate = ops::GateMode::PerHead;
  // H = 4: GQA group 1 (Hkv 4) or 4 (Hkv 1); scores moderate (q, k in [-0.5, 0.5))
  LizardCase c = make_case(cfg, 2, sh.T, 4, sh.Hkv, sh.D, 8, 500 + sh.T + sh.D + sh.F, DType::F64, 0.5, sh.bias);
  for (Tensor* t : {&c.in.q, &c.in.k, &c.in.v, &c.in.x}) *t = t->to(DType::BF16).to(DType::F64);
  const std::string what = describe(sh);
#ifdef LIZARD_WITH_CUDA  // CPU-only builds skip before this; the path query exists with CUDA only
  {
    const auto [in, p] = to_gpu(c);
    ASSERT_TRUE(cuda::lizard_attention_kernel_path(cfg, in, p, true).global_tc)
        << what << ": the case must take the tensor-core global branch";
  }
#endif
  const Tensor dy = rand(c.in.q.shape(), 77, DType::F64).to(DType::BF16).to(DType::F64);
  const ops::LizardGrads mma = run_grads(c, dy, nullptr), old = run_grads(c, dy, "wmma");
  const ops::LizardGrads mma8 = run_grads(c, dy, "mma8");    // the 8-warp shape, kept for A/B
  const ops::LizardGrads mma16 = run_grads(c, dy, "mma16");  // one CTA of 16 warps a chunk
  const ops::LizardGrads ref = ops::lizard_chunked_backward(c.cfg, c.in, c.p, dy);
  LizardCase c1 = c, c2 = c, c3 = c, c4 = c, c5 = c;
  ops::LizardGrads gm = mma, go = old, gr = ref, g8 = mma8, g16 = mma16;
  auto sm = grad_slots(c1, gm), so = grad_slots(c2, go), sr = grad_slots(c3, gr), s8 = grad_slots(c4, g8);
  auto s16 = grad_slots(c5, g16);
  for (size_t i = 0; i < sm.size(); ++i) {
    const std::string name = sm[i].first;
    const Tensor& got = *sm[i].second.second;
    // Against the wmma kernel. dq, dk, dv, dx, dwq, dwk: the dphi and dv of the two kernels
    // are sums of the same bf16 products in another order (f32 rounding, about 1e-6); E and
    // P are bf16 roundings of f32 values that can differ in their last bits, so an element
    // may round the other way (2^-8 of one term of a C-term sum, for about 1 element in
    // 1e3): 1e-5 at most expected, 3e-4 allowed. Either kernel's error against the oracle is
    // a few 1e-3 (bf16 E, P), so this is the tighter check: a split product that lost its lo
    // half (2^-9 / sqrt(3), about 1e-3 per operand) or an index/fragment error (O(1) in whole
    // rows) shows above 3e-4. The gate gradients (w_g, b_g): f32 sums of the same
    // 2^-16-accurate pair terms in another order (about 1e-4 against the oracle for either
    // kernel, the same error in both), 2e-4 between the two; alpha, tau come from the window
    // kernels only (f32 atomics in another order): 2e-4 too.
    EXPECT_LE(rel_err(got, *so[i].second.second), name == "w_g" || name == "b_g" ? 2e-4 : 3e-4)
        << what << " d" << name << " vs wmma";
    // The 8-warp mma kernel (LIZARD_GRAD_KERNEL=mma8): the same operands again, sums in
    // another order: the same bounds against the wmma kernel.
    EXPECT_LE(rel_err(*s8[i].second.second, *so[i].second.second), name == "w_g" || name == "b_g" ? 2e-4 : 3e-4)
        << what << " d" << name << " (mma8) vs wmma";
    EXPECT_LE(rel_err(*s16[i].second.second, *so[i].second.second), name == "w_g" || name == "b_g" ? 2e-4 : 3e-4)
        << what << " d" << name << " (mma16) vs wmma";
    // Against the f64 chunked reference: the 1e-2 of tests/gpu/lizard_attention_test.cpp.
    EXPECT_LE(rel_err(got, *sr[i].second.second), 1e-2) << what << " d" << name << " vs reference";
  }
}

// Awkward lengths around the 32-token chunk (1, 7, 31, 32, 33, 65: partial last chunks and a
// single token; 1000: many chunks, the state terms dominate), GQA 1 and 4 (dv atomics of the
// group), D 64 and 128 (one and two warps per 16 dv columns), 2F = 32 (by default two CTAs of
// 16 features: the smallest split), 64, 96, 128, 256 (1, 2 and
// 4 feature n-tiles per warp at mma8, at 96 the last two own none; 1, 1, 1, 2 at mma16, at 64
// and 96 the last 8 and 4 own none; by default two CTAs of 32, 48, 64, 128 features and 8
// warps: 1, 1, 1, 2 n-tiles, the last 4, 2, 0, 0 warps own none), gates near 0, 1/2 and near 1,
// sum and convex combine, shared and per-head gates.
TEST(LizardGlobalGradGpu, MmaKernelMatchesWmmaKernelAndReference) {
  LZ_REQUIRE_GPU();
  if (f32_forced()) GTEST_SKIP() << "LIZARD_ATTENTION_KERNELS=f32 forces the f32 kernels";
  for (Shape sh : {Shape{1, 4, 128, 128, 0.5, false}, Shape{7, 1, 64, 32, 0.5, true},
                   Shape{31, 4, 128, 64, -13.8, false}, Shape{32, 1, 128, 128, 13.8, true},
                   Shape{33, 4, 64, 48, 0.5, false, true}, Shape{65, 1, 128, 128, -13.8, true},
                   Shape{65, 4, 64, 128, 13.8, false}, Shape{1000, 1, 128, 128, 0.5, false},
                   Shape{1000, 4, 64, 64, 13.8, true, true},
                   // 2F = 32, the smallest split of the two-CTA kernel (16 features per CTA)
                   Shape{40, 4, 64, 16, 13.8, true, true}})
    expect_matches(sh);
}

// An unknown value of the switch is an input error naming the variable (read at a shape the
// mma kernel covers, so this also shows the selection is consulted there).
TEST(LizardGlobalGradGpu, UnknownKernelSwitchIsAnError) {
  LZ_REQUIRE_GPU();
  if (f32_forced()) GTEST_SKIP() << "LIZARD_ATTENTION_KERNELS=f32 forces the f32 kernels";
  ops::LizardConfig cfg;
  cfg.feature_dim = 32;
  cfg.window = 16;
  LizardCase c = make_case(cfg, 1, 33, 2, 1, 64, 8, 5);
  const Tensor dy = rand(c.in.q.shape(), 6, DType::F64);
  expect_unknown_switch_rejected("LIZARD_GRAD_KERNEL", [&](const char* v) { run_grads(c, dy, v); });
}

}  // namespace
}  // namespace lizard::test
