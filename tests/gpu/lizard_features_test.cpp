// The mma feature-map kernels (cuda/lizard_features_tc.cu, the tensor-core path's only
// feature kernels) against the f32 kernels (LIZARD_ATTENTION_KERNELS=f32: f32 phi from the f32
// weights, every stage on CUDA cores), through the public op, at the shapes where the mma
// kernels' tiling branches (partial units and tiles, GQA, D != F, widths that are not powers
// of two, persistent loops over many units). The tensor-core path takes phi as a bf16 hi + lo
// pair (about 2^-17 relative) from W as a pair, so every quantity that phi feeds with split
// products is f32-accurate there; the tolerances below are set per quantity from that.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

#include "lizard/cuda/lizard_attention.h"
#include "lizard/ops/lizard_attention.h"
#include "lizard_gpu_case.h"

namespace lizard::test {
namespace {

/// The passes with the kernels LIZARD_ATTENTION_KERNELS=`kernels` selects (null: the default,
/// the tensor cores).
GpuPasses run_features(const LizardCase& c, const Tensor& dy, const char* kernels) {
  return run_passes(c, dy, "LIZARD_ATTENTION_KERNELS", kernels);
}

using Shape = FeatureShape;

/// Training forward, backward and inference forward of one case on the tensor cores (the mma
/// feature kernels) and on the f32 kernels, compared per quantity.
void expect_matches_f32(const Shape& sh) {
  const LizardCase c = feature_case(sh, 900 + sh.T + sh.D);
  const std::string what = sh.str();
#ifdef LIZARD_WITH_CUDA  // CPU-only builds skip before this; the path query exists with CUDA only
  {
    const auto [in, p] = to_gpu(c);
    ASSERT_TRUE(cuda::lizard_attention_kernel_path(c.cfg, in, p, true).global_tc)
        << what << ": the case must take the tensor-core feature kernels";
  }
#endif
  const Tensor dy = rand(c.in.q.shape(), 77, DType::F64);
  const GpuPasses tc = run_features(c, dy, nullptr), f32 = run_features(c, dy, "f32");
  auto f64 = [](const Tensor& t) { return t.to(Device::cpu(), DType::F64); };
  auto err = [&](const Tensor& a, const Tensor& b) { return rel_err(f64(a), f64(b)); };
  // states and numden: phi as a hi + lo pair with split products, about 1e-5 to 1e-4 from the
  // f32 path; phi rounded to bf16 alone (a lost or wrong phi_lo) gives about 1e-3, and a wrong
  // element of phi O(1), so 5e-4 tells them apart (as TensorCoreTrainingForwardSavesAccurate-
  // Statistics in lizard_attention_test.cpp, at one shape).
  EXPECT_LE(err(tc.saved.states, f32.saved.states), 5e-4) << what << " states";
  EXPECT_LE(err(tc.saved.numden, f32.saved.numden), 5e-4) << what << " numden";
  // wstats: the window branch does not read phi, and both paths score the same bf16 q, k
  // exactly (no window RoPE) and sum the f32 weights: about 1e-6 expected, 5e-5 allowed (a
  // bf16-rounded denominator would be off by 2^-9 / sqrt(40) = 3e-4).
  EXPECT_LE(err(tc.saved.wstats, f32.saved.wstats), 5e-5) << what << " wstats";
  // y (training): f32-accurate values (about 1e-5) rounded to bf16 on both paths: they round
  // differently only where the values straddle a rounding boundary, a few 1e-4 norm-wise;
  // 4e-3 is two bf16 roundings everywhere.
  EXPECT_LE(err(tc.y, f32.y), 4e-3) << what << " y (training)";
  // y (inference): bf16 phi and bf16 operands on the tensor cores (2^-9 per weight): the
  // oracle tests' 1e-2.
  EXPECT_LE(err(tc.y_inf, f32.y_inf), 1e-2) << what << " y (inference)";
  // Gradients: dphi, hence dq, dk, dx, dwq, dwk, and dv take bf16 E, P and decayed-phi
  // operands (a few 1e-3 relative, cuda/lizard_attention_tc.cu): the oracle tests' 1e-2, which
  // an indexing error or a race in the feature backward (O(1) in the rows it hits) exceeds.
  // The gate gradients are f32 sums of 2^-16-accurate pair terms (about 1e-4 expected) but
  // can be ill-conditioned (sums whose rows cancel); 1e-2 still catches phi without its lo
  // half, which moved db_g by 0.042 (issue #5).
  for (auto [name, got, ref] : {std::tuple{"dq", &tc.g.dq, &f32.g.dq}, {"dk", &tc.g.dk, &f32.g.dk},
                                {"dv", &tc.g.dv, &f32.g.dv}, {"dx", &tc.g.dx, &f32.g.dx},
                                {"dwq", &tc.g.dwq, &f32.g.dwq}, {"dwk", &tc.g.dwk, &f32.g.dwk},
                                {"dw_g", &tc.g.dw_g, &f32.g.dw_g}, {"db_g", &tc.g.db_g, &f32.g.db_g}})
    EXPECT_LE(err(*got, *ref), 1e-2) << what << " " << name;
}

// Awkward lengths (1, 7, 65, 333: partial 16-token units and partial 128-token tiles), GQA
// groups 1, 2 and 4, D != F and widths that are not powers of two (48: 6 n-tiles, 3 k-steps,
// 9 dW tiles over 8 warps), both maps. Small enough for racecheck.
TEST(LizardFeaturesGpu, MmaKernelsMatchF32Kernels) {
  LZ_REQUIRE_GPU();
  if (f32_forced()) GTEST_SKIP() << "LIZARD_ATTENTION_KERNELS=f32 forces the f32 kernels";
  for (Shape sh : {Shape{2, 1, 4, 2, 128, 128, false}, Shape{2, 65, 4, 1, 128, 128, true},
                   Shape{1, 7, 4, 4, 64, 32, false}, Shape{2, 300, 4, 2, 48, 48, true},
                   Shape{1, 333, 4, 2, 128, 128, true}})
    expect_matches_f32(sh);
}

// More units and tiles than the grid has warps and CTAs per head (H = 64 on a 132-SM card: the
// forward's 4 CTAs of a head take 44 and 126 units with 32 warps, the backward's 2 CTAs 3 and
// 8 tiles each), so the persistent loops, the reuse of the shared buffers across tiles and the
// dW accumulation over tiles all run.
TEST(LizardFeaturesGpu, MmaKernelsMatchF32KernelsOverManyTiles) {
  LZ_REQUIRE_GPU();
  if (f32_forced()) GTEST_SKIP() << "LIZARD_ATTENTION_KERNELS=f32 forces the f32 kernels";
  for (Shape sh : {Shape{1, 700, 64, 8, 32, 32, true}, Shape{2, 1000, 64, 8, 64, 64, false}})
    expect_matches_f32(sh);
}

}  // namespace
}  // namespace lizard::test
