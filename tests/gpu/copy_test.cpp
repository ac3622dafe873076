// GPU dtype conversion and strided copies (cuda/copy.cu) against the CPU conversion, bit for
// bit: the flat vectorised path (contiguous operands, aligned or not), the general div/mod
// walk (transposes, step slices, broadcasts, strided destinations) with 32- and 64-bit index
// math. The CPU path converts through double (from_double(to_double)); for the values used
// here that is exactly the GPU's convert<D> (see value_pool), so no tolerance is needed.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gpu_test_util.h"
#include "lizard/core/cuda_runtime.h"
#include "lizard/cuda/copy.h"

using namespace lizard;
using namespace lizard::test;

namespace {

const DType kAll[] = {DType::F32, DType::BF16, DType::F16, DType::F64,
                      DType::I32, DType::I64,  DType::U8};

bool is_int(DType t) { return !dtype_is_float(t); }

// n source values that convert the same way on both paths for the pair (s, d):
// - a float -> integer conversion is defined only in range: values in [-250, 250) with
//   fractions (truncation is exercised), [0, 250) where u8 is involved (negatives to u8
//   are undefined in C++); integer -> integer likewise stays in [0, 250);
// - integer -> float: integers of magnitude up to 2^30 (exact in double, so the CPU's
//   trip through double rounds once, like the GPU's int -> float cast);
// - float -> float: a mix of [-1, 1), wide magnitudes 2^-30..2^20 (f16 overflow and
//   subnormals, bf16 rounding) and specials (+-0, +-inf, NaN, f16 max and its rounding
//   edge, an f32 subnormal, bf16 ties) at the start, so even n = 5 sees some.
std::vector<double> value_pool(DType s, DType d, int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<double> v(static_cast<size_t>(n));
  const bool u8 = s == DType::U8 || d == DType::U8;
  if (is_int(d) || (is_int(s) && u8)) {
    const double lo = (u8 || is_int(s)) ? 0.0 : -250.0;
    for (auto& x : v) x = is_int(s) ? std::floor(lo + (250.0 - lo) * u(rng)) : lo + (250.0 - lo) * u(rng);
    return v;
  }
  if (is_int(s)) {
    for (auto& x : v) x = std::floor((u(rng) * 2.0 - 1.0) * 1073741824.0);
    return v;
  }
  const double inf = std::numeric_limits<double>::infinity();
  const double specials[] = {0.0,     -0.0,   inf,     -inf,     std::nan(""),
                             65504.0, 65520.0, 1e-40,  -3e-8,    1.0 + 1.0 / 256,
                             1.0 + 3.0 / 256,  -2.5,   1.0 + 1.0 / 2048, 3.0e38};
  for (size_t i = 0; i < v.size(); ++i) {
    if (i < std::size(specials)) {
      v[i] = specials[i];
    } else if (i % 3 == 0) {
      v[i] = u(rng) * 2.0 - 1.0;
    } else {
      const double mag = std::ldexp(1.0 + u(rng), static_cast<int>(u(rng) * 50) - 30);
      v[i] = (i % 2 ? -mag : mag) * (1.0 + u(rng) * 1e-3);
    }
  }
  return v;
}

// Elements [0, n) of `got` (CPU) equal `want` (CPU, same dtype) bit for bit starting at
// want element `want_off`; floating NaNs match any NaN (payloads are not part of the contract).
void expect_bits_equal(const Tensor& got, const Tensor& want, int64_t want_off, const std::string& what) {
  ASSERT_EQ(got.dtype(), want.dtype()) << what;
  ASSERT_TRUE(got.is_contiguous() && want.is_contiguous()) << what;
  const size_t es = dtype_size(got.dtype());
  const auto* g = static_cast<const unsigned char*>(got.raw());
  const auto* w = static_cast<const unsigned char*>(want.raw()) + want_off * es;
  // Values are read only where the bytes differ (NaN payloads, or a real mismatch).
  auto at = [](const Tensor& t, int64_t i) { return t.slice(0, i, i + 1).item(); };
  int64_t bad = 0, first = -1;
  for (int64_t i = 0; i < got.numel(); ++i) {
    if (std::memcmp(g + i * es, w + i * es, es) == 0) continue;
    if (std::isnan(at(got, i)) && std::isnan(at(want, want_off + i))) continue;
    if (first < 0) first = i;
    ++bad;
  }
  ASSERT_EQ(bad, 0) << what << ": " << bad << " of " << got.numel() << " elements differ, first at "
                    << first << " (got " << at(got, first) << ", want "
                    << at(want, want_off + first) << ")";
}

std::string pair_name(DType s, DType d) { return str_cat(dtype_name(s), "->", dtype_name(d)); }

}  // namespace

TEST(GpuCopy, ContiguousConversionsAllDtypePairsAwkwardSizesAndOffsets) {
  LZ_REQUIRE_GPU();
  // Sizes around the pack widths (2, 4, 8, 16 elements) and a large odd one; each is run
  // from offset 0 and from a slice starting at element 1 of the source, the destination, or
  // both: offset 1 on one side only leaves the two alignments out of phase (scalar flat
  // path), on both sides it takes the vector path after a scalar head.
  const int64_t sizes[] = {1, 3, 4, 5, 1023, 4097, (int64_t(1) << 20) + 3};
  for (DType s : kAll) {
    for (DType d : kAll) {
      for (int64_t n : sizes) {
        const std::string what = str_cat(pair_name(s, d), " n=", n);
        const Tensor src_cpu = Tensor::from_vector(value_pool(s, d, n + 1, 7 + n), {n + 1}, DType::F64).to(s);
        const Tensor want = src_cpu.to(d);  // CPU conversion of all n + 1 elements
        const Tensor src = src_cpu.to(Device::cuda());
        // offset 0 both sides
        expect_bits_equal(src.slice(0, 0, n).to(d).to(Device::cpu()), want, 0, what + " aligned");
        // source at element 1, fresh (aligned) destination
        expect_bits_equal(src.slice(0, 1, n + 1).to(d).to(Device::cpu()), want, 1, what + " src+1");
        // both at element 1
        Tensor dst = Tensor::zeros({n + 1}, d, Device::cuda());
        dst.slice(0, 1, n + 1).copy_(src.slice(0, 1, n + 1));
        expect_bits_equal(dst.slice(0, 1, n + 1).to(Device::cpu()), want, 1, what + " both+1");
        EXPECT_EQ(dst.slice(0, 0, 1).item(), 0.0) << what << ": element before the slice written";
        // source at 0, destination at element 1
        Tensor dst2 = Tensor::zeros({n + 1}, d, Device::cuda());
        dst2.slice(0, 1, n + 1).copy_(src.slice(0, 0, n));
        expect_bits_equal(dst2.slice(0, 1, n + 1).to(Device::cpu()), want, 0, what + " dst+1");
      }
    }
  }
}

#ifdef LIZARD_WITH_CUDA  // calls the launcher directly: it exists only in CUDA builds
TEST(GpuCopy, SameDtypeContiguousKernelMatchesMemcpy) {
  LZ_REQUIRE_GPU();
  // Tensor::copy_ sends same-dtype contiguous copies to cudaMemcpy; the launcher itself must
  // still be right for them (other callers may use it): call it directly.
  for (DType t : kAll) {
    for (int64_t n : {int64_t(1), int64_t(17), int64_t(4099)}) {
      const Tensor src_cpu = Tensor::from_vector(value_pool(t, t, n, 3), {n}, DType::F64).to(t);
      const Tensor src = src_cpu.to(Device::cuda());
      Tensor dst = Tensor::zeros({n}, t, Device::cuda());
      cuda::StridedLayout l;
      l.ndim = 1;
      l.shape[0] = n;
      l.src_stride[0] = l.dst_stride[0] = 1;
      cuda::strided_copy(src.raw(), t, dst.raw(), t, l, n, cuda::stream_of(dst));
      expect_bits_equal(dst.to(Device::cpu()), src_cpu, 0, str_cat(dtype_name(t), " n=", n));
    }
  }
}
#endif  // LIZARD_WITH_CUDA

TEST(GpuCopy, NonContiguousViewsTakeTheGeneralPath) {
  LZ_REQUIRE_GPU();
  // [B, T, H, D]-like awkward shape; each case's CPU reference is the same view of the CPU
  // source converted on the CPU (for_each_offset2), compared bit for bit.
  const Shape shape{3, 5, 7, 9};
  for (DType s : kAll) {
    for (DType d : kAll) {
      const std::string what = pair_name(s, d);
      const int64_t n = shape_numel(shape);
      const Tensor src_cpu = Tensor::from_vector(value_pool(s, d, n, 11), shape, DType::F64).to(s);
      const Tensor src = src_cpu.to(Device::cuda());
      auto check = [&](const Tensor& gpu_view, const Tensor& cpu_view, const char* how) {
        expect_bits_equal(gpu_view.to(d).to(Device::cpu()), cpu_view.to(d).contiguous(), 0,
                          what + " " + how);
      };
      check(src.transpose(1, 2), src_cpu.transpose(1, 2), "transpose(1,2)");
      check(src.permute({3, 0, 2, 1}), src_cpu.permute({3, 0, 2, 1}), "permute");
      check(src.slice(3, 1, 9, 2), src_cpu.slice(3, 1, 9, 2), "step-2 slice of the last dim");
      check(src.slice(2, 1, 6), src_cpu.slice(2, 1, 6), "middle-dim slice (runs of 45)");
      check(src.select(1, 2).unsqueeze(1).expand({3, 4, 7, 9}),
            src_cpu.select(1, 2).unsqueeze(1).expand({3, 4, 7, 9}), "broadcast");
      // Strided destination: a contiguous source written into a transposed view.
      Tensor dst = Tensor::zeros({3, 7, 5, 9}, d, Device::cuda());
      dst.transpose(1, 2).copy_(src);
      expect_bits_equal(dst.to(Device::cpu()), src_cpu.to(d).transpose(1, 2).contiguous(), 0,
                        what + " into a transposed destination");
    }
  }
}

TEST(GpuCopy, OffsetsBeyondInt32UseTheWideWalk) {
  LZ_REQUIRE_GPU();
  // A [2, 8] view whose rows are 2^31 + 64 elements apart: a 32-bit offset would wrap, so
  // the launcher must pick the 64-bit walk. u8 storage keeps it at about 4 GiB.
  const int64_t row = (int64_t(1) << 31) + 64;
  Tensor big = Tensor::zeros({2 * row}, DType::U8, Device::cuda());
  Tensor view = big.view({2, row}).slice(1, 0, 8);  // strides [row, 1], not contiguous
  const Tensor vals = Tensor::from_vector({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
                                          {2, 8}, DType::U8);
  view.copy_(vals.to(Device::cuda()));  // u8 -> u8 strided: also the wide walk
  const std::vector<double> got = view.to(DType::F32).to_vector();
  const std::vector<double> want = vals.to_vector();
  EXPECT_EQ(got, want);
  // Element row * 1 (first of the second row) holds 9; its neighbour before it is untouched.
  EXPECT_EQ(big.slice(0, row, row + 1).item(), 9.0);
  EXPECT_EQ(big.slice(0, row - 1, row).item(), 0.0);
}

TEST(GpuCopy, FillMatchesTheCpuAtAwkwardSizesAndOffsets) {
  LZ_REQUIRE_GPU();
  // cuda::fill: all-zero bits take cudaMemsetAsync, anything else the 16-byte-pack kernel with a
  // scalar head (misaligned start) and tail. Each case fills elements [1, n + 1) or [0, n) of a
  // buffer of n + 2 sentinels and compares the whole buffer with the same fill on the CPU, bit
  // for bit, so a write outside the range shows too. -0.0 is not zero bits: it must stay -0.0.
  const int64_t sizes[] = {1, 3, 5, 17, 4099, (int64_t(1) << 20) + 3};
  for (DType t : kAll) {
    std::vector<double> values = {0.0, 7.0};
    if (dtype_is_float(t)) values = {0.0, -0.0, 1.5, -3.25e-3};
    for (int64_t n : sizes) {
      for (double v : values) {
        for (int64_t off : {int64_t(0), int64_t(1)}) {
          const std::string what = str_cat(dtype_name(t), " n=", n, " value=", v, " offset=", off);
          Tensor want = Tensor::full({n + 2}, 3.0, t, Device::cpu());
          want.slice(0, off, off + n).fill_(v);
          Tensor got = Tensor::full({n + 2}, 3.0, t, Device::cuda());
          got.slice(0, off, off + n).fill_(v);
          expect_bits_equal(got.to(Device::cpu()), want, 0, what);
        }
      }
    }
  }
}
