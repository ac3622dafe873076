// autograd::lora_fused (q, k, v LoRA adapters with one down-projection GEMM) against the unfused
// composition LoRALinear runs (per adapter t = x A^T, y = s t B^T + base): outputs and every
// gradient (x, each A, each B) at GQA-like shapes (k, v narrower than q), N odd, r = 1 and 8,
// the A's packed in one buffer or separate; a finite-difference check in f64; an adapter output
// without gradient; two accumulated backward passes; and the GEMM count the fusion saves.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "lizard/autograd/functions.h"
#include "lizard/autograd/lora_fused.h"
#include "lizard/ops/matmul.h"
#include "lizard/ops/shape_ops.h"
#include "test_util.h"

using namespace lizard;
using namespace lizard::autograd;
using lizard::test::check_gradients;
using lizard::test::max_abs_diff;
using lizard::test::rand;

namespace {

constexpr int64_t kN = 37, kIn = 20;
const std::vector<int64_t> kOut = {24, 12, 12};  // q wider than k, v (GQA)

// Inputs of one problem: x0 (the input leaf), frozen base weights W_p, adapters A_p, B_p
// (B random: zero B, its init, would hide every A gradient), output weights G_p for the loss.
struct Problem {
  Tensor x0;
  std::vector<Tensor> w, a, b, g;
  double scale = 2.0;
};

Problem make(int64_t r, DType dt, uint64_t seed) {
  Problem p;
  p.x0 = rand({kN, kIn}, seed, dt);
  for (size_t i = 0; i < 3; ++i) {
    p.w.push_back(rand({kOut[i], kIn}, seed + 10 + i, dt));
    p.a.push_back(rand({r, kIn}, seed + 20 + i, dt));
    p.b.push_back(rand({kOut[i], r}, seed + 30 + i, dt));
    p.g.push_back(rand({kN, kOut[i]}, seed + 40 + i, dt));
  }
  return p;
}

struct Result {
  std::vector<Tensor> y, da, db;
  Tensor dx;
};

// x = 1.5 x0 (a node, so the engine offers its running dx sum to the dx GEMMs as on a model's
// normed input); base_p = x W_p^T (frozen W: only its dx GEMM runs). The adapters unfused, as
// LoRALinear::forward_2d, or fused; `packed`: the A's as row views of one buffer (a_cat).
Result run(const Problem& p, bool fused, bool packed, int passes = 1,
           const std::vector<bool>& use = {true, true, true}) {
  Var x0(p.x0, true);
  std::vector<Var> a, b;
  Tensor a_cat;
  if (packed) {
    a_cat = ops::concat(p.a, 0);
    const int64_t r = p.a[0].size(0);
    for (int64_t i = 0; i < 3; ++i) a.emplace_back(a_cat.slice(0, i * r, (i + 1) * r), true);
  } else {
    for (const Tensor& t : p.a) a.emplace_back(t.clone(), true);
  }
  for (const Tensor& t : p.b) b.emplace_back(t.clone(), true);
  std::vector<Var> y;
  for (int pass = 0; pass < passes; ++pass) {
    Var x = affine(x0, 1.5);
    std::vector<Var> base;
    for (size_t i = 0; i < 3; ++i) base.push_back(matmul(x, Var(p.w[i]), false, true));
    if (fused) {
      y = lora_fused(x, a, b, base, p.scale, a_cat);
    } else {
      y.clear();
      for (size_t i = 0; i < 3; ++i)
        y.push_back(matmul_add(matmul(x, a[i], false, true), b[i], base[i], p.scale, false, true));
    }
    std::vector<Var> roots;
    std::vector<Tensor> grads;
    for (size_t i = 0; i < 3; ++i)
      if (use[i]) {
        roots.push_back(y[i]);
        grads.push_back(p.g[i]);
      }
    backward(roots, grads);
  }
  Result res;
  for (size_t i = 0; i < 3; ++i) {
    res.y.push_back(y[i].data());
    res.da.push_back(a[i].grad());
    res.db.push_back(b[i].grad());
  }
  res.dx = x0.grad();
  return res;
}

// f32, operands in [-1, 1), sums of <= 37 products: the two paths form the same products and
// differ only in BLAS summation order and in dx being rounded once instead of once per adapter,
// a few ulp (2^-24 relative) of the largest value. 1e-6 of the largest |value| (~16 ulp) passes
// that, while a wrong block, scale or missing term is off by O(1) relative.
constexpr double kRelF32 = 1e-6;

// max |got - want| <= kRelF32 * max |want|.
void expect_close(const Tensor& got, const Tensor& want, const std::string& what) {
  double m = 0;
  for (double v : want.to_vector()) m = std::max(m, std::abs(v));
  EXPECT_LE(max_abs_diff(got, want), kRelF32 * m) << what << " (max |want| " << m << ")";
}

void expect_same(const Result& f, const Result& u, const std::string& what) {
  for (size_t i = 0; i < 3; ++i) {
    expect_close(f.y[i], u.y[i], what + " y" + std::to_string(i));
    ASSERT_EQ(f.da[i].defined(), u.da[i].defined()) << what << " dA" << i;
    ASSERT_EQ(f.db[i].defined(), u.db[i].defined()) << what << " dB" << i;
    if (f.da[i].defined()) expect_close(f.da[i], u.da[i], what + " dA" + std::to_string(i));
    if (f.db[i].defined()) expect_close(f.db[i], u.db[i], what + " dB" + std::to_string(i));
  }
  expect_close(f.dx, u.dx, what + " dx");
}

}  // namespace

TEST(LoraFused, MatchesUnfusedOutputsAndEveryGradient) {
  for (int64_t r : {1, 8})
    for (bool packed : {true, false}) {
      const Problem p = make(r, DType::F32, 100 + r);
      const Result u = run(p, false, false), f = run(p, true, packed);
      expect_same(f, u, "r " + std::to_string(r) + (packed ? " packed" : " separate"));
      // The A gradients are rows of one dA_cat kept without copies.
      EXPECT_EQ(f.da[0].storage(), f.da[2].storage()) << "r " << r;
      EXPECT_EQ(static_cast<const char*>(f.da[1].raw()) - static_cast<const char*>(f.da[0].raw()),
                static_cast<std::ptrdiff_t>(r * kIn * 4));
    }
}

TEST(LoraFused, AnAdapterWithoutGradientGetsZeroNotStaleMemory) {
  // Only q and v reach the loss: k's block of dz is never written by its up node. B_k gets no
  // gradient, A_k a zero one (it is a row of dA_cat), exactly as no gradient reaching it.
  const Problem p = make(8, DType::F32, 300);
  const Result u = run(p, false, false, 1, {true, false, true});
  const Result f = run(p, true, true, 1, {true, false, true});
  EXPECT_FALSE(f.db[1].defined());
  ASSERT_TRUE(f.da[1].defined());
  EXPECT_EQ(max_abs_diff(f.da[1], Tensor::zeros(f.da[1].shape(), DType::F32)), 0.0);
  for (size_t i : {0, 2}) {
    expect_close(f.da[i], u.da[i], "dA" + std::to_string(i));
    expect_close(f.db[i], u.db[i], "dB" + std::to_string(i));
  }
  expect_close(f.dx, u.dx, "dx");
}

TEST(LoraFused, TwoBackwardPassesAccumulateIntoTheAdoptedViews) {
  // The second pass adds into the A gradients in place (row views of one buffer): each must get
  // its own sum, the neighbours' rows untouched.
  const Problem p = make(8, DType::F32, 400);
  const Result u = run(p, false, false, 2), f = run(p, true, true, 2);
  expect_same(f, u, "two passes");
}

TEST(LoraFused, SavesSixGemmsOfEighteen) {
  // Per call: unfused 3 x (t, y) forward + 3 x (dt, dB, dA, dx) backward = 18 adapter GEMMs;
  // fused z + 3 y forward, 3 dz + 3 dB + dA_cat + dx backward = 12. Base GEMMs: 3 + 3 dx.
  const Problem p = make(8, DType::F32, 500);
  int64_t before = ops::gemm_count();
  run(p, false, false);
  const int64_t unfused = ops::gemm_count() - before;
  before = ops::gemm_count();
  run(p, true, true);
  const int64_t fused = ops::gemm_count() - before;
  EXPECT_EQ(unfused, 18 + 6);
  EXPECT_EQ(fused, 12 + 6);
}

TEST(LoraFused, FiniteDifferencesF64) {
  // Every input a leaf (x too, so its gradient is not folded), r = 2, bases included; the
  // three outputs joined into one so one weighted sum covers them all.
  const int64_t r = 2, N = 5, in = 4;
  const std::vector<int64_t> out = {6, 3, 3};
  std::vector<Tensor> inputs{rand({N, in}, 600)};
  for (size_t i = 0; i < 3; ++i) inputs.push_back(rand({r, in}, 610 + i));
  for (size_t i = 0; i < 3; ++i) inputs.push_back(rand({out[i], r}, 620 + i));
  for (size_t i = 0; i < 3; ++i) inputs.push_back(rand({N, out[i]}, 630 + i));
  auto f = [&](const std::vector<Var>& v) {
    std::vector<Var> y = lora_fused(v[0], {v[1], v[2], v[3]}, {v[4], v[5], v[6]},
                                    {v[7], v[8], v[9]}, 1.75);
    return concat(y, 1);
  };
  // f64 central differences with eps 1e-6 on a bilinear function: truncation error is zero
  // (cubic terms vanish), rounding ~1e-10; 1e-7 relative leaves margin and catches any O(1) slip.
  check_gradients(f, inputs, 1e-6, 1e-7);
}

TEST(LoraFused, IsRowSplit) {
  Tensor whole = Tensor::zeros({6, 4});
  auto rows = [&](int64_t b, int64_t e) { return whole.slice(0, b, e); };
  EXPECT_TRUE(is_row_split(whole, {rows(0, 2), rows(2, 3), rows(3, 6)}));
  EXPECT_FALSE(is_row_split(whole, {rows(0, 2), rows(3, 6)})) << "gap";
  EXPECT_FALSE(is_row_split(whole, {rows(2, 4), rows(0, 2), rows(4, 6)})) << "out of order";
  EXPECT_FALSE(is_row_split(whole, {rows(0, 2), rows(2, 4)})) << "not all rows";
  EXPECT_FALSE(is_row_split(whole, {rows(0, 3), rows(3, 6).clone()})) << "another buffer";
  EXPECT_FALSE(is_row_split(Tensor(), {whole})) << "no buffer";
}
