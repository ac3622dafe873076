// CUDA elementwise ops and row sums against the f64 CPU path on the same values.
#include <gtest/gtest.h>

#include "gpu_test_util.h"
#include "lizard/ops/elementwise.h"
#include "lizard/ops/reduce.h"

using namespace lizard;
using namespace lizard::test;

TEST(GpuElementwise, BinaryBroadcastAllOps) {
  LZ_REQUIRE_GPU();
  // Awkward shapes: broadcast along a middle dim, a size-1 leading dim, an odd contiguous size;
  // a scalar (0-d or one element) against a contiguous operand on either side, with an odd
  // size (the scalar kernel's 16-byte packs and its tail).
  const std::vector<std::pair<Shape, Shape>> shapes = {
      {{3, 5, 7}, {3, 1, 7}}, {{1, 9, 1}, {4, 9, 6}}, {{1001}, {1001}}, {{2, 3}, {3}}, {{1}, {1}},
      {{2, 4099}, {}}, {{1}, {3, 5, 7}}, {{1001}, {1}}};
  for (const DtypeCase& c : {kF32, kBF16, kF16}) {
    for (auto& [sa, sb] : shapes) {
      for (auto op : {ops::BinaryOp::Add, ops::BinaryOp::Sub, ops::BinaryOp::Mul, ops::BinaryOp::Div}) {
        // b in [0.5, 2) keeps division well conditioned.
        Tensor a = gpu_rand(sa, 1, c.dtype), b = gpu_rand(sb, 2, c.dtype, 0.5, 2.0);
        Tensor ref = ops::binary(op, f64(a), f64(b));
        expect_close(ops::binary(op, a, b), ref, c.tol,
                     str_cat(dtype_name(c.dtype), " op ", int(op), " ", shape_str(sa), " ",
                             shape_str(sb), " (", c.why, ")"));
      }
    }
  }
}

TEST(GpuElementwise, InPlaceAddOnStridedView) {
  LZ_REQUIRE_GPU();
  Tensor acc = gpu_rand({6, 8}, 3, DType::F32);
  Tensor view = acc.slice(1, 1, 7, 2);  // non-contiguous [6, 3]
  Tensor b = gpu_rand({6, 3}, 4, DType::F32);
  Tensor before = f64(acc);
  Tensor expect_view = ops::add(f64(view), f64(b));
  ops::add_(view, b);
  expect_close(view, expect_view, 1e-6, "view += b");
  // Columns outside the view are untouched.
  Tensor other = acc.slice(1, 0, 8, 2);
  EXPECT_EQ(max_abs_diff(f64(other), before.slice(1, 0, 8, 2).contiguous()), 0.0);
}

TEST(GpuElementwise, UnaryAndBackwardAllOps) {
  LZ_REQUIRE_GPU();
  using U = ops::UnaryOp;
  for (const DtypeCase& c : {kF32, kBF16, kF16}) {
    for (U op : {U::Exp, U::Log, U::LogSigmoid, U::Sigmoid, U::Silu, U::Neg, U::Square, U::Sqrt,
                 U::Abs}) {
      const bool positive = op == U::Log || op == U::Sqrt;
      // 1037 elements: not a multiple of the 16-byte pack, so the tail path runs too.
      Tensor x = positive ? gpu_rand({1037}, 5, c.dtype, 0.1, 3.0) : gpu_rand({1037}, 5, c.dtype, -4, 4);
      Tensor dy = gpu_rand({1037}, 6, c.dtype);
      const std::string what = str_cat(dtype_name(c.dtype), " unary ", int(op), " (", c.why, ")");
      expect_close(ops::unary(op, x), ops::unary(op, f64(x)), c.tol, what);
      expect_close(ops::unary_backward(op, x, dy), ops::unary_backward(op, f64(x), f64(dy)),
                   c.tol, what + " backward");
    }
  }
}

TEST(GpuElementwise, LogSigmoidStableAtExtremes) {
  LZ_REQUIRE_GPU();
  // log(sigmoid(x)) computed naively underflows to -inf for x < -88 and loses all digits of
  // tiny values for large x; the stable form must match f64 at both ends.
  Tensor x = Tensor::from_vector({-200, -90, -30, -1e-3, 0, 1e-3, 15, 30, 90, 200}, {10}).to(Device::cuda());
  Tensor got = ops::unary(ops::UnaryOp::LogSigmoid, x);
  Tensor ref = ops::unary(ops::UnaryOp::LogSigmoid, f64(x));
  auto g = got.to_vector(), r = ref.to_vector();
  for (size_t i = 0; i < g.size(); ++i) {
    ASSERT_TRUE(std::isfinite(g[i])) << i;
    // Relative 1e-5 or absolute 1e-12 (for x = 200, log sigmoid is -1.4e-87: f32 gives 0).
    EXPECT_LE(std::abs(g[i] - r[i]), std::max(1e-5 * std::abs(r[i]), 1e-12)) << "x index " << i;
  }
}

TEST(GpuElementwise, Affine) {
  LZ_REQUIRE_GPU();
  for (const DtypeCase& c : {kF32, kBF16}) {
    Tensor x = gpu_rand({7, 33}, 7, c.dtype);
    expect_close(ops::affine(x, -1.7, 0.3), ops::affine(f64(x), -1.7, 0.3), c.tol, c.why);
  }
}

TEST(GpuReduce, RowSumRegimes) {
  LZ_REQUIRE_GPU();
  // Short rows (warp per row), long rows (block per row), one very long row (split + ordered
  // second pass), and size-1 dims. Sums of n uniform values in [-1,1) cancel, so compare the
  // error against sum |x| scale: fp32 accumulation error ~ sqrt(n) * 2^-24 relative to that.
  struct C { Shape s; std::vector<int64_t> dims; };
  for (const C& cs : {C{{5, 7}, {1}}, C{{3, 5000}, {1}}, C{{1 << 20}, {}}, C{{2, 300001}, {1}},
                      C{{4, 1, 3}, {0}}, C{{1}, {}}}) {
    for (const DtypeCase& c : {kF32, kBF16}) {
      Tensor x = gpu_rand(cs.s, 8, c.dtype, 0.0, 1.0);  // positive: no cancellation
      Tensor got = ops::sum(x, cs.dims), ref = ops::sum(f64(x), cs.dims);
      expect_close(got, ref, c.dtype == DType::F32 ? 2e-6 : c.tol,
                   str_cat(shape_str(cs.s), " ", dtype_name(c.dtype)));
      // Deterministic: a second run gives the same bits.
      EXPECT_EQ(max_abs_diff(f64(ops::sum(x, cs.dims)), f64(got)), 0.0);
    }
  }
}

