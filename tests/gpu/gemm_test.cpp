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

// The tuned plans of cuda/gemm.cu (algorithm timed on the device at a plan-cache miss) against
// cuBLASLt's first heuristic on the same operands. Only the algorithm may differ, so the two
// differ only by summation order: each is within one output rounding of the fp32 sum (bf16:
// 2^-9 relative), so at most 2^-8 apart elementwise, 4e-3 norm-wise; f32: ~sqrt(K) ulp, 1e-5.
// The timing runs read the caller's a, b and c and write only out (when it aliases nothing)
// or scratch: a c aliasing out would otherwise come back with alpha AB added several times.
#ifdef LIZARD_WITH_CUDA
#include <cstdlib>

#include "lizard/cuda/gemm.h"

namespace {
struct TuneShape {
  Shape a, b, batch;
  bool ta, tb;
  bool aligned;  // rows 16-byte aligned: bf16 surely has several candidate algorithms
};
// Each GEMM is above kGemmTuneMinFlops per cuBLASLt call, so each is timed. Awkward sizes: odd
// M, odd K and N (2-byte aligned bf16 rows, few algorithms), a strided batch, and a broadcast
// pair the host loop walks (count 2 per call, 2 calls: the timing uses the first's pointers).
const std::vector<TuneShape> kTuneShapes = {
    {{601, 1032}, {1000, 1032}, {}, false, true, true},          // x W^T: forward
    {{601, 1032}, {1032, 1000}, {}, false, false, true},         // dY W: input gradient
    {{1032, 600}, {1032, 1000}, {}, true, false, true},          // dY^T X: weight gradient
    {{601, 1031}, {1001, 1031}, {}, false, true, false},         // odd K and N
    {{3, 261, 1032}, {3, 1032, 704}, {3}, false, false, true},   // strided batch of 3
    {{2, 1, 261, 1032}, {1, 2, 1032, 1096}, {2, 2}, false, false, true}};  // host loop, dim 0

int64_t rows_of(const Shape& s, bool t) { return t ? s[s.size() - 1] : s[s.size() - 2]; }

// The operands expanded to the batch, and a fresh contiguous output, as ops::matmul passes them.
struct TuneCase {
  Tensor a0, b0;  // as allocated (contiguous)
  Tensor a, b;    // expanded to the batch
  Shape out_shape;
};
TuneCase tune_case(const TuneShape& s, DType dt, uint64_t seed) {
  TuneCase c;
  Shape ea = s.batch, eb = s.batch;
  ea.insert(ea.end(), s.a.end() - 2, s.a.end());
  eb.insert(eb.end(), s.b.end() - 2, s.b.end());
  c.a0 = gpu_rand(s.a, seed, dt);
  c.b0 = gpu_rand(s.b, seed + 1, dt);
  c.a = c.a0.expand(ea);
  c.b = c.b0.expand(eb);
  c.out_shape = s.batch;
  c.out_shape.push_back(rows_of(s.a, s.ta));
  c.out_shape.push_back(s.tb ? s.b[s.b.size() - 2] : s.b[s.b.size() - 1]);
  return c;
}

double flops_per_call(const TuneShape& s) {
  // The strided batch cuBLASLt runs per call: the innermost batch dim here.
  const double count = s.batch.empty() ? 1.0 : static_cast<double>(s.batch.back());
  const double M = rows_of(s.a, s.ta), K = s.ta ? s.a[s.a.size() - 2] : s.a.back();
  const double N = s.tb ? s.b[s.b.size() - 2] : s.b.back();
  return 2.0 * M * N * K * count;
}
}  // namespace

TEST(GpuGemmTune, TunedEqualsHeuristicAndLeavesInputsAlone) {
  LZ_REQUIRE_GPU();
  cuda::Context& ctx = cuda::context(0);
  for (const DtypeCase& dc : kGemmCases)
    for (size_t si = 0; si < kTuneShapes.size(); ++si) {
      const TuneShape& s = kTuneShapes[si];
      ASSERT_GE(flops_per_call(s), cuda::kGemmTuneMinFlops) << "shape " << si << " would not be tuned";
      const std::string what = str_cat("shape ", si, " ", dc.why);
      TuneCase tc = tune_case(s, dc.dtype, 40 + si);
      const std::vector<double> a_before = tc.a0.to_vector(), b_before = tc.b0.to_vector();
      const Device dev = Device::cuda();
      Tensor c = gpu_rand(tc.out_shape, 50 + si, dc.dtype);
      const std::vector<double> c_before = c.to_vector();

      // Plain GEMM.
      Tensor ref = Tensor::empty(tc.out_shape, dc.dtype, dev);
      cuda::gemm_batched(tc.a, tc.b, ref, s.ta, s.tb, s.batch, ctx, 1.f, nullptr,
                         cuda::GemmAlgo::Heuristic);
      const cuda::GemmPlanStats before = cuda::gemm_plan_stats(ctx);
      Tensor got = Tensor::empty(tc.out_shape, dc.dtype, dev);
      cuda::gemm_batched(tc.a, tc.b, got, s.ta, s.tb, s.batch, ctx, 1.f, nullptr,
                         cuda::GemmAlgo::Tuned);
      const cuda::GemmPlanStats after = cuda::gemm_plan_stats(ctx);
      expect_close(got, f64(ref), dc.tol, str_cat("tuned gemm ", what));
      EXPECT_EQ(after.plans, before.plans + 1) << what << ": the tuned mode must have its own plan";
      // bf16 has many tensor-core algorithms at these sizes: the timing must have run.
      if (dc.dtype == DType::BF16 && s.aligned) {
        EXPECT_EQ(after.tuned, before.tuned + 1) << what;
        EXPECT_GE(after.candidates_timed, before.candidates_timed + 2) << what;
      }

      // matmul_add with a separate c: c is read, never written.
      const float alpha = -0.625f;
      Tensor ref_add = Tensor::empty(tc.out_shape, dc.dtype, dev);
      cuda::gemm_batched(tc.a, tc.b, ref_add, s.ta, s.tb, s.batch, ctx, alpha, &c,
                         cuda::GemmAlgo::Heuristic);
      Tensor got_add = Tensor::empty(tc.out_shape, dc.dtype, dev);
      cuda::gemm_batched(tc.a, tc.b, got_add, s.ta, s.tb, s.batch, ctx, alpha, &c,
                         cuda::GemmAlgo::Tuned);
      expect_close(got_add, f64(ref_add), dc.tol, str_cat("tuned matmul_add ", what));
      EXPECT_EQ(c.to_vector(), c_before) << what << ": tuning wrote the caller's c";

      // In place, D aliasing C: the timing runs must write scratch, or the result would hold
      // alpha AB several times. The Tuned plan of this problem exists already (the key has no
      // room for aliasing), so this runs as Default with LIZARD_GEMM_TUNE=1.
      Tensor inplace = c.clone();
      const cuda::GemmPlanStats before_ip = cuda::gemm_plan_stats(ctx);
      {
        ScopedEnv tune("LIZARD_GEMM_TUNE", "1");
        cuda::gemm_batched(tc.a, tc.b, inplace, s.ta, s.tb, s.batch, ctx, alpha, &inplace,
                           cuda::GemmAlgo::Default);
      }
      expect_close(inplace, f64(ref_add), dc.tol, str_cat("tuned in-place matmul_add ", what));
      if (dc.dtype == DType::BF16 && s.aligned)
        EXPECT_EQ(cuda::gemm_plan_stats(ctx).tuned, before_ip.tuned + 1) << what << " in place";
      EXPECT_EQ(tc.a0.to_vector(), a_before) << what << ": tuning wrote a";
      EXPECT_EQ(tc.b0.to_vector(), b_before) << what << ": tuning wrote b";
    }
}

TEST(GpuGemmTune, SmallGemmsAndTheEnvSwitchAreNotTimed) {
  LZ_REQUIRE_GPU();
  cuda::Context& ctx = cuda::context(0);
  const Device dev = Device::cuda();
  // A LoRA-sized GEMM (2 x 700 x 8 x 1024 FLOPs) takes the first heuristic even when Tuned.
  {
    Tensor a = gpu_rand({700, 1024}, 60, DType::BF16), b = gpu_rand({8, 1024}, 61, DType::BF16);
    Tensor out = Tensor::empty({700, 8}, DType::BF16, dev);
    const cuda::GemmPlanStats before = cuda::gemm_plan_stats(ctx);
    cuda::gemm_batched(a, b, out, false, true, {}, ctx, 1.f, nullptr, cuda::GemmAlgo::Tuned);
    const cuda::GemmPlanStats after = cuda::gemm_plan_stats(ctx);
    EXPECT_EQ(after.plans, before.plans + 1);
    EXPECT_EQ(after.candidates_timed, before.candidates_timed) << "a tiny GEMM was timed";
    expect_close(out, ops::matmul(f64(a), f64(b), false, true), 4e-3, "tiny tuned-mode GEMM");
  }
  // LIZARD_GEMM_TUNE=1 turns tuning on for the default mode, read at each plan miss; unset
  // or any other value leaves it off. Three fresh problems (their own N) so each is a miss.
  const char* old = std::getenv("LIZARD_GEMM_TUNE");
  const std::string saved = old ? old : "";
  for (const char* value : {"", "0", "1"}) {
    if (*value) setenv("LIZARD_GEMM_TUNE", value, 1);
    else unsetenv("LIZARD_GEMM_TUNE");
    const int64_t n = value[0] == '1' ? 1024 : value[0] == '0' ? 1016 : 1008;
    Tensor a = gpu_rand({640, 1040}, 62, DType::BF16), b = gpu_rand({n, 1040}, 63, DType::BF16);
    Tensor out = Tensor::empty({640, n}, DType::BF16, dev), ref = Tensor::empty({640, n}, DType::BF16, dev);
    const cuda::GemmPlanStats before = cuda::gemm_plan_stats(ctx);
    cuda::gemm_batched(a, b, out, false, true, {}, ctx);
    const cuda::GemmPlanStats after = cuda::gemm_plan_stats(ctx);
    cuda::gemm_batched(a, b, ref, false, true, {}, ctx, 1.f, nullptr, cuda::GemmAlgo::Heuristic);
    EXPECT_EQ(after.plans, before.plans + 1) << "LIZARD_GEMM_TUNE=" << value;
    EXPECT_EQ(after.tuned, before.tuned + (value[0] == '1' ? 1 : 0)) << "LIZARD_GEMM_TUNE=" << value;
    expect_close(out, f64(ref), 4e-3, str_cat("default mode, LIZARD_GEMM_TUNE=", value));
  }
  if (old) setenv("LIZARD_GEMM_TUNE", saved.c_str(), 1);
  else unsetenv("LIZARD_GEMM_TUNE");
}
#endif  // LIZARD_WITH_CUDA
