// The fused q/k/v LoRA on the GPU: cuBLASLt with row-strided operands and a row-strided output
// (ldc), then autograd::lora_fused against the unfused per-adapter GEMMs, both against the f64
// CPU oracle of the same values, in bf16 and f32.
#include <gtest/gtest.h>

#include "gpu_test_util.h"
#include "lizard/autograd/functions.h"
#include "lizard/autograd/lora_fused.h"
#include "lizard/ops/matmul.h"
#include "lizard/ops/shape_ops.h"

using namespace lizard;
using namespace lizard::test;
namespace ag = lizard::autograd;
using lizard::autograd::Var;

TEST(GpuLoraFused, StridedOperandsAndColumnBlockOutput) {
  LZ_REQUIRE_GPU();
  // z [300, 24] holds three r = 8 blocks (the fused LoRA z / dz); block 1 as the a operand
  // (lda 24, 16-byte offset in bf16) and as the b operand of dB = G^T z_1; matmul_out writes
  // block 2 and must leave blocks 0 and 1 alone. bf16: one rounding of an fp32 sum, 4e-3.
  for (const DtypeCase& c : {kF32, kBF16}) {
    const Tensor z = gpu_rand({300, 24}, 1, c.dtype);
    const Tensor z1 = z.slice(1, 8, 16);
    const Tensor bq = gpu_rand({96, 8}, 2, c.dtype), g = gpu_rand({300, 96}, 3, c.dtype);
    expect_close(ops::matmul(z1, bq, false, true, 2.0),
                 ops::matmul(f64(z1), f64(bq), false, true, 2.0), c.tol, str_cat("y ", c.why));
    expect_close(ops::matmul(g, z1, true, false, 2.0),
                 ops::matmul(f64(g), f64(z1), true, false, 2.0), c.tol, str_cat("dB ", c.why));
    Tensor buf = Tensor::full({300, 24}, 7.25, c.dtype, Device::cuda());
    Tensor blk = buf.slice(1, 16, 24);
    ops::matmul_out(blk, g, bq, 2.0);
    expect_close(blk, ops::matmul(f64(g), f64(bq), false, false, 2.0), c.tol,
                 str_cat("dz ", c.why));
    const Tensor rest = f64(buf.slice(1, 0, 16));
    for (double v : rest.to_vector()) ASSERT_EQ(v, 7.25) << "matmul_out wrote outside its block";
  }
}

TEST(GpuLoraFused, MatchesUnfusedAndTheF64Oracle) {
  LZ_REQUIRE_GPU();
  // q, k, v adapters on x [2, 333, 512] (N = 666 rows, GQA: k, v 128 wide, q 512), alpha / r 2,
  // r = 8 and r = 1 (lda 3: 2-byte aligned blocks). B random (zero at init would hide every A
  // gradient). The reshape node x2 gets the base projections' dx sum folded into the dx GEMM.
  const int64_t B = 2, T = 333, in = 512;
  const std::vector<int64_t> outs = {512, 128, 128};
  for (const DtypeCase& c : {kF32, kBF16})
    for (int64_t r : {8, 1}) {
      Tensor x0 = gpu_rand({B, T, in}, 10, c.dtype);
      std::vector<Tensor> w, a, b, g;
      for (size_t i = 0; i < 3; ++i) {
        w.push_back(gpu_rand({outs[i], in}, 20 + i, c.dtype, -0.1, 0.1));
        a.push_back(gpu_rand({r, in}, 30 + i, c.dtype, -0.05, 0.05));
        b.push_back(gpu_rand({outs[i], r}, 40 + i, c.dtype));
        g.push_back(gpu_rand({B * T, outs[i]}, 50 + i, c.dtype));
      }
      struct Out {
        std::vector<Tensor> y, da, db;
        Tensor dx;
      };
      // mode 0: unfused, 1: fused on a packed A buffer, 2: f64 CPU oracle (unfused).
      auto run = [&](int mode) {
        auto dev = [&](const Tensor& t) { return mode == 2 ? f64(t) : t; };
        Var x(dev(x0), true);
        Tensor a_cat = mode == 1 ? ops::concat(a, 0) : Tensor();
        std::vector<Var> av, bv, base;
        for (int64_t i = 0; i < 3; ++i) {
          av.emplace_back(mode == 1 ? a_cat.slice(0, i * r, (i + 1) * r) : dev(a[i]).clone(), true);
          bv.emplace_back(dev(b[i]).clone(), true);
        }
        Var x2 = ag::reshape(x, {B * T, in});
        for (size_t i = 0; i < 3; ++i) base.push_back(ag::matmul(x2, Var(dev(w[i])), false, true));
        std::vector<Var> y;
        if (mode == 1) {
          y = ag::lora_fused(x2, av, bv, base, 2.0, a_cat);
        } else {
          for (size_t i = 0; i < 3; ++i)
            y.push_back(ag::matmul_add(ag::matmul(x2, av[i], false, true), bv[i], base[i], 2.0,
                                       false, true));
        }
        ag::backward(y, {dev(g[0]), dev(g[1]), dev(g[2])});
        Out o;
        for (size_t i = 0; i < 3; ++i) {
          o.y.push_back(y[i].data());
          o.da.push_back(av[i].grad());
          o.db.push_back(bv[i].grad());
        }
        o.dx = x.grad();
        return o;
      };
      const Out ref = run(2), unf = run(0), fus = run(1);
      // bf16: outputs are one rounding of an fp32 sum whose inputs (base, t) were rounded once
      // each: 4e-3 (as GpuGemmAdd.LoraLinearWithResidualMatchesF64); gradients pass through up
      // to two bf16-rounded GEMM outputs (dz = s G B, then dA = dz^T x or dx = dz A + G W): 8e-3.
      // f32: cuBLASLt fp32 (no TF32), ~sqrt(K) ulp: 1e-5.
      const double gt = c.dtype == DType::BF16 ? 8e-3 : 1e-5;
      for (const Out* o : {&unf, &fus}) {
        const std::string what = str_cat(o == &fus ? "fused" : "unfused", " r ", r, " ", c.why);
        for (size_t i = 0; i < 3; ++i) {
          expect_close(o->y[i], ref.y[i], c.tol, str_cat(what, " y", i));
          expect_close(o->da[i], ref.da[i], gt, str_cat(what, " dA", i));
          expect_close(o->db[i], ref.db[i], gt, str_cat(what, " dB", i));
        }
        expect_close(o->dx, ref.dx, gt, str_cat(what, " dx"));
      }
    }
}
