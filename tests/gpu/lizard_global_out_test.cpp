// The mma.sync output kernel of the global branch (cuda/lizard_global_out_mma.cu, the default)
// against the wmma kernel it replaces (LIZARD_OUT_KERNEL=wmma), through the public op. Both
// read the same states (the state kernel is shared) and round the same operands at the same
// points (P f32; P~, phi_q e^{bl_t}, S as bf16 or split pairs); only the f32 accumulation
// order inside the mma's differs. So numden agrees to f32 rounding, and y (bf16) up to the
// rare element whose f32 value sits on a rounding boundary.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

#include "lizard/core/error.h"
#include "lizard/cuda/lizard_attention.h"
#include "lizard/ops/lizard_attention.h"
#include "lizard_gpu_case.h"

namespace lizard::test {
namespace {

struct OutRun {
  Tensor y, y_inf;
  ops::LizardSaved saved;
};

/// Training forward (saved: the split kernel) and inference forward (the bf16 kernel) with the
/// output kernel LIZARD_OUT_KERNEL=`kernel` selects (null: the default).
OutRun run_out(const LizardCase& c, const char* kernel) {
  ScopedEnv env("LIZARD_OUT_KERNEL", kernel);
  const auto [in, p] = to_gpu(c);
  OutRun r;
  r.y = ops::lizard_attention_forward(c.cfg, in, p, &r.saved);
  r.y_inf = ops::lizard_attention_forward(c.cfg, in, p, nullptr);
  return r;
}

Tensor f64_cpu(const Tensor& t) { return t.to(Device::cpu(), DType::F64); }

struct Shape {
  int64_t B, T, H, Hkv, D, F;
  double gate_bias;  // b_g around this (+-0.5): -12 gives gates near 6e-6, +12 near 1 - 6e-6
};

void expect_matches_wmma(const Shape& sh) {
  ops::LizardConfig cfg;
  cfg.feature_dim = sh.F;
  cfg.window = 40;
  cfg.sinks = 4;
  LizardCase c = make_case(cfg, sh.B, sh.T, sh.H, sh.Hkv, sh.D, 8, 300 + sh.T + sh.D + sh.F,
                           DType::F64, 0.5, sh.gate_bias);
  for (Tensor* t : {&c.in.q, &c.in.k, &c.in.v, &c.in.x}) *t = t->to(DType::BF16).to(DType::F64);
  const std::string what = "B " + std::to_string(sh.B) + " T " + std::to_string(sh.T) + " H " +
                           std::to_string(sh.H) + " Hkv " + std::to_string(sh.Hkv) + " D " +
                           std::to_string(sh.D) + " F " + std::to_string(sh.F) + " gate bias " +
                           std::to_string(sh.gate_bias);
#ifdef LIZARD_WITH_CUDA  // CPU-only builds skip before this; the path query exists with CUDA only
  {
    const auto [in, p] = to_gpu(c);
    ASSERT_TRUE(cuda::lizard_attention_kernel_path(cfg, in, p, true).global_tc)
        << what << ": the case must take the tensor-core global branch";
  }
#endif
  const OutRun mma = run_out(c, nullptr), old = run_out(c, "wmma");
  // the states come from the one state kernel both runs share: equal bits, or the
  // comparison below would not be of the output kernels alone
  EXPECT_EQ(rel_err(f64_cpu(mma.saved.states), f64_cpu(old.saved.states)), 0.0) << what << " states";
  // numden (split): both are f32-accurate functions of the same rounded operands, summed in
  // different orders over up to 2F + 32 = 288 products: a few 2^-24 sqrt(288) ~ 1e-6
  // relative; 1e-5 norm-wise still catches one wrong element among the ~10^6 (an index, a
  // missed lo half: 2^-9 relative on a row, or a race: O(1)), since one element alone is
  // about 1e-3 of the norm here.
  const Tensor nm = f64_cpu(mma.saved.numden), no = f64_cpu(old.saved.numden);
  EXPECT_LE(rel_err(nm, no), 1e-5) << what << " numden";
  // den (the last column) elementwise: a sum of positive weights, no cancellation, so each
  // element keeps the 1e-6 relative agreement; 1e-5 leaves room
  {
    const auto vm = nm.to_vector(), vo = no.to_vector();
    const int64_t D1 = sh.D + 1;
    double worst = 0;
    for (size_t i = size_t(sh.D); i < vm.size(); i += size_t(D1))
      worst = std::max(worst, std::abs(vm[i] - vo[i]) / std::max(std::abs(vo[i]), 1e-30));
    EXPECT_LE(worst, 1e-5) << what << " den (elementwise relative)";
  }
  // y (bf16, training and inference): an element differs only where the two f32 values
  // straddle a bf16 rounding boundary, by one ulp (2^-8 relative); with numden agreeing to
  // 1e-6 that is a small fraction of the elements (inference numden agrees as closely: the
  // same bf16 operands, another sum order), so norm-wise far below 1e-3, while one wrong row
  // of ~B T H rows already costs more than 1e-3 at these sizes.
  EXPECT_LE(rel_err(f64_cpu(mma.y), f64_cpu(old.y)), 1e-3) << what << " y (training)";
  EXPECT_LE(rel_err(f64_cpu(mma.y_inf), f64_cpu(old.y_inf)), 1e-3) << what << " y (inference)";
}

// Awkward lengths (1, 7, 31, 33, 65, 97: partial last chunks, and 32: exactly one), GQA groups
// 1 and 4, D 32, 64, 128 (2, 4, 8 warps; 8 splits P's k range over two warps), 2F of 32, 96,
// 128, 192, 256 (1, 3, 4, 6, 8 state stages of 32 rows: fewer than, as many as and more than
// the 2 (inference) or 3 (training) stage buffers, so every wrap of the rotation; D = 32 with
// 6 stages: 2 warps, the output staging wider than a stage), gates near 0 (every chunk
// forgets almost all: exponents near -12 per token) and near 1 (the state sums ~T).
TEST(LizardGlobalOutGpu, MmaKernelMatchesWmmaKernel) {
  LZ_REQUIRE_GPU();
  if (f32_forced()) GTEST_SKIP() << "LIZARD_ATTENTION_KERNELS=f32 forces the f32 kernels";
  for (Shape sh : {Shape{1, 1, 4, 4, 64, 128, 0.5}, Shape{2, 7, 4, 1, 128, 128, 0.5},
                   Shape{1, 31, 4, 4, 128, 48, -12.0}, Shape{2, 32, 4, 1, 64, 64, 12.0},
                   Shape{1, 33, 8, 2, 128, 128, 12.0}, Shape{2, 65, 4, 4, 32, 16, 0.5},
                   Shape{1, 1000, 4, 1, 128, 128, 12.0}, Shape{2, 1000, 8, 2, 64, 128, -12.0},
                   Shape{1, 1000, 4, 4, 128, 64, 0.5}, Shape{2, 97, 4, 2, 32, 96, -12.0}})
    expect_matches_wmma(sh);
}

// An unknown value of the switch is an input error naming the variable, not a silent default.
TEST(LizardGlobalOutGpu, UnknownKernelSwitchIsAnError) {
  LZ_REQUIRE_GPU();
  if (f32_forced()) GTEST_SKIP() << "LIZARD_ATTENTION_KERNELS=f32 forces the f32 kernels";
  ops::LizardConfig cfg;
  cfg.feature_dim = 16;
  cfg.window = 16;
  LizardCase c = make_case(cfg, 1, 33, 2, 1, 32, 8, 5);
  expect_unknown_switch_rejected("LIZARD_OUT_KERNEL", [&](const char* v) { run_out(c, v); });
}

}  // namespace
}  // namespace lizard::test
