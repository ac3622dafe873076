// ops::matmul_add / matmul_add_ (the fused GEMM accumulate) against a naive f64 triple loop,
// at awkward shapes, alpha != 1, transposes, batch broadcast, C separate / in place / aliasing
// an operand, and the bf16 rounding contract (fp32 sum, one rounding).
#include <gtest/gtest.h>

#include "lizard/ops/matmul.h"
#include "test_util.h"

using namespace lizard;
using lizard::test::rand;
using lizard::test::rel_err;

namespace {

// alpha * op(a) op(b) + c in f64 by loops (a [.., M|K, K|M], b 2-D or with a's batch dims).
Tensor naive(const Tensor& a_in, const Tensor& b_in, const Tensor& c_in, double alpha, bool ta,
             bool tb) {
  Tensor a = a_in.to(DType::F64).contiguous(), c = c_in.to(DType::F64).contiguous();
  const int64_t M = ta ? a.size(-1) : a.size(-2), K = ta ? a.size(-2) : a.size(-1);
  const int64_t N = tb ? b_in.size(-2) : b_in.size(-1);
  const int64_t nb = a.numel() / (M * K);
  Tensor b = b_in.to(DType::F64).contiguous();
  const int64_t b_batches = b.numel() / (K * N);
  auto va = a.to_vector(), vb = b.to_vector(), vc = c.to_vector();
  std::vector<double> out(vc.size());
  for (int64_t i = 0; i < nb; ++i) {
    const double* A = va.data() + i * M * K;
    const double* B = vb.data() + (b_batches == 1 ? 0 : i) * K * N;
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        double s = 0;
        for (int64_t k = 0; k < K; ++k)
          s += (ta ? A[k * M + m] : A[m * K + k]) * (tb ? B[n * K + k] : B[k * N + n]);
        const int64_t o = i * M * N + m * N + n;
        out[o] = alpha * s + vc[o];
      }
  }
  return Tensor::from_vector(out, c.shape(), DType::F64);
}

}  // namespace

TEST(MatmulAdd, MatchesNaiveAllTransposesAwkwardShapes) {
  // Odd, prime and size-1 dims; a batched a against a 2-D b (the linear-layer fold) and a
  // batched b (per-batch matrices).
  struct Case {
    Shape a_mk, b_kn;  // as op(a), op(b) before transposes: [.., M, K], [.., K, N]
  };
  const std::vector<Case> cases = {{{7, 13}, {13, 5}}, {{1, 3}, {3, 1}}, {{3, 17, 9}, {9, 11}},
                                   {{2, 5, 6}, {2, 6, 3}}};
  for (const auto& cs : cases)
    for (DType dt : {DType::F32, DType::F64})
      for (int ta = 0; ta < 2; ++ta)
        for (int tb = 0; tb < 2; ++tb) {
          Shape sa = cs.a_mk, sb = cs.b_kn;
          if (ta) std::swap(sa[sa.size() - 1], sa[sa.size() - 2]);
          if (tb) std::swap(sb[sb.size() - 1], sb[sb.size() - 2]);
          Tensor a = rand(sa, 1, dt), b = rand(sb, 2, dt);
          Shape so = cs.a_mk;
          so.back() = cs.b_kn.back();
          Tensor c = rand(so, 3, dt);
          const double alpha = -0.37;
          Tensor got = ops::matmul_add(a, b, c, alpha, ta, tb);
          // f32: K <= 17 products of |x| < 1 summed in fp32 plus C: ~1e-6 relative.
          const double tol = dt == DType::F32 ? 2e-6 : 1e-13;
          EXPECT_LE(rel_err(got.to(DType::F64), naive(a, b, c, alpha, ta, tb)), tol)
              << shape_str(sa) << (ta ? "^T" : "") << " @ " << shape_str(sb) << (tb ? "^T" : "")
              << " " << dtype_name(dt);
        }
}

TEST(MatmulAdd, CIsOnlyReadAndMayAliasAnOperand) {
  Tensor a = rand({6, 6}, 4), b = rand({6, 6}, 5);
  Tensor c = a.clone();
  Tensor want = naive(a, b, c, 2.0, false, true);
  Tensor got = ops::matmul_add(a, b, a, 2.0, false, true);  // c is a itself
  EXPECT_LE(rel_err(got, want), 1e-13);
  EXPECT_EQ(a.to_vector(), c.to_vector()) << "matmul_add wrote its c input";
  // A non-contiguous c (a transposed view) is read by value.
  Tensor ct = rand({6, 6}, 6).transpose(0, 1);
  EXPECT_LE(rel_err(ops::matmul_add(a, b, ct, 0.5), naive(a, b, ct, 0.5, false, false)), 1e-13);
}

TEST(MatmulAdd, InPlaceAccumulatesAndHandlesAliasing) {
  Tensor a = rand({5, 9}, 7), b = rand({9, 4}, 8);
  Tensor c = rand({5, 4}, 9);
  Tensor want = naive(a, b, c, 1.5, false, false);
  const void* before = c.raw();
  ops::matmul_add_(c, a, b, 1.5);
  EXPECT_EQ(c.raw(), before) << "in place must keep c's storage";
  EXPECT_LE(rel_err(c, want), 1e-13);
  // Twice more: the sum keeps accumulating (beta = 1, not 0).
  ops::matmul_add_(c, a, b, 1.5);
  EXPECT_LE(rel_err(c, naive(a, b, want, 1.5, false, false)), 1e-13);
  // c is also an operand (c += c @ s): the product must use c's old values.
  Tensor sq = rand({4, 4}, 10), c2 = rand({5, 4}, 11);
  Tensor want2 = naive(c2, sq, c2, -1.0, false, false);
  ops::matmul_add_(c2, c2, sq, -1.0);
  EXPECT_LE(rel_err(c2, want2), 1e-13);
  // An operand that is another view of c's storage counts as aliasing too: c = rows 0..3 of
  // `big`, the operand the same rows through a second view; rows 4..7 must stay untouched.
  Tensor big = rand({8, 4}, 12);
  const Tensor old = big.clone();
  Tensor dst = big.slice(0, 0, 4);
  const Tensor op = big.slice(0, 0, 4);
  const Tensor rows = old.slice(0, 0, 4).contiguous();
  ops::matmul_add_(dst, op, op, 1.0, false, true);
  EXPECT_LE(rel_err(big.slice(0, 0, 4).contiguous(), naive(rows, rows, rows, 1.0, false, true)),
            1e-13);
  EXPECT_EQ(big.slice(0, 4, 8).contiguous().to_vector(), old.slice(0, 4, 8).contiguous().to_vector());
}

TEST(MatmulAdd, Bf16RoundsOnceAfterTheFp32Sum) {
  // bf16 operands: the CPU reference converts to f32, sums alpha AB + C in fp32 and rounds
  // once (the CUDA epilogue's contract). Its error against the exact f64 value is one bf16
  // rounding (2^-9 relative per element, ~half that norm-wise), while the unfused
  // round(round(alpha AB) + C) carries two roundings.
  Tensor a = rand({33, 70}, 13, DType::BF16), b = rand({70, 19}, 14, DType::BF16);
  Tensor c = rand({33, 19}, 15, DType::BF16);
  const double alpha = 0.75;
  Tensor got = ops::matmul_add(a, b, c, alpha);
  ASSERT_EQ(got.dtype(), DType::BF16);
  Tensor exact = naive(a, b, c, alpha, false, false);
  // The result is exactly the bf16 rounding of the fp32 sum: compare with that, bit for bit
  // up to the fp32 summation order (f32 vs f64 sums differ by ~1e-6, far below bf16's 4e-3
  // spacing, so at most a rare element lands on the other side of a rounding boundary).
  Tensor rounded = exact.to(DType::F32).to(DType::BF16).to(DType::F64);
  auto g = got.to(DType::F64).to_vector(), r = rounded.to_vector(), e = exact.to_vector();
  int differ = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    differ += g[i] != r[i];
    EXPECT_LE(std::abs(g[i] - e[i]), std::abs(e[i]) * std::ldexp(1.0, -8) + 1e-6) << i;
  }
  EXPECT_LE(differ, 3) << "elements not equal to round_bf16(exact)";
  // In place on bf16 gives the same values.
  Tensor c2 = c.clone();
  ops::matmul_add_(c2, a, b, alpha);
  EXPECT_EQ(c2.to_vector(), got.to_vector());
}

TEST(MatmulAdd, RejectsBroadcastCAndCountsOneGemm) {
  Tensor a = rand({4, 3}, 16, DType::F32), b = rand({3, 5}, 17, DType::F32);
  EXPECT_THROW(ops::matmul_add(a, b, rand({1, 5}, 18, DType::F32)), Error);
  EXPECT_THROW(ops::matmul_add(a, b, rand({4, 5}, 18, DType::F64)), Error);
  const int64_t before = ops::gemm_count();
  ops::matmul_add(a, b, rand({4, 5}, 19, DType::F32));
  EXPECT_EQ(ops::gemm_count() - before, 1);
  // The plain matmul's alpha scales inside the GEMM.
  Tensor zero = Tensor::zeros({4, 5}, DType::F32);
  EXPECT_LE(rel_err(ops::matmul(a, b, false, false, -2.5).to(DType::F64),
                    naive(a, b, zero, -2.5, false, false)),
            2e-6);
}
