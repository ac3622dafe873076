// The feature-map backward with no dx wanted (stage-1 distillation needs the feature maps' dW
// only, issue #11): cuda::lizard_features_backward (features_bwd_tc_launch) with dx undefined
// against the same call with dx in each form the attention backward passes (owned f32 rows;
// owned rows with the bf16 dx_out, the query call; atomic rows, the key call). Without dx the
// split kernel is another instantiation (features_du_dx_kernel<..., kDx = false>: no old dx
// loads, no du W^T mma, no dx stores) whose du must keep its bits, so dW must too; the fused
// kernel (LIZARD_FEATURES_BWD_KERNEL=old) accumulates into a scratch dx and must give the same
// dW. Awkward shapes: T 1, 65, 1000 (partial 16-token units, one or many dW tiles), GQA 1 and
// 4, D 64 and 128 (the k128 instantiations at D = F = 128), F 16, 48, 64, 128, both maps, u
// with and without the lo half of W.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "gpu_test_util.h"
#include "lizard/core/error.h"
#include "lizard/core/tensor.h"
#include "lizard/ops/lizard_config.h"
#include "test_util.h"
#ifdef LIZARD_WITH_CUDA
#include "lizard/cuda/lizard_features_bwd.h"
#endif

namespace lizard::test {
namespace {

#ifdef LIZARD_WITH_CUDA  // calls the launcher directly: it exists only in CUDA builds

struct NoDxCase {
  int64_t B, T, H, Hx, D, F;
  bool exp, wlo;
  std::string str() const {
    return "B " + std::to_string(B) + " T " + std::to_string(T) + " H " + std::to_string(H) + " Hx " +
           std::to_string(Hx) + " D " + std::to_string(D) + " F " + std::to_string(F) +
           (exp ? " exp" : " softmax") + (wlo ? " w hi+lo" : " w hi");
  }
};

struct Args {
  Tensor x, w_hi, w_lo, dphi;  // on the GPU
  Tensor dx0;                  // the old dx rows (CPU f32): every call starts from them
  ops::FeatureActivation act;
};

Args make_args(const NoDxCase& c, uint64_t seed) {
  const Device gpu = Device::cuda(0);
  Args a;
  a.x = rand({c.B, c.T, c.Hx, c.D}, seed, DType::F32).to(gpu, DType::BF16);
  // W ~ U(+-2/sqrt(D)): u = x W of order 1, so neither map is flat or one-hot
  const double s = 2.0 / std::sqrt(double(c.D));
  const Tensor w = rand({c.H, c.D, c.F}, seed + 1, DType::F32, -s, s);
  const Tensor hi = w.to(DType::BF16);
  a.w_hi = hi.to(gpu, DType::BF16);
  if (c.wlo) {  // lo = bf16(w - hi), as split_bf16_launch
    std::vector<double> lo = w.to_vector();
    const std::vector<double> hv = hi.to_vector();
    for (size_t i = 0; i < lo.size(); ++i) lo[i] -= hv[i];
    a.w_lo = Tensor::from_vector(lo, w.shape(), DType::BF16).to(gpu, DType::BF16);
  }
  a.dphi = rand({c.B, c.H, c.T, 2 * c.F}, seed + 2, DType::F32).to(gpu, DType::F32);
  a.dx0 = rand({c.B, c.T, c.Hx, c.D}, seed + 3, DType::F32);
  a.act = c.exp ? ops::FeatureActivation::Exp : ops::FeatureActivation::Softmax;
  return a;
}

enum class DxMode { None, Owned, OwnedBf16, Atomic };
const char* mode_name(DxMode m) {
  return m == DxMode::None ? "no dx" : m == DxMode::Owned ? "owned f32 dx" : m == DxMode::OwnedBf16 ? "dx_out" : "atomic dx";
}

/// dW (CPU f64, exact) of one call from a zeroed dw, with dx as `mode` asks (from dx0).
Tensor dw_of(const Args& a, DxMode mode) {
  const Device gpu = Device::cuda(0);
  const Tensor dx = mode == DxMode::None ? Tensor() : a.dx0.to(gpu, DType::F32);
  const Tensor dx_out = mode == DxMode::OwnedBf16 ? Tensor::empty(a.x.shape(), DType::BF16, gpu) : Tensor();
  const Tensor dw = Tensor::zeros(a.w_hi.shape(), DType::F32, gpu);
  cuda::lizard_features_backward(a.x, a.w_hi, a.w_lo, a.dphi, a.act, dx, mode == DxMode::Atomic, dx_out, dw);
  return dw.to(Device::cpu(), DType::F64);
}

/// Elements whose bits differ (f32 widened to f64 exactly; a sign of zero counts).
int64_t bits_differ(const Tensor& a, const Tensor& b) {
  const std::vector<double> va = a.to_vector(), vb = b.to_vector();
  EXPECT_EQ(va.size(), vb.size());
  int64_t n = 0;
  for (size_t i = 0; i < va.size() && i < vb.size(); ++i) n += std::memcmp(&va[i], &vb[i], sizeof(double)) != 0;
  return n;
}

/// Whether dW's f32 atomics across CTAs are deterministic for the case: each CTA adds its
/// partial once onto the zeroed dw, and two partials onto zero commute exactly (0 + a + b =
/// 0 + b + a), so at most two CTAs per head give the same bits in any order. The dW tiles
/// are 64 tokens of the B*T (split: features_dw_kernel) or 128 tokens of one batch row
/// (fused: features_bwd_mma_kernel); at most two tiles means at most two CTAs.
bool dw_deterministic(const NoDxCase& c, bool fused) {
  const int64_t tiles = fused ? c.B * ((c.T + 127) / 128) : (c.B * c.T + 63) / 64;
  return tiles <= 2;
}

void expect_dw_without_dx_unchanged(const NoDxCase& c) {
  const Args a = make_args(c, 5100 + uint64_t(c.T + c.D + c.F));
  Tensor none_split;
  for (const char* kernel : {static_cast<const char*>(nullptr), "old"}) {
    ScopedEnv env("LIZARD_FEATURES_BWD_KERNEL", kernel);
    const bool fused = kernel != nullptr;
    const std::string what = c.str() + (fused ? " fused kernel" : " split kernels");
    const Tensor none = dw_of(a, DxMode::None);
    if (!fused) none_split = none;
    // a dW that is zero would equal anything: the case must give a real gradient
    ASSERT_GT(max_abs_diff(none, Tensor::zeros(none.shape(), DType::F64)), 0.0) << what;
    for (DxMode mode : {DxMode::Owned, DxMode::OwnedBf16, DxMode::Atomic}) {
      const Tensor with = dw_of(a, mode);
      if (dw_deterministic(c, fused)) {
        // du is the same code in both instantiations (same operands, same f32 order), and so
        // is the dW kernel: bit for bit
        EXPECT_EQ(bits_differ(none, with), 0) << what << ": dW without dx vs with " << mode_name(mode);
      } else {
        // more CTAs per head (up to 32 here): their f32 partials reach dW by atomics in a
        // run-dependent order, so two runs of the same call differ by the f32 roundings of
        // those sums, ~sqrt(32) 2^-25 ~ 1e-7 norm-wise; 1e-6 keeps a margin, below what one
        // du element one bf16 ulp off moves dW here (2^-9 / sqrt(T F H) ~ 3e-6) and far below
        // a lost token or unit
        EXPECT_LE(rel_err(none, with), 1e-6) << what << ": dW without dx vs with " << mode_name(mode);
      }
    }
    if (fused) {
      // an independent computation of the same dW (the fused kernel: expf where the split
      // kernel takes ex2.approx, another f32 order over tokens): du's bf16 rounding flips on
      // ~2e-4 of its elements, ~5e-5 of dW norm-wise, up to ~2e-4 at T 1 (the bound of
      // lizard_features_bwd_test.cpp); a wrong unit, row or head is O(1e-2) or more
      EXPECT_LE(rel_err(none_split, none), 1e-3) << c.str() << ": split dW without dx vs the fused kernel's";
    }
  }
}

TEST(LizardFeaturesBwdNoDxGpu, WeightGradientWithoutDxEqualsTheFullCall) {
  LZ_REQUIRE_GPU();
  for (const NoDxCase& c : {NoDxCase{1, 1, 4, 4, 128, 128, true, true},
                            NoDxCase{2, 1, 4, 1, 64, 16, true, false},
                            NoDxCase{1, 65, 4, 1, 64, 48, false, true},
                            NoDxCase{1, 65, 8, 2, 128, 128, false, false},
                            NoDxCase{1, 1000, 4, 1, 128, 128, true, true},
                            NoDxCase{2, 1000, 4, 4, 64, 64, false, false}})
    expect_dw_without_dx_unchanged(c);
}

// The launcher's contract: dx_out only with dx (it is dx's sum), and some output wanted.
TEST(LizardFeaturesBwdNoDxGpu, NothingWantedOrDxOutWithoutDxIsAnError) {
  LZ_REQUIRE_GPU();
  const NoDxCase c{1, 20, 2, 1, 64, 32, false, true};
  const Args a = make_args(c, 77);
  const Device gpu = Device::cuda(0);
  auto expect_rejected = [&](const Tensor& dx_out, const Tensor& dw, const char* names) {
    try {
      cuda::lizard_features_backward(a.x, a.w_hi, a.w_lo, a.dphi, a.act, Tensor(), false, dx_out, dw);
      FAIL() << names << ": accepted";
    } catch (const InputError& err) {
      EXPECT_NE(std::string(err.what()).find(names), std::string::npos) << err.what();
    }
  };
  expect_rejected(Tensor(), Tensor(), "dx, dw");
  expect_rejected(Tensor::empty(a.x.shape(), DType::BF16, gpu), Tensor::zeros(a.w_hi.shape(), DType::F32, gpu),
                  "dx_out");
}

#endif  // LIZARD_WITH_CUDA

}  // namespace
}  // namespace lizard::test
