// Row-strided GEMM operands and outputs (the leading dimension): a column block of a wider
// matrix is read as a or b in place, and matmul_out writes a column block in place, leaving
// the rest of the wider matrix untouched. Checked against an f64 triple loop over the blocks'
// values, at awkward shapes, every transpose, alpha != 1, f32 and f64.
#include <gtest/gtest.h>

#include "lizard/ops/matmul.h"
#include "test_util.h"

using namespace lizard;
using lizard::test::max_abs_diff;
using lizard::test::rand;

namespace {

// alpha op(a) op(b) in f64 by loops, from the values of any 2-D views.
Tensor naive(const Tensor& a_in, const Tensor& b_in, double alpha, bool ta, bool tb) {
  const Tensor a = a_in.to(DType::F64).contiguous(), b = b_in.to(DType::F64).contiguous();
  const int64_t M = ta ? a.size(1) : a.size(0), K = ta ? a.size(0) : a.size(1);
  const int64_t N = tb ? b.size(0) : b.size(1);
  const auto va = a.to_vector(), vb = b.to_vector();
  std::vector<double> out(static_cast<size_t>(M * N));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k)
        s += (ta ? va[k * M + m] : va[m * K + k]) * (tb ? vb[n * K + k] : vb[k * N + n]);
      out[m * N + n] = alpha * s;
    }
  return Tensor::from_vector(out, {M, N}, DType::F64);
}

// Column block [col, col + cols) of a fresh random [rows, wide] matrix: row stride `wide`.
Tensor block(int64_t rows, int64_t cols, int64_t wide, int64_t col, uint64_t seed, DType dt) {
  return rand({rows, wide}, seed, dt).slice(1, col, col + cols);
}

// f32 products of K <= 13 terms in [-1, 1): |error| <= K * 2^-24 * (sum |terms|) < 1e-5.
// f64: the same order of summation as the loop or BLAS, 1e-12 is a wide margin.
double tol(DType dt) { return dt == DType::F32 ? 1e-5 : 1e-12; }

}  // namespace

TEST(MatmulStrided, ColumnBlockOperandsReadInPlace) {
  // op(a) [7, 13], op(b) [13, 5]; each stored as a column block (offset 2) of a wider matrix.
  const int64_t M = 7, K = 13, N = 5;
  for (DType dt : {DType::F32, DType::F64})
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb) {
        const Tensor a = ta ? block(K, M, M + 4, 2, 1, dt) : block(M, K, K + 3, 2, 1, dt);
        const Tensor b = tb ? block(N, K, K + 5, 2, 2, dt) : block(K, N, N + 6, 2, 2, dt);
        ASSERT_FALSE(a.is_contiguous());
        const Tensor c = rand({M, N}, 3, dt);
        const Tensor want = naive(a, b, 1.5, ta, tb);
        EXPECT_LE(max_abs_diff(ops::matmul(a, b, ta, tb, 1.5), want), tol(dt))
            << "matmul ta " << ta << " tb " << tb;
        const auto vc = c.to_vector();
        auto vw = want.to_vector();
        for (size_t i = 0; i < vw.size(); ++i) vw[i] += vc[i];
        EXPECT_LE(max_abs_diff(ops::matmul_add(a, b, c, 1.5, ta, tb),
                               Tensor::from_vector(vw, want.shape(), DType::F64)),
                  tol(dt))
            << "matmul_add ta " << ta << " tb " << tb;
      }
}

TEST(MatmulStrided, MatmulOutWritesOneColumnBlockOnly) {
  // out = a column block [37, 3) of a [37, 9] buffer (three r = 3 blocks: the fused LoRA dz);
  // N odd, K = 11. Every other element of the buffer must keep its sentinel.
  const int64_t M = 37, K = 11, N = 3, wide = 9;
  for (DType dt : {DType::F32, DType::F64})
    for (int64_t col : {0, 3, 6})
      for (int ta = 0; ta < 2; ++ta)
        for (int tb = 0; tb < 2; ++tb) {
          const Tensor a = rand(ta ? Shape{K, M} : Shape{M, K}, 4, dt);
          const Tensor b = rand(tb ? Shape{N, K} : Shape{K, N}, 5, dt);
          Tensor buf = Tensor::full({M, wide}, 7.25, dt);
          Tensor out = buf.slice(1, col, col + N);
          ops::matmul_out(out, a, b, -0.5, ta, tb);
          EXPECT_LE(max_abs_diff(out, naive(a, b, -0.5, ta, tb)), tol(dt))
              << "col " << col << " ta " << ta << " tb " << tb;
          const auto v = buf.to_vector();
          int64_t touched = 0;
          for (int64_t m = 0; m < M; ++m)
            for (int64_t j = 0; j < wide; ++j)
              if ((j < col || j >= col + N) && v[m * wide + j] != 7.25) ++touched;
          EXPECT_EQ(touched, 0) << "elements outside the block were written (col " << col << ")";
        }
}

TEST(MatmulStrided, MatmulOutRejectsAnOverlappingOrBadOutput) {
  const Tensor a = rand({4, 5}, 6, DType::F32), b = rand({5, 3}, 7, DType::F32);
  Tensor wrong = Tensor::empty({4, 4}, DType::F32);
  EXPECT_THROW(ops::matmul_out(wrong, a, b), Error);
  Tensor transposed = Tensor::empty({3, 4}, DType::F32).transpose(0, 1);
  EXPECT_THROW(ops::matmul_out(transposed, a, b), Error) << "inner stride != 1 must be refused";
  Tensor alias = a.slice(1, 0, 3);
  EXPECT_THROW(ops::matmul_out(alias, a, b), Error) << "out overlapping an operand";
}
