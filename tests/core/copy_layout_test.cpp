// collapse_layout / layout_is_flat / layout_fits_int32 (copy_layout.h) against brute-force
// enumeration of the (src, dst) offset of every element: the GPU strided copy runs the
// collapsed layout, so any difference here would be a wrong element on the GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <utility>
#include <vector>

#include "lizard/cuda/copy_layout.h"

using lizard::cuda::collapse_layout;
using lizard::cuda::kMaxDims;
using lizard::cuda::layout_fits_int32;
using lizard::cuda::layout_is_flat;
using lizard::cuda::StridedLayout;

namespace {

using Offsets = std::vector<std::pair<int64_t, int64_t>>;

int64_t numel_of(const StridedLayout& l) {
  int64_t n = 1;
  for (int d = 0; d < l.ndim; ++d) n *= l.shape[d];
  return n;
}

// The reference walk: row-major index -> offsets, written independently of the kernel (an
// odometer over the dims rather than div/mod).
Offsets enumerate(const StridedLayout& l) {
  Offsets out;
  const int64_t n = numel_of(l);
  std::vector<int64_t> idx(static_cast<size_t>(l.ndim), 0);
  for (int64_t i = 0; i < n; ++i) {
    int64_t s = 0, d = 0;
    for (int k = 0; k < l.ndim; ++k) {
      s += idx[k] * l.src_stride[k];
      d += idx[k] * l.dst_stride[k];
    }
    out.emplace_back(s, d);
    for (int k = l.ndim - 1; k >= 0; --k) {
      if (++idx[k] < l.shape[k]) break;
      idx[k] = 0;
    }
  }
  return out;
}

StridedLayout make(std::vector<int64_t> shape, std::vector<int64_t> ss, std::vector<int64_t> ds) {
  StridedLayout l;
  l.ndim = static_cast<int>(shape.size());
  for (int d = 0; d < l.ndim; ++d) {
    l.shape[d] = shape[d];
    l.src_stride[d] = ss[d];
    l.dst_stride[d] = ds[d];
  }
  return l;
}

std::vector<int64_t> contiguous(const std::vector<int64_t>& shape) {
  std::vector<int64_t> s(shape.size(), 1);
  for (int d = static_cast<int>(shape.size()) - 2; d >= 0; --d) s[d] = s[d + 1] * shape[d + 1];
  return s;
}

void expect_same_walk(const StridedLayout& l, const char* what) {
  const StridedLayout c = collapse_layout(l);
  ASSERT_GE(c.ndim, 1) << what;
  ASSERT_LE(c.ndim, std::max(l.ndim, 1)) << what;
  EXPECT_EQ(numel_of(c), numel_of(l)) << what;
  EXPECT_EQ(enumerate(c), enumerate(l)) << what;
}

}  // namespace

TEST(CopyLayout, ContiguousCollapsesToOneFlatDim) {
  const std::vector<int64_t> shape{3, 5, 1, 7};  // a size-1 dim in the middle, odd sizes
  const StridedLayout l = make(shape, contiguous(shape), contiguous(shape));
  const StridedLayout c = collapse_layout(l);
  ASSERT_EQ(c.ndim, 1);
  EXPECT_EQ(c.shape[0], 105);
  EXPECT_TRUE(layout_is_flat(c));
  expect_same_walk(l, "contiguous");
}

TEST(CopyLayout, SizeOneDimsWithArbitraryStridesAreDropped) {
  // A [1, 4, 1] view whose size-1 dims carry strides that match nothing (as after a slice).
  const StridedLayout l = make({1, 4, 1}, {999, 1, 77}, {4, 1, 5});
  EXPECT_TRUE(layout_is_flat(collapse_layout(l)));
  expect_same_walk(l, "size-1 dims");
}

TEST(CopyLayout, ScalarAndSingleElementAreFlat) {
  StridedLayout scalar;
  scalar.ndim = 0;
  const StridedLayout c = collapse_layout(scalar);
  EXPECT_EQ(c.ndim, 1);
  EXPECT_EQ(c.shape[0], 1);
  EXPECT_TRUE(layout_is_flat(c));
  EXPECT_EQ(enumerate(c), Offsets({{0, 0}}));
  EXPECT_TRUE(layout_is_flat(collapse_layout(make({1, 1}, {3, 9}, {1, 1}))));
}

TEST(CopyLayout, TransposeIsNotFlatButKeepsContiguousRuns) {
  // [B, H, T, D] destination (contiguous) from a [B, T, H, D] source transposed: no two
  // adjacent dims merge in both operands, so all 4 dims stay and the copy is not flat.
  const int64_t B = 2, T = 3, H = 4, D = 5;
  const StridedLayout l = make({B, H, T, D}, {T * H * D, D, H * D, 1}, contiguous({B, H, T, D}));
  const StridedLayout c = collapse_layout(l);
  EXPECT_EQ(c.ndim, 4);
  EXPECT_FALSE(layout_is_flat(c));
  expect_same_walk(l, "transpose");
  // Swapping B and H instead leaves [T, D] contiguous in both: they merge, giving
  // [H, B, T * D].
  const StridedLayout l2 = make({H, B, T, D}, {T * D, H * T * D, D, 1}, contiguous({H, B, T, D}));
  EXPECT_EQ(collapse_layout(l2).ndim, 3);
  EXPECT_EQ(collapse_layout(l2).shape[2], T * D);
  expect_same_walk(l2, "outer transpose");
}

TEST(CopyLayout, StridedSliceAndBroadcastAreNotFlat) {
  // Every other column of a [4, 6] tensor into a contiguous [4, 3].
  const StridedLayout slice = make({4, 3}, {6, 2}, {3, 1});
  EXPECT_FALSE(layout_is_flat(collapse_layout(slice)));
  expect_same_walk(slice, "step-2 slice");
  // Rows 1..3 of all columns of a [4, 6] tensor: one contiguous run in both operands.
  const StridedLayout rows = make({3, 6}, {6, 1}, {6, 1});
  EXPECT_TRUE(layout_is_flat(collapse_layout(rows)));
  // A broadcast (stride 0) source: [5] expanded to [3, 5] merges nothing with the dst.
  const StridedLayout bc = make({3, 5}, {0, 1}, {5, 1});
  EXPECT_FALSE(layout_is_flat(collapse_layout(bc)));
  expect_same_walk(bc, "broadcast");
  // A scalar broadcast to [3, 5]: the source dims merge (stride 0 both) and so do the dst's.
  const StridedLayout all0 = make({3, 5}, {0, 0}, {5, 1});
  EXPECT_EQ(collapse_layout(all0).ndim, 1);
  EXPECT_FALSE(layout_is_flat(collapse_layout(all0)));
  expect_same_walk(all0, "scalar broadcast");
}

TEST(CopyLayout, ZeroSizeIsReturnedUnchanged) {
  const StridedLayout l = make({3, 0, 2}, {0, 2, 1}, {0, 2, 1});
  const StridedLayout c = collapse_layout(l);
  EXPECT_EQ(c.ndim, 3);
  EXPECT_EQ(c.shape[1], 0);
}

TEST(CopyLayout, RandomViewsWalkTheSameOffsets) {
  // Random shapes (sizes 1..4, up to kMaxDims dims), each operand a padded parent (slice),
  // randomly permuted (transpose), sometimes with a broadcast dim: the collapsed walk must
  // visit the same (src, dst) pair for every element.
  std::mt19937 rng(1234);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  auto view_strides = [&](const std::vector<int64_t>& shape) {
    const size_t nd = shape.size();
    std::vector<int> perm(nd);
    std::iota(perm.begin(), perm.end(), 0);
    if (pick(0, 1)) std::shuffle(perm.begin(), perm.end(), rng);
    // Parent laid out in permuted order, each dim padded by 0..1 (a slice of a bigger tensor).
    std::vector<int64_t> st(nd);
    int64_t acc = 1;
    for (int k = static_cast<int>(nd) - 1; k >= 0; --k) {
      const int d = perm[k];
      st[d] = acc;
      acc *= shape[d] + (pick(0, 3) == 0 ? 1 : 0);
    }
    if (nd > 0 && pick(0, 5) == 0) st[pick(0, static_cast<int>(nd) - 1)] = 0;  // broadcast
    return st;
  };
  int flat = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::vector<int64_t> shape(static_cast<size_t>(pick(0, kMaxDims)));
    for (auto& s : shape) s = pick(1, 4);
    int64_t n = 1;
    for (auto s : shape) n *= s;
    if (n > 4096) continue;  // keep the enumeration cheap
    const StridedLayout l = make(shape, view_strides(shape), view_strides(shape));
    const StridedLayout c = collapse_layout(l);
    ASSERT_EQ(enumerate(c), enumerate(l)) << "trial " << trial;
    if (layout_is_flat(c)) {
      ++flat;
      // Flat means element i at offset i in both operands.
      const Offsets w = enumerate(l);
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(w[i], std::make_pair(i, i)) << "trial " << trial;
    }
  }
  EXPECT_GT(flat, 50);  // the generator does produce contiguous pairs, so "flat" is exercised
}

TEST(CopyLayout, Int32FitBound) {
  EXPECT_TRUE(layout_fits_int32(make({1 << 20}, {1}, {1}), 1 << 20));
  EXPECT_FALSE(layout_fits_int32(make({int64_t(1) << 31}, {1}, {1}), int64_t(1) << 31));
  // Few elements, but the last source offset is (2 - 1) * 2^31.
  EXPECT_FALSE(layout_fits_int32(make({2, 3}, {int64_t(1) << 31, 1}, {3, 1}), 6));
  // Largest offset exactly 2^31 - 1 fits.
  EXPECT_TRUE(layout_fits_int32(make({2, 1}, {0x7fffffff, 1}, {1, 1}), 2));
  // A huge stride times a large extent must not overflow int64 in the check itself.
  EXPECT_FALSE(layout_fits_int32(make({1 << 20, 2}, {int64_t(1) << 50, 1}, {2, 1}), 1 << 21));
}
