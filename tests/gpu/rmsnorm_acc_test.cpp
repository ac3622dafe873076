// RMSNorm backward with the engine's running gradient sum folded into the dx pass
// (ops::rmsnorm_backward's dx_acc, cuda::rmsnorm_backward's acc) against f64 references written
// here from the contract, on exactly the values the GPU saw; and against the unfused
// composition (dx, then a separate add) on the same GPU.
#include <gtest/gtest.h>

#include <cmath>

#include "gpu_test_util.h"
#include "lizard/autograd/functions.h"
#include "lizard/autograd/nn_functions.h"
#include "lizard/core/cuda_runtime.h"
#include "lizard/ops/elementwise.h"
#include "lizard/ops/rmsnorm.h"

#ifdef LIZARD_WITH_CUDA

using namespace lizard;
using namespace lizard::test;

namespace {
/// A contiguous [N, D] tensor one element past a 16-byte boundary (the kernel's element path).
Tensor misaligned_rand(int64_t N, int64_t D, uint64_t seed, DType dt, double lo, double hi) {
  return gpu_rand({N * D + 1}, seed, dt, lo, hi).slice(0, 1, N * D + 1).view({N, D});
}
}  // namespace

TEST(GpuRmsNormAcc, DxPlusRunningSumMatchesF64) {
  LZ_REQUIRE_GPU();
  for (const DtypeCase& c : {kF32, kBF16}) {
    for (auto [N, D] : {std::pair<int64_t, int64_t>{1, 5}, {7, 33}, {130, 4096}, {3, 8}}) {
      for (bool misaligned : {false, true}) {
        Tensor x = gpu_rand({N, D}, 71, c.dtype), w = gpu_rand({D}, 72, c.dtype, 0.5, 1.5);
        Tensor dy = gpu_rand({N, D}, 73, c.dtype);
        Tensor acc = misaligned ? misaligned_rand(N, D, 74, c.dtype, -2, 2)
                                : gpu_rand({N, D}, 74, c.dtype, -2, 2);
        const Tensor acc_before = f64(acc);
        Tensor rstd = ops::rmsnorm(x, w, 1e-5).rstd;
        ops::RmsNormGrads fused = ops::rmsnorm_backward(dy, x, w, rstd, true, false, acc);
        const std::string what = str_cat("rmsnorm dx + acc ", N, "x", D, " ",
                                         dtype_name(c.dtype), misaligned ? " misaligned acc" : "",
                                         " (", c.why, ")");
        EXPECT_FALSE(fused.dw.defined()) << what << ": dw not asked for";
        // Same budget as the plain dx test (2x: dx cancels), the sum adds one fp32 add.
        expect_close(fused.dx, rmsnorm_dx_plus_acc(dy, x, w, rstd, acc), 2 * c.tol, what);
        EXPECT_EQ(rel_err(f64(acc), acc_before), 0.0) << what << ": acc is only read";
        // The unfused composition on the same GPU: f32 differs by an ulp or so per element.
        if (c.dtype == DType::F32) {
          ops::RmsNormGrads plain = ops::rmsnorm_backward(dy, x, w, rstd, true, true);
          expect_close(fused.dx, f64(ops::add(plain.dx, acc)), 1e-6, what + " vs unfused");
          EXPECT_TRUE(plain.dw.defined()) << what;
        }
      }
    }
  }
}

// bf16, the running sum nearly cancelling dx (acc = -dx + small): one rounding of the sum keeps
// bf16's 2^-9 relative accuracy of the result; rounding dx first (the unfused composition)
// loses it, since dx's rounding error is relative to |dx|, not to the small sum.
TEST(GpuRmsNormAcc, Bf16SumIsRoundedOnce) {
  LZ_REQUIRE_GPU();
  const int64_t N = 64, D = 1024;
  Tensor x = gpu_rand({N, D}, 81, DType::BF16), w = gpu_rand({D}, 82, DType::BF16, 0.5, 1.5);
  Tensor dy = gpu_rand({N, D}, 83, DType::BF16);
  Tensor rstd = ops::rmsnorm(x, w, 1e-5).rstd;
  Tensor zero = Tensor::zeros({N, D}, DType::BF16, Device::cuda());
  Tensor dx_exact = rmsnorm_dx_plus_acc(dy, x, w, rstd, zero);
  Tensor small = Tensor::uniform({N, D}, -0.02, 0.02, 84, 0, DType::F32).to(DType::F64);
  Tensor acc = ops::add(ops::affine(dx_exact, -1.0, 0.0), small).to(Device::cuda(), DType::BF16);
  Tensor want = rmsnorm_dx_plus_acc(dy, x, w, rstd, acc);
  Tensor fused = ops::rmsnorm_backward(dy, x, w, rstd, true, false, acc).dx;
  Tensor unfused = ops::add(ops::rmsnorm_backward(dy, x, w, rstd, true, false).dx, acc);
  const double e_fused = rel_err(f64(fused), want), e_unfused = rel_err(f64(unfused), want);
  // fp32 math error ~1e-7 |dx| ~ 1e-5 of the sum, plus one bf16 rounding (2^-9 rms bound).
  EXPECT_LE(e_fused, 4e-3) << "fused bf16 dx + acc";
  EXPECT_GT(e_unfused, 4 * e_fused) << "the unfused composition rounds dx first: " << e_unfused;
}

// Through the tape on CUDA: x feeds the norm and a residual add (the add runs first in
// backward, the norm folds its gradient) == the same graph with the residual gradient added
// by hand afterwards.
TEST(GpuRmsNormAcc, ResidualGraphOnTheTape) {
  LZ_REQUIRE_GPU();
  using autograd::Var;
  const int64_t N = 9, D = 136;
  Tensor x0 = gpu_rand({N, D}, 91, DType::F32), w0 = gpu_rand({D}, 92, DType::F32, 0.5, 1.5);
  Tensor g = gpu_rand({N, D}, 93, DType::F32);
  Var x(x0, true), w(w0, true);
  Var xs = autograd::scale(x, 0.5);
  autograd::add(xs, autograd::rmsnorm(xs, w, 1e-5)).backward(g);
  // Reference: dx0 = 0.5 (g + rmsnorm_dx(g)), dw from the plain backward.
  Tensor xs0 = ops::affine(x0, 0.5, 0.0);
  Tensor rstd = ops::rmsnorm(xs0, w0, 1e-5).rstd;
  ops::RmsNormGrads r = ops::rmsnorm_backward(g, xs0, w0, rstd);
  Tensor want_dx = ops::affine(ops::add(r.dx, g), 0.5, 0.0);
  expect_close(x.grad(), f64(want_dx), 1e-6, "tape dx0");
  expect_close(w.grad(), f64(r.dw), 1e-6, "tape dw");
}

#endif  // LIZARD_WITH_CUDA
