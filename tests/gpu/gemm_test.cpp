// CUDA GEMMs: matmul, matmul_add (cuBLASLt with beta = 1 and a separate C) and the layers that
// use it, against the f64 CPU path on the same values.
#include <gtest/gtest.h>

#include "gpu_test_util.h"
#include "lizard/autograd/functions.h"
#include "lizard/nn/linear.h"
#include "lizard/nn/llama.h"
#include "lizard/ops/matmul.h"

using namespace lizard;
using namespace lizard::test;
namespace ag = lizard::autograd;
using lizard::autograd::Var;

namespace {
// bf16: operands exact in the oracle, alpha AB + C summed in fp32 and rounded once to bf16
// (2^-9 relative), so 4e-3 as the plain GEMM. f32: cuBLASLt fp32 (no TF32), ~sqrt(K) ulp.
const std::vector<DtypeCase> kGemmCases = {DtypeCase{DType::F32, 1e-5, "fp32"},
                                           DtypeCase{DType::BF16, 4e-3, "bf16 out"}};
struct GemmShape { Shape a, b; bool ta, tb; };
// Every transpose, batches with and without broadcast, 1 x 1, and two layer-like sizes.
const std::vector<GemmShape> kShapes = {
    {{17, 33}, {33, 9}, false, false},      {{33, 17}, {33, 9}, true, false},
    {{17, 33}, {9, 33}, false, true},       {{33, 17}, {9, 33}, true, true},
    {{3, 17, 33}, {33, 9}, false, false},   // weight shared by the batch: folded into M
    {{3, 33, 17}, {33, 9}, true, false},    // same with a^T: stride-0 batch in cuBLASLt
    {{2, 3, 1, 64}, {2, 3, 64, 5}, false, false},
    {{4, 1, 5, 8}, {1, 3, 8, 6}, false, false},  // both broadcast: host loop over the outer dim
    {{1, 1}, {1, 1}, false, false},
    {{128, 256}, {256, 96}, false, false},
    {{300, 512}, {96, 512}, false, true}};  // a LoRA-like x W^T
std::string shape_name(const GemmShape& s) {
  return str_cat(shape_str(s.a), (s.ta ? "^T" : ""), " @ ", shape_str(s.b), (s.tb ? "^T" : ""));
}
}  // namespace

TEST(GpuGemm, TransposesAndBatchBroadcast) {
  LZ_REQUIRE_GPU();
  // bf16 operands are exact in the oracle (it reads the same bf16 values); the product is
  // accumulated in fp32 and rounded once to bf16 (2^-9), so 4e-3. f32: cuBLASLt fp32 (no
  // TF32), error ~ sqrt(K) ulp: 1e-5.
  for (const DtypeCase& c : kGemmCases)
    for (const GemmShape& cs : kShapes) {
      Tensor a = gpu_rand(cs.a, 9, c.dtype), b = gpu_rand(cs.b, 10, c.dtype);
      expect_close(ops::matmul(a, b, cs.ta, cs.tb), ops::matmul(f64(a), f64(b), cs.ta, cs.tb),
                   c.tol, str_cat(shape_name(cs), " ", c.why));
    }
}

TEST(GpuGemm, MisalignedSliceOperand) {
  LZ_REQUIRE_GPU();
  // A view starting one element in is only 2-byte aligned: the plan must not promise 16.
  Tensor big = gpu_rand({8 * 16 + 1}, 11, DType::BF16);
  Tensor a = big.slice(0, 1, 8 * 16 + 1).view({8, 16});
  Tensor b = gpu_rand({16, 8}, 12, DType::BF16);
  expect_close(ops::matmul(a, b), ops::matmul(f64(a), f64(b)), 4e-3, "misaligned bf16");
}


TEST(GpuGemmAdd, TransposesBatchesAlphaSeparateC) {
  LZ_REQUIRE_GPU();
  for (const DtypeCase& c : kGemmCases)
    for (const GemmShape& cs : kShapes)
      for (double alpha : {1.0, -0.625}) {
        Tensor a = gpu_rand(cs.a, 9, c.dtype), b = gpu_rand(cs.b, 10, c.dtype);
        Tensor out_shape_probe = ops::matmul(f64(a), f64(b), cs.ta, cs.tb);
        Tensor cc = gpu_rand(out_shape_probe.shape(), 11, c.dtype);
        const std::vector<double> c_before = cc.to_vector();
        Tensor ref = ops::matmul_add(f64(a), f64(b), f64(cc), alpha, cs.ta, cs.tb);
        expect_close(ops::matmul_add(a, b, cc, alpha, cs.ta, cs.tb), ref, c.tol,
                     str_cat(shape_name(cs), " alpha ", alpha, " ", c.why));
        EXPECT_EQ(cc.to_vector(), c_before) << "matmul_add wrote its c input";
        // The same sum in place.
        ops::matmul_add_(cc, a, b, alpha, cs.ta, cs.tb);
        expect_close(cc, ref, c.tol, str_cat("in place ", shape_str(cs.a), " ", c.why));
        // The plain GEMM's alpha.
        expect_close(ops::matmul(a, b, cs.ta, cs.tb, alpha),
                     ops::matmul(f64(a), f64(b), cs.ta, cs.tb, alpha), c.tol, "matmul alpha");
      }
}

TEST(GpuGemmAdd, InPlaceWithCAliasingAnOperand) {
  LZ_REQUIRE_GPU();
  for (const DtypeCase& c : kGemmCases) {
    Tensor x = gpu_rand({40, 24}, 12, c.dtype), s = gpu_rand({24, 24}, 13, c.dtype);
    Tensor ref = ops::matmul_add(f64(x), f64(s), f64(x), 0.5);
    ops::matmul_add_(x, x, s, 0.5);  // x += 0.5 x s: must read x's old values
    expect_close(x, ref, c.tol, str_cat("c aliases a ", c.why));
  }
}

TEST(GpuGemmAdd, MisalignedC) {
  LZ_REQUIRE_GPU();
  // C starting one element into its buffer is only 2-byte aligned while D is fresh: the plan
  // promises the alignment both satisfy.
  Tensor big = gpu_rand({16 * 8 + 1}, 14, DType::BF16);
  Tensor c = big.slice(0, 1, 16 * 8 + 1).view({16, 8});
  Tensor a = gpu_rand({16, 32}, 15, DType::BF16), b = gpu_rand({32, 8}, 16, DType::BF16);
  expect_close(ops::matmul_add(a, b, c, 2.0), ops::matmul_add(f64(a), f64(b), f64(c), 2.0), 4e-3,
               "misaligned bf16 c");
}

TEST(GpuGemmAdd, Bf16RoundsOnceAfterTheFp32Sum) {
  LZ_REQUIRE_GPU();
  // Every element is round_bf16(fp32 sum): against round_bf16(exact f64) it may differ only
  // where the fp32 sum order moves a value across a rounding boundary (rare).
  Tensor a = gpu_rand({64, 256}, 17, DType::BF16), b = gpu_rand({256, 48}, 18, DType::BF16);
  Tensor c = gpu_rand({64, 48}, 19, DType::BF16, -8.0, 8.0);
  Tensor exact = ops::matmul_add(f64(a), f64(b), f64(c), 0.25);
  auto got = f64(ops::matmul_add(a, b, c, 0.25)).to_vector();
  auto want = exact.to(DType::F32).to(DType::BF16).to(DType::F64).to_vector();
  int differ = 0;
  for (size_t i = 0; i < got.size(); ++i) differ += got[i] != want[i];
  EXPECT_LE(differ, static_cast<int>(got.size() / 100)) << "elements off round_bf16(exact)";
}

TEST(GpuGemmAdd, LoraLinearWithResidualMatchesF64) {
  LZ_REQUIRE_GPU();
  // The fused LoRA projection (base GEMM with the residual as C, then the up-projection with
  // alpha / r and base as C) on the GPU against the same module in f64 on the CPU.
  for (const DtypeCase& c : kGemmCases) {
    nn::LoraConfig lc{8, 16.0, 0.0};
    nn::LoRALinear g(256, 96, false, lc, 3, 0, c.dtype, Device::cuda());
    nn::LoRALinear h(256, 96, false, lc, 3, 0, DType::F64, Device::cpu());
    Var gw = g.weight(), ga = g.lora_a(), gb = g.lora_b();
    Var hw = h.weight(), ha = h.lora_a(), hb = h.lora_b();
    gw.set_data(gpu_rand({96, 256}, 20, c.dtype, -0.1, 0.1));
    gb.set_data(gpu_rand({96, 8}, 21, c.dtype));
    hw.set_data(f64(gw.data()));
    ha.set_data(f64(ga.data()));
    hb.set_data(f64(gb.data()));
    Tensor x = gpu_rand({2, 150, 256}, 22, c.dtype), r = gpu_rand({2, 150, 96}, 23, c.dtype);
    Tensor dy = gpu_rand({2, 150, 96}, 24, c.dtype);
    Var xg(x, true), rg(r, true), xh(f64(x), true), rh(f64(r), true);
    Var yg = g.forward_add(xg, rg), yh = h.forward_add(xh, rh);
    yg.backward(dy);
    yh.backward(f64(dy));
    // Gradients pass through one or two bf16-rounded GEMM outputs (dt = alpha dy B, then
    // dx = dt A + dy W): 2 roundings -> 8e-3 for bf16.
    const double gt = c.dtype == DType::BF16 ? 8e-3 : 1e-5;
    expect_close(yg.data(), yh.data(), c.tol, str_cat("y ", c.why));
    expect_close(xg.grad(), xh.grad(), gt, "dx");
    expect_close(rg.grad(), rh.grad(), 0.0, "dresidual (dy itself)");
    expect_close(ga.grad(), ha.grad(), gt, "dA");
    expect_close(gb.grad(), hb.grad(), gt, "dB");
  }
}
