// Programmatic dependent launch (cuda/pdl.cuh): with LIZARD_PDL on (the default) a kernel may
// be scheduled while the one ahead of it in the stream still runs, and waits at its first
// statement for that one to finish. The Lizard attention chains a dozen such kernels (gate,
// feature maps, sweeps, output, window, gradient, feature-map backward, gate scan), each
// reading what the one before wrote: a kernel that read before the wait would see stale or
// half-written data. So every result must be what plain stream order gives: the forward (no
// atomics) bit for bit, the gradients (f32 atomics, whose order varies run to run) to f32
// rounding.
#include <gtest/gtest.h>

#include <string>
#include <tuple>

#include "lizard/core/error.h"
#include "lizard/ops/lizard_attention.h"
#include "lizard_gpu_case.h"

namespace lizard::test {
namespace {

TEST(LizardAttentionPdl, SameResultsAsPlainStreamOrder) {
  LZ_REQUIRE_GPU();
  if (f32_forced()) GTEST_SKIP() << "LIZARD_ATTENTION_KERNELS=f32 forces the f32 kernels";
  // B 2, T 1000 (many waves of every grid), GQA 2, D 128, F 128, window 40 with sinks, gates
  // around 0.5 +- 0.5; and a one-token case (grids of one CTA)
  for (int64_t T : {1000, 1}) {
    ops::LizardConfig cfg;
    cfg.feature_dim = 128;
    cfg.window = 40;
    cfg.sinks = 4;
    const LizardCase c = make_case(cfg, 2, T, 4, 2, 128, 64, 70 + T, DType::F64, 0.5, 0.5);
    const Tensor dy = rand(c.in.q.shape(), 71, DType::F64);
    const GpuPasses on = run_passes(c, dy, "LIZARD_PDL", "1");
    const GpuPasses off = run_passes(c, dy, "LIZARD_PDL", "0");
    const std::string what = "T " + std::to_string(T);
    expect_same_bits(on.y, off.y, what + " y (training)");
    expect_same_bits(on.y_inf, off.y_inf, what + " y (inference)");
    expect_same_bits(on.saved.states, off.saved.states, what + " states");
    expect_same_bits(on.saved.numden, off.saved.numden, what + " numden");
    expect_same_bits(on.saved.wstats, off.saved.wstats, what + " wstats");
    // bf16 gradients: an f32 sum in another atomic order may round to the neighbouring bf16
    // (2^-8 relative) on a few elements; a stale or half-written input moves O(1) of them
    for (auto [name, a, b] : {std::tuple{"dq", on.g.dq, off.g.dq}, {"dk", on.g.dk, off.g.dk},
                              {"dv", on.g.dv, off.g.dv}, {"dx", on.g.dx, off.g.dx}})
      EXPECT_LE(rel_err(a.to(Device::cpu(), DType::F64), b.to(Device::cpu(), DType::F64)), 1e-3)
          << what << " " << name;
    // f32 parameter gradients: sums over every token, in another order
    for (auto [name, a, b] :
         {std::tuple{"dwq", on.g.dwq, off.g.dwq}, {"dwk", on.g.dwk, off.g.dwk},
          {"dw_g", on.g.dw_g, off.g.dw_g}, {"db_g", on.g.db_g, off.g.db_g},
          {"dtau", on.g.dtau, off.g.dtau}, {"dalpha", on.g.dalpha, off.g.dalpha}})
      EXPECT_LE(rel_err(a.to(Device::cpu(), DType::F64), b.to(Device::cpu(), DType::F64)), 1e-5)
          << what << " " << name;
  }
}

TEST(LizardAttentionPdl, UnknownSwitchIsAnError) {
  LZ_REQUIRE_GPU();
  if (f32_forced()) GTEST_SKIP() << "LIZARD_ATTENTION_KERNELS=f32 forces the f32 kernels";
  ops::LizardConfig cfg;
  cfg.feature_dim = 16;
  cfg.window = 16;
  const LizardCase c = make_case(cfg, 1, 33, 2, 1, 32, 8, 5);
  const Tensor dy = rand(c.in.q.shape(), 6, DType::F64);
  expect_unknown_switch_rejected("LIZARD_PDL",
                                 [&](const char* v) { run_passes(c, dy, "LIZARD_PDL", v); });
}

}  // namespace
}  // namespace lizard::test
