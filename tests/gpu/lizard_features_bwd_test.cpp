// The split feature-map backward (cuda/lizard_features_bwd_mma.cu: du and dx = du W^T in one
// kernel, dW = x^T du in a second) against the fused kernel it replaces
// (LIZARD_FEATURES_BWD_KERNEL=old, features_bwd_mma_kernel in cuda/lizard_features_tc.cu),
// through the public op, at the shapes where the new kernels' tiling branches: partial
// 16-token units (T 1, 7, 65, 333) and 64-token dW tiles that cross batch rows, GQA groups 1
// and 4 (dk by atomics over the group's heads), F 16, 48, 128 (1, 3, 8 k-steps of dx; dW tile
// counts that 8 warps do not divide), D 64 and 128 (one or two 64-column halves of dx), both
// maps, and grids where warps take several units (the x prefetch) and CTAs several dW tiles
// (the double buffer). Both kernels take the same operands with the same products, the map's
// exponentials aside (ex2.approx in the split kernel, expf in the fused one); the tolerances
// below follow from that.
#include <cmath>
#include <string>
#include <tuple>

#include "lizard/core/error.h"
#include "lizard/cuda/lizard_attention.h"
#include "lizard/ops/lizard_attention.h"
#include "lizard_gpu_case.h"

namespace lizard::test {
namespace {

using Shape = FeatureShape;

LizardCase features_case(const Shape& sh) { return feature_case(sh, 1300 + sh.T + sh.D + sh.F); }

/// Training forward and backward on the GPU with LIZARD_FEATURES_BWD_KERNEL=`kernel` (null:
/// the default, the split kernels).
ops::LizardGrads grads_with(const LizardCase& c, const Tensor& dy, const char* kernel) {
  ScopedEnv env("LIZARD_FEATURES_BWD_KERNEL", kernel);
  return gpu_grads(c, dy);
}

void expect_split_matches_fused(const Shape& sh) {
  const LizardCase c = features_case(sh);
  const std::string what = sh.str();
#ifdef LIZARD_WITH_CUDA  // CPU-only builds skip before this; the path query exists with CUDA only
  {
    const auto [in, p] = to_gpu(c);
    ASSERT_TRUE(cuda::lizard_attention_kernel_path(c.cfg, in, p, true).global_tc)
        << what << ": the case must take the tensor-core feature kernels";
  }
#endif
  const Tensor dy = rand(c.in.q.shape(), 91, DType::F64);
  const ops::LizardGrads now = grads_with(c, dy, nullptr), old = grads_with(c, dy, "old");
  auto f64 = [](const Tensor& t) { return t.to(Device::cpu(), DType::F64); };
  auto err = [&](const Tensor& a, const Tensor& b) { return rel_err(f64(a), f64(b)); };
  // dwq, dwk (f32): the bf16 products x du in another f32 order over the tokens (about 1e-7
  // norm-wise), and du is the same function rounded to bf16 at the same place, but its f32
  // value comes from ex2.approx on u log2e - m log2e (the split kernel) instead of expf (the
  // fused one): about 5e-7 relative, which flips the bf16 rounding of a fraction ~2e-4 of the
  // elements by one bf16 ulp (2^-8 of the element). Norm-wise that is ~5e-5 at the larger
  // shapes, and at the smallest ones (T 1 and 7: ~500-1000 elements of du) a single flip moves
  // dW by up to ~2e-4. 1e-3 allows it; a 16-token unit lost or counted twice moves dW by a few
  // % at these token counts, a wrong tile or head by O(1).
  EXPECT_LE(err(now.dwq, old.dwq), 1e-3) << what << " dwq";
  EXPECT_LE(err(now.dwk, old.dwk), 1e-3) << what << " dwk";
  // dq, dk, dx (bf16 outputs): dq and dk take du W^T by the same mma sequence (dk: atomics
  // over the GQA heads in another order), so they differ by the du flips above (a single one
  // at T 1: ~1e-4) and then by rounding to bf16 (2^-8 on the rare elements near a boundary).
  // dv, dw_g, db_g do not depend on the feature backward: the same check finds a stray
  // write. 1e-3 is far below a lost or wrong row (at least 1 / sqrt(rows), 2e-2 here).
  for (auto [name, got, ref] : {std::tuple{"dq", &now.dq, &old.dq}, {"dk", &now.dk, &old.dk},
                                {"dx", &now.dx, &old.dx}, {"dv", &now.dv, &old.dv},
                                {"dw_g", &now.dw_g, &old.dw_g}, {"db_g", &now.db_g, &old.db_g}})
    EXPECT_LE(err(*got, *ref), 1e-3) << what << " " << name;
}

TEST(LizardFeaturesBwdGpu, SplitKernelsMatchFusedKernel) {
  LZ_REQUIRE_GPU();
  if (f32_forced()) GTEST_SKIP() << "LIZARD_ATTENTION_KERNELS=f32 forces the f32 kernels";
  for (Shape sh : {Shape{2, 1, 4, 1, 128, 128, false}, Shape{2, 7, 4, 4, 64, 16, true},
                   Shape{1, 65, 4, 1, 128, 48, false}, Shape{1, 65, 4, 4, 128, 16, true},
                   Shape{2, 333, 4, 4, 64, 128, true}, Shape{2, 333, 8, 2, 128, 48, false}})
    expect_split_matches_fused(sh);
}

// H = 64 on a 132-SM card: the du/dx kernel runs 2 CTAs (16 warps) per head, so a warp takes
// 3 (T 700) or 8 (B 2, T 1000) units and the x prefetch alternates its buffers; the dW kernel
// runs 4 CTAs per head over 11 or 32 tiles (3 and 8 per CTA, the last one partial).
TEST(LizardFeaturesBwdGpu, SplitKernelsMatchFusedKernelOverManyUnits) {
  LZ_REQUIRE_GPU();
  if (f32_forced()) GTEST_SKIP() << "LIZARD_ATTENTION_KERNELS=f32 forces the f32 kernels";
  for (Shape sh : {Shape{1, 700, 64, 8, 128, 128, true}, Shape{2, 1000, 64, 16, 64, 64, false}})
    expect_split_matches_fused(sh);
}

// The switch is read on the path: a value other than new / old is an error naming it.
TEST(LizardFeaturesBwdGpu, UnknownKernelSwitchIsAnError) {
  LZ_REQUIRE_GPU();
  if (f32_forced()) GTEST_SKIP() << "LIZARD_ATTENTION_KERNELS=f32 forces the f32 kernels";
  const LizardCase c = features_case(Shape{1, 20, 2, 1, 64, 32, false});
  const Tensor dy = rand(c.in.q.shape(), 5, DType::F64);
  expect_unknown_switch_rejected("LIZARD_FEATURES_BWD_KERNEL", [&](const char* v) { grads_with(c, dy, v); });
}

}  // namespace
}  // namespace lizard::test
