// The mma.sync state sweeps (cuda/lizard_global_state_mma.cu, the default) against the wmma
// kernel they replace (LIZARD_STATE_KERNEL=wmma), through the public op. Both form the same
// bf16 operands bit for bit (the same f32 expressions for the decayed phi and its split) and
// sum them in f32 in another order, so every saved statistic agrees to f32 rounding; the
// backward's dstates (not saved) show through every gradient.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <tuple>

#include "lizard/core/error.h"
#include "lizard/cuda/lizard_attention.h"
#include "lizard/ops/lizard_attention.h"
#include "lizard_gpu_case.h"

namespace lizard::test {
namespace {

/// The passes (bf16 inputs, f32 parameters) with the state sweeps LIZARD_STATE_KERNEL=`kernels`
/// selects (null: default), on a case the tensor-core global branch must take.
GpuPasses run_with(const LizardCase& c, const Tensor& dy, const char* kernels) {
#ifdef LIZARD_WITH_CUDA  // CPU-only builds skip before this; the path query exists with CUDA only
  {
    const auto [in, p] = to_gpu(c);
    EXPECT_TRUE(cuda::lizard_attention_kernel_path(c.cfg, in, p, true).global_tc)
        << "the case must take the tensor-core global branch";
  }
#endif
  return run_passes(c, dy, "LIZARD_STATE_KERNEL", kernels);
}

std::vector<double> host(const Tensor& t) { return t.to(Device::cpu(), DType::F64).to_vector(); }

struct Shape {
  int64_t B, T, H, Hkv, D, F;
  double gate_bias;  // gate logit level: -6 gamma near 0, +6 near 1
};

/// Forward outputs and every gradient of one case, mma sweeps against wmma sweeps.
void expect_matches_wmma(const Shape& sh) {
  ops::LizardConfig cfg;
  cfg.feature_dim = sh.F;
  cfg.window = 24;
  cfg.sinks = 4;
  LizardCase c = make_case(cfg, sh.B, sh.T, sh.H, sh.Hkv, sh.D, 8, 4100 + sh.T + sh.D + sh.F,
                           DType::F64, 0.5, sh.gate_bias);
  const std::string what = "B " + std::to_string(sh.B) + " T " + std::to_string(sh.T) + " H " +
                           std::to_string(sh.H) + " Hkv " + std::to_string(sh.Hkv) + " D " +
                           std::to_string(sh.D) + " F " + std::to_string(sh.F) + " gate bias " +
                           std::to_string(sh.gate_bias);
  const Tensor dy = rand(c.in.q.shape(), 91, DType::F64);
  const GpuPasses mma = run_with(c, dy, nullptr), old = run_with(c, dy, "wmma");

  // states [B,H,NC,2F,D+1]: the S columns take the same HMMA's on the same operands in the
  // same order in both kernels (wmma's 16x16x16 is two m16n8k16), z is a 32-term f32 sum per
  // chunk in another order: a few 2^-24 per step, decayed, so about 1e-7 relative; 1e-5
  // norm-wise still catches any wrong index, tail or race (those give O(1) errors in whole
  // rows). Per element, z (a sum of positive weights, no cancellation) within 1e-5 relative.
  {
    const auto a = host(mma.saved.states), b = host(old.saved.states);
    ASSERT_EQ(a.size(), b.size()) << what;
    EXPECT_LE(rel_err(mma.saved.states.to(Device::cpu(), DType::F64),
                      old.saved.states.to(Device::cpu(), DType::F64)), 1e-5)
        << what << " states";
    // each chunk's block of 2F (D + 1) floats is S [2F][D] then z [2F] (state_index in
    // cuda/lizard_attention_common.cuh); z sums positive weights times softmax features, so
    // it is >= 0 everywhere and > 0 after the first chunk, while S (v signed) has negative
    // entries: a kernel writing S where z belongs (or the old [2F][D+1] rows) fails here
    const size_t F2 = 2 * size_t(sh.F), D = size_t(sh.D), blk = F2 * (D + 1);
    ASSERT_EQ(a.size() % blk, 0u) << what;
    double zerr = 0, zmin = 0, zmax = 0;
    for (size_t c0 = 0; c0 < a.size(); c0 += blk)
      for (size_t i = c0 + F2 * D; i < c0 + blk; ++i) {
        zerr = std::max(zerr, std::abs(a[i] - b[i]) / std::max(std::abs(b[i]), 1e-20));
        zmin = std::min({zmin, a[i], b[i]});
        zmax = std::max({zmax, a[i], b[i]});
      }
    EXPECT_LE(zerr, 1e-5) << what << " z column, worst element";
    EXPECT_GE(zmin, 0.0) << what << " z part of the blocks holds negative values (not z)";
    if (sh.T > 32) EXPECT_GT(zmax, 0.0) << what << " z part of the blocks is all zero";
  }
  // numden and wstats: f32 functions of the states, same tolerance and reason
  EXPECT_LE(rel_err(mma.saved.numden.to(Device::cpu(), DType::F64),
                    old.saved.numden.to(Device::cpu(), DType::F64)), 1e-5)
      << what << " numden";
  EXPECT_LE(rel_err(mma.saved.wstats.to(Device::cpu(), DType::F64),
                    old.saved.wstats.to(Device::cpu(), DType::F64)), 1e-5)
      << what << " wstats";
  // y is bf16: a 1e-7 change of den may move an element across a rounding boundary, by one
  // bf16 step (at most 2^-7 of its magnitude); an element near 0 moves by about 1e-7 |M/den|,
  // more than a step of its own, hence the floor of 1e-4 of the largest |y|. A wrong state
  // moves y by 0.1 of that largest |y| or more, so both checks still see it.
  for (auto [name, got, ref] : {std::tuple{"y (training)", &mma.y, &old.y},
                                {"y (inference)", &mma.y_inf, &old.y_inf}}) {
    const auto a = host(*got), b = host(*ref);
    ASSERT_EQ(a.size(), b.size()) << what << " " << name;
    double ymax = 0;
    for (double x : b) ymax = std::max(ymax, std::abs(x));
    size_t bad = 0;
    for (size_t i = 0; i < a.size(); ++i)
      bad += std::abs(a[i] - b[i]) > std::ldexp(std::abs(b[i]), -7) + 1e-4 * ymax;
    EXPECT_EQ(bad, 0u) << what << " " << name << ": elements more than one bf16 step apart";
    EXPECT_LE(rel_err(got->to(Device::cpu(), DType::F64), ref->to(Device::cpu(), DType::F64)), 1e-3)
        << what << " " << name << " (norm-wise)";
  }
  // gradients: the backward reads the states (1e-7 apart) and sweeps dstates with the new
  // kernel (again 1e-7 apart); dq, dk, dw* go through bf16 operands of dS, whose rounding a
  // 1e-7 change flips now and then (2^-8 on that operand element, diluted in sums over D and
  // 2F), and dk, dv add over GQA heads and branches with f32 atomics in a run-dependent order
  // (3.3e-5 apart between two runs of one kernel on an H200, tests/gpu/lizard_features_test);
  // the gate gradients are sums of pair terms whose rows cancel, which amplifies the
  // difference of the states by the cancellation (the f64 oracle sees 1e-4 from 2^-16
  // operands; the dstate sweep once took 2^-9 operands and moved dw_g, db_g by O(1), so a
  // 1e-7 change may show as a few 1e-5). 3e-4 sits well above those and far below a wrong
  // dstate row, which moves dq, dk and the gate gradients by 0.1 or more. dtau and dalpha are left out: a few
  // scalars, each one f32 atomic sum over every token whose run-dependent order alone can move
  // them past these bounds (as lizard_features_test leaves them out); a wrong state shows in
  // the gradients above.
  auto f64 = [](const Tensor& t) { return t.to(Device::cpu(), DType::F64); };
  for (auto [name, got, ref] :
       {std::tuple{"dq", &mma.g.dq, &old.g.dq}, {"dk", &mma.g.dk, &old.g.dk},
        {"dv", &mma.g.dv, &old.g.dv}, {"dx", &mma.g.dx, &old.g.dx}, {"dwq", &mma.g.dwq, &old.g.dwq},
        {"dwk", &mma.g.dwk, &old.g.dwk}, {"dw_g", &mma.g.dw_g, &old.g.dw_g},
        {"db_g", &mma.g.db_g, &old.g.db_g}}) {
    const double err = rel_err(f64(*got), f64(*ref));
    EXPECT_LE(err, 3e-4) << what << " " << name;
  }
}

// Lengths 1, 7, 31 (one partial chunk: every saved state is the zero before chunk 0), 32 (one
// full chunk), 33, 65 (a partial last chunk, which the reverse sweep adds first), 1000 (31
// full chunks and a partial one); GQA groups 1 and 4; D 32, 64, 128; 2F = 256 (four row
// slices), 96 (a full slice and a half one: two warps without rows) and 32 (one half slice);
// gates near 0 (states forget within a chunk) and near 1 (states sum 1000 tokens).
TEST(LizardGlobalStateGpu, MmaSweepsMatchWmmaSweeps) {
  LZ_REQUIRE_GPU();
  if (f32_forced()) GTEST_SKIP() << "LIZARD_ATTENTION_KERNELS=f32 forces the f32 kernels";
  for (Shape sh : {Shape{2, 1, 4, 1, 64, 32, 0.5}, Shape{1, 7, 4, 4, 128, 128, -6},
                   Shape{2, 31, 4, 1, 128, 48, 6}, Shape{1, 32, 4, 4, 64, 16, 0.5},
                   Shape{2, 33, 4, 1, 128, 128, -6}, Shape{1, 65, 4, 4, 64, 48, 6},
                   Shape{2, 1000, 4, 1, 128, 128, 6}, Shape{1, 1000, 4, 4, 64, 48, -6},
                   Shape{1, 300, 2, 2, 32, 16, 0.5}})
    expect_matches_wmma(sh);
}

// Every column split of the sweeps (LIZARD_STATE_COLS: 1, 2 or 4 warps per 16 state rows,
// capped at D / 32; the default is 2, so the others run only when asked for)
// against the wmma sweeps, at the shapes where the split changes the work per warp: D 128 (all
// three splits), D 64 (1, 2), partial chunks, GQA, 2F with a half row slice.
TEST(LizardGlobalStateGpu, EveryColumnSplitMatchesWmmaSweeps) {
  LZ_REQUIRE_GPU();
  if (f32_forced()) GTEST_SKIP() << "LIZARD_ATTENTION_KERNELS=f32 forces the f32 kernels";
  for (const char* cols : {"1", "2", "4"}) {
    ScopedEnv env("LIZARD_STATE_COLS", cols);
    SCOPED_TRACE(std::string("LIZARD_STATE_COLS=") + cols);
    for (Shape sh : {Shape{2, 33, 4, 1, 128, 128, -6}, Shape{1, 65, 4, 4, 64, 48, 6},
                     Shape{1, 300, 2, 2, 128, 16, 0.5}})
      expect_matches_wmma(sh);
  }
}

/// What the row-split test compares, from one training forward (states, y), its backward
/// (the dstates, kept by LizardWants::dstates) and an inference forward (y_inf, the unsplit
/// forward sweep), with LIZARD_STATE_ROWS=`rows` and LIZARD_STATE_COLS=`cols`; `path_rows`
/// the state rows per CTA lizard_attention_kernel_path reports for them.
struct SweepOutputs {
  Tensor states, dstates, y, y_inf;
  int path_rows = -1;
};

SweepOutputs run_rows(const LizardCase& c, const Tensor& dy, const char* rows, const char* cols) {
  ScopedEnv env("LIZARD_STATE_ROWS", rows);
  env.set("LIZARD_STATE_COLS", cols);
  const auto [in, p] = to_gpu(c);
  SweepOutputs r;
#ifdef LIZARD_WITH_CUDA  // CPU-only builds skip before this; the path query exists with CUDA only
  r.path_rows = cuda::lizard_attention_kernel_path(c.cfg, in, p, true).state_rows;
#endif
  ops::LizardSaved saved;
  r.y = ops::lizard_attention_forward(c.cfg, in, p, &saved);
  r.states = saved.states;
  ops::LizardWants want;
  want.dstates = true;
  r.dstates = ops::lizard_attention_backward(c.cfg, in, p, saved,
                                             dy.to(Device::cuda(0), DType::BF16), want).dstates;
  r.y_inf = ops::lizard_attention_forward(c.cfg, in, p, nullptr);
  return r;
}

/// Whether t has an element other than zero.
bool any_nonzero(const Tensor& t) {
  for (double x : host(t))
    if (x != 0) return true;
  return false;
}

// The row split (LIZARD_STATE_ROWS: 32 or 64 state rows per CTA) only decides which rows share
// a CTA; every row's arithmetic is the same (cuda/lizard_global_state_mma.cu), so the states,
// the backward's dstates and both y must be the same bits under 32 and 64, for every column
// split (not within a tolerance: any difference is a fault). Lengths 1 (one partial chunk), 33,
// 65 (a partial last chunk, which the reverse sweep takes first), 1000; GQA groups 1, 2, 4;
// D 32, 64, 128; 2F 256 (4 or 8 CTAs per head), 96 (a 64-row CTA with only 32 rows against
// three full 32-row ones) and 32 (one half-empty 64-row CTA, one 32-row CTA); gates near 0
// and 1.
TEST(LizardGlobalStateGpu, EveryRowSplitGivesTheSameBits) {
  LZ_REQUIRE_GPU();
  if (f32_forced()) GTEST_SKIP() << "LIZARD_ATTENTION_KERNELS=f32 forces the f32 kernels";
  for (const char* cols : {"1", "2", "4"}) {
    SCOPED_TRACE(std::string("LIZARD_STATE_COLS=") + cols);
    for (Shape sh : {Shape{2, 1, 4, 1, 128, 128, 0.5}, Shape{2, 33, 4, 1, 128, 128, -6},
                     Shape{1, 65, 4, 4, 64, 48, 6}, Shape{1, 1000, 4, 2, 128, 128, 6},
                     Shape{2, 65, 2, 1, 32, 16, 0.5}}) {
      ops::LizardConfig cfg;
      cfg.feature_dim = sh.F;
      cfg.window = 24;
      cfg.sinks = 4;
      const LizardCase c = make_case(cfg, sh.B, sh.T, sh.H, sh.Hkv, sh.D, 8, 5200 + sh.T + sh.F,
                                     DType::F64, 0.5, sh.gate_bias);
      const std::string what = "B " + std::to_string(sh.B) + " T " + std::to_string(sh.T) +
                               " H " + std::to_string(sh.H) + " Hkv " + std::to_string(sh.Hkv) +
                               " D " + std::to_string(sh.D) + " F " + std::to_string(sh.F);
      const Tensor dy = rand(c.in.q.shape(), 93, DType::F64);
      const SweepOutputs r64 = run_rows(c, dy, "64", cols), r32 = run_rows(c, dy, "32", cols);
      // the switch reaches the launch's choice (else both runs could be one kernel)
      EXPECT_EQ(r64.path_rows, 64) << what;
      EXPECT_EQ(r32.path_rows, 32) << what;
      expect_same_bits(r64.states, r32.states, what + " states (forward sweep, split)");
      expect_same_bits(r64.dstates, r32.dstates, what + " dstates (reverse sweep)");
      expect_same_bits(r64.y, r32.y, what + " y (training)");
      expect_same_bits(r64.y_inf, r32.y_inf, what + " y (inference: forward sweep, unsplit)");
      if (sh.T > 32) {  // two chunks or more: neither sweep writes only zeros
        EXPECT_TRUE(any_nonzero(r32.states)) << what << " states all zero";
        EXPECT_TRUE(any_nonzero(r32.dstates)) << what << " dstates all zero";
      }
    }
  }
}

// The automatic row split (LIZARD_STATE_ROWS unset): 32 rows for a grid far under one 64-row
// CTA per SM (B 1, H 4, 2F 256: 16 CTAs; any GPU of 16 SMs or more), 64 for one far over two
// per SM (B 8, H 32: 1024 CTAs; any GPU of up to 512 SMs). T 33: only the shapes matter.
TEST(LizardGlobalStateGpu, RowSplitFollowsTheGridSize) {
  LZ_REQUIRE_GPU();
  if (f32_forced()) GTEST_SKIP() << "LIZARD_ATTENTION_KERNELS=f32 forces the f32 kernels";
#ifdef LIZARD_WITH_CUDA
  ScopedEnv env("LIZARD_STATE_ROWS", nullptr);
  ops::LizardConfig cfg;
  cfg.feature_dim = 128;
  cfg.window = 16;
  for (auto [B, H, Hkv, rows] : {std::tuple{1, 4, 1, 32}, std::tuple{8, 32, 8, 64}}) {
    const LizardCase c = make_case(cfg, B, 33, H, Hkv, 128, 8, 7);
    const auto [in, p] = to_gpu(c);
    EXPECT_EQ(cuda::lizard_attention_kernel_path(cfg, in, p, true).state_rows, rows)
        << "B " << B << " H " << H;
  }
#endif
}

// The switch really switches: on a long case with gates near 1 the z columns (summed in
// another order) cannot agree bit for bit over every chunk, so equal states would mean both
// runs took the same kernel and the test above compared a kernel with itself.
TEST(LizardGlobalStateGpu, SwitchSelectsTheWmmaSweep) {
  LZ_REQUIRE_GPU();
  if (f32_forced()) GTEST_SKIP() << "LIZARD_ATTENTION_KERNELS=f32 forces the f32 kernels";
  ops::LizardConfig cfg;
  cfg.feature_dim = 64;
  cfg.window = 16;
  LizardCase c = make_case(cfg, 1, 700, 2, 2, 64, 8, 17, DType::F64, 0.5, 6);
  const Tensor dy = rand(c.in.q.shape(), 18, DType::F64);
  const GpuPasses mma = run_with(c, dy, "mma"), old = run_with(c, dy, "wmma");
  const auto a = host(mma.saved.states), b = host(old.saved.states);
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  EXPECT_GT(m, 0.0) << "LIZARD_STATE_KERNEL=mma and =wmma gave identical states";
}

// An unknown value of any switch (the kernel, the column split, the row split) is an input
// error naming the variable, not a silent default.
TEST(LizardGlobalStateGpu, UnknownSwitchValuesAreErrors) {
  LZ_REQUIRE_GPU();
  if (f32_forced()) GTEST_SKIP() << "LIZARD_ATTENTION_KERNELS=f32 forces the f32 kernels";
  ops::LizardConfig cfg;
  cfg.feature_dim = 16;
  cfg.window = 16;
  LizardCase c = make_case(cfg, 1, 33, 2, 1, 32, 8, 5);
  const Tensor dy = rand(c.in.q.shape(), 6, DType::F64);
  expect_unknown_switch_rejected("LIZARD_STATE_KERNEL", [&](const char* v) { run_with(c, dy, v); });
  expect_unknown_switch_rejected("LIZARD_STATE_COLS", [&](const char* v) {
    ScopedEnv env("LIZARD_STATE_COLS", v);
    run_with(c, dy, nullptr);
  });
  expect_unknown_switch_rejected("LIZARD_STATE_ROWS", [&](const char* v) {
    ScopedEnv env("LIZARD_STATE_ROWS", v);
    run_with(c, dy, nullptr);
  });
}

}  // namespace
}  // namespace lizard::test
