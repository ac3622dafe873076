// The mma feature-map kernels (cuda/lizard_features_tc.cu, the default) against the wmma
// kernels they replace (LIZARD_FEATURES_KERNEL=wmma), through the public op: phi and phi_lo
// feed deterministic forward kernels only (no atomics), so equal phi bits give equal saved
// statistics and y bits, and unequal phi shows there. The backward has atomics (dk, dW, dv)
// in both versions, so its outputs are compared to f32 rounding.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

#include "lizard/core/error.h"
#include "lizard/cuda/lizard_attention.h"
#include "lizard/ops/lizard_attention.h"
#include "../lizard/lizard_case.h"

namespace lizard::test {
namespace {

/// Sets an environment variable for its scope and restores the previous value.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    const char* old = std::getenv(name);
    had_ = old != nullptr;
    if (had_) old_ = old;
    if (value) setenv(name, value, 1);
    else unsetenv(name);
  }
  ~ScopedEnv() {
    if (had_) setenv(name_.c_str(), old_.c_str(), 1);
    else unsetenv(name_.c_str());
  }

 private:
  std::string name_, old_;
  bool had_ = false;
};

struct FeatureRun {
  Tensor y, y_inf;
  ops::LizardSaved saved;
  ops::LizardGrads g;
};

/// The case's inputs (bf16) and parameters (f32) on the GPU.
std::pair<ops::LizardInputs, ops::LizardParams> on_gpu(const LizardCase& c) {
  const Device gpu = Device::cuda(0);
  ops::LizardInputs in;
  in.q = c.in.q.to(gpu, DType::BF16);
  in.k = c.in.k.to(gpu, DType::BF16);
  in.v = c.in.v.to(gpu, DType::BF16);
  in.x = c.in.x.to(gpu, DType::BF16);
  ops::LizardParams p;
  for (auto [src, dst] : {std::pair{&c.p.wq, &p.wq}, {&c.p.wk, &p.wk}, {&c.p.w_g, &p.w_g},
                          {&c.p.b_g, &p.b_g}, {&c.p.tau, &p.tau}, {&c.p.alpha, &p.alpha}})
    if (src->defined()) *dst = src->to(gpu, DType::F32);
  return {in, p};
}

/// Training forward (saved), backward and an inference forward on the GPU, with the feature
/// kernels LIZARD_FEATURES_KERNEL=`kernels` selects (null: the default).
FeatureRun run_features(const LizardCase& c, const Tensor& dy, const char* kernels) {
  ScopedEnv env("LIZARD_FEATURES_KERNEL", kernels);
  const auto [in, p] = on_gpu(c);
  FeatureRun r;
  r.y = ops::lizard_attention_forward(c.cfg, in, p, &r.saved);
  r.g = ops::lizard_attention_backward(c.cfg, in, p, r.saved, dy.to(Device::cuda(0), DType::BF16));
  r.y_inf = ops::lizard_attention_forward(c.cfg, in, p, nullptr);
  return r;
}

/// max |a - b| over the elements (exact: f32 and bf16 widen to f64 without rounding).
double max_abs_diff(const Tensor& a, const Tensor& b) {
  const auto va = a.to(Device::cpu(), DType::F64).to_vector();
  const auto vb = b.to(Device::cpu(), DType::F64).to_vector();
  EXPECT_EQ(va.size(), vb.size());
  double m = 0;
  for (size_t i = 0; i < std::min(va.size(), vb.size()); ++i) m = std::max(m, std::abs(va[i] - vb[i]));
  return m;
}

struct Shape {
  int64_t B, T, H, Hkv, D, F;
  bool exp;
};

/// Training forward, backward and inference forward of one case with the mma kernels and with
/// the wmma kernels: forward outputs bit for bit, gradients to f32 rounding.
void expect_matches_wmma(const Shape& sh) {
  ops::LizardConfig cfg;
  cfg.feature_dim = sh.F;
  cfg.window = 40;
  cfg.sinks = 4;
  cfg.feature_activation = sh.exp ? ops::FeatureActivation::Exp : ops::FeatureActivation::Softmax;
  LizardCase c = make_case(cfg, sh.B, sh.T, sh.H, sh.Hkv, sh.D, 8, 900 + sh.T + sh.D, DType::F64, 0.5, 1.0);
  for (Tensor* t : {&c.in.q, &c.in.k, &c.in.v, &c.in.x}) *t = t->to(DType::BF16).to(DType::F64);
  const std::string what = "B " + std::to_string(sh.B) + " T " + std::to_string(sh.T) + " H " +
                           std::to_string(sh.H) + " Hkv " + std::to_string(sh.Hkv) + " D " +
                           std::to_string(sh.D) + " F " + std::to_string(sh.F) + (sh.exp ? " exp" : " softmax");
#ifdef LIZARD_WITH_CUDA  // CPU-only builds skip before this; the path query exists with CUDA only
  {
    const auto [in, p] = on_gpu(c);
    ASSERT_TRUE(cuda::lizard_attention_kernel_path(cfg, in, p, true).global_tc)
        << what << ": the case must take the tensor-core feature kernels";
  }
#endif
  const Tensor dy = rand(c.in.q.shape(), 77, DType::F64);
  const FeatureRun mma = run_features(c, dy, nullptr), old = run_features(c, dy, "wmma");
  // forward: bit for bit (phi, phi_lo identical; every later forward kernel deterministic)
  EXPECT_EQ(max_abs_diff(mma.saved.states, old.saved.states), 0.0) << what << " states";
  EXPECT_EQ(max_abs_diff(mma.saved.numden, old.saved.numden), 0.0) << what << " numden";
  EXPECT_EQ(max_abs_diff(mma.saved.wstats, old.saved.wstats), 0.0) << what << " wstats";
  EXPECT_EQ(max_abs_diff(mma.y, old.y), 0.0) << what << " y (training)";
  EXPECT_EQ(max_abs_diff(mma.y_inf, old.y_inf), 0.0) << what << " y (inference)";
  // backward: du is the same bf16 in both, but dW (and dk, dv, the gate terms) are f32 sums
  // in an order that tiles and atomics leave open, over up to 2000 tokens of random sign:
  // about 2^-24 sqrt(2000) = 3e-6 relative at worst per dW element, less norm-wise; 2e-5
  // leaves room and still catches any wrong element (an index or a race gives O(1) errors
  // in the affected rows, a du rounded differently about 1e-3). dk and dv are also summed
  // over the query heads of a GQA group and over both branches by f32 atomics whose order
  // changes from run to run, with cancellation between the terms: on an H200 they differed
  // by 3.3e-5 (dv, T 333, D 128) and 2.8e-5 (dk, T 700, H 64) with every other gradient
  // within 2e-5; 2e-4 for those two still sits 5x under a bf16-rounded du.
  auto f64 = [](const Tensor& t) { return t.to(Device::cpu(), DType::F64); };
  for (auto [name, got, ref] : {std::tuple{"dq", &mma.g.dq, &old.g.dq}, {"dk", &mma.g.dk, &old.g.dk},
                                {"dv", &mma.g.dv, &old.g.dv}, {"dx", &mma.g.dx, &old.g.dx},
                                {"dwq", &mma.g.dwq, &old.g.dwq}, {"dwk", &mma.g.dwk, &old.g.dwk},
                                {"dw_g", &mma.g.dw_g, &old.g.dw_g}, {"db_g", &mma.g.db_g, &old.g.db_g}}) {
    const double err = rel_err(f64(*got), f64(*ref));
    const bool shared_kv = std::string(name) == "dk" || std::string(name) == "dv";
    EXPECT_LE(err, shared_kv ? 2e-4 : 2e-5) << what << " " << name;
  }
}

bool f32_forced() {
  const char* e = std::getenv("LIZARD_ATTENTION_KERNELS");
  return e && std::string(e) == "f32";
}

// Awkward lengths (1, 7, 65, 333: partial 16-token units and partial 128-token tiles), GQA
// groups 1, 2 and 4, D != F and widths that are not powers of two (48: 6 n-tiles, 3 k-steps,
// 9 dW tiles over 8 warps), both maps. Small enough for racecheck.
TEST(LizardFeaturesGpu, MmaKernelsMatchWmmaKernels) {
  LZ_REQUIRE_GPU();
  if (f32_forced()) GTEST_SKIP() << "LIZARD_ATTENTION_KERNELS=f32 forces the f32 kernels";
  for (Shape sh : {Shape{2, 1, 4, 2, 128, 128, false}, Shape{2, 65, 4, 1, 128, 128, true},
                   Shape{1, 7, 4, 4, 64, 32, false}, Shape{2, 300, 4, 2, 48, 48, true},
                   Shape{1, 333, 4, 2, 128, 128, true}})
    expect_matches_wmma(sh);
}

// More units and tiles than the grid has warps and CTAs per head (H = 64 on a 132-SM card: the
// forward's 4 CTAs of a head take 44 and 126 units with 32 warps, the backward's 2 CTAs 3 and
// 8 tiles each), so the persistent loops, the reuse of the shared buffers across tiles and the
// dW accumulation over tiles all run.
TEST(LizardFeaturesGpu, MmaKernelsMatchWmmaKernelsOverManyTiles) {
  LZ_REQUIRE_GPU();
  if (f32_forced()) GTEST_SKIP() << "LIZARD_ATTENTION_KERNELS=f32 forces the f32 kernels";
  for (Shape sh : {Shape{1, 700, 64, 8, 32, 32, true}, Shape{2, 1000, 64, 8, 64, 64, false}})
    expect_matches_wmma(sh);
}

// An unknown value of the switch is an input error naming the variable, not a silent default.
TEST(LizardFeaturesGpu, UnknownKernelSwitchIsAnError) {
  LZ_REQUIRE_GPU();
  if (f32_forced()) GTEST_SKIP() << "LIZARD_ATTENTION_KERNELS=f32 forces the f32 kernels";
  ops::LizardConfig cfg;
  cfg.feature_dim = 16;
  cfg.window = 16;
  LizardCase c = make_case(cfg, 1, 33, 2, 1, 32, 8, 5);
  const Tensor dy = rand(c.in.q.shape(), 6, DType::F64);
  try {
    run_features(c, dy, "fast");
    FAIL() << "LIZARD_FEATURES_KERNEL=fast was accepted";
  } catch (const InputError& err) {
    EXPECT_NE(std::string(err.what()).find("LIZARD_FEATURES_KERNEL"), std::string::npos) << err.what();
  }
}

}  // namespace
}  // namespace lizard::test
