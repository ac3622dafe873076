// Helpers of the GPU suite: move tensors to the GPU in a storage dtype, build the f64 oracle
// from exactly the values the GPU saw, and compare with a per-dtype tolerance.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "lizard/core/tensor.h"
#include "test_util.h"

namespace lizard::test {

/// A storage dtype with the relative tolerance its outputs are held to and why.
struct DtypeCase {
  DType dtype;
  double tol;
  const char* why;
};

/// Elementwise/row outputs computed in fp32 and stored in the dtype: f32 carries fp32
/// rounding of a few ops (fast-math exp/log have ~2 ulp), bf16 has 8 mantissa bits so each
/// stored output is off by up to 2^-9 relative (norm-wise about half that).
inline const DtypeCase kF32{DType::F32, 1e-5, "fp32 math, a few ulp per element"};
inline const DtypeCase kBF16{DType::BF16, 4e-3, "bf16 output rounding 2^-9 relative per element"};
inline const DtypeCase kF16{DType::F16, 1e-3, "f16 output rounding 2^-11 relative per element"};

/// Uniform [lo, hi) on the GPU in storage dtype `dt` (never zeros).
inline Tensor gpu_rand(const Shape& s, uint64_t seed, DType dt, double lo = -1.0, double hi = 1.0) {
  return rand(s, seed, DType::F32, lo, hi).to(Device::cuda(), dt);
}

/// The exact values of a (GPU) tensor as a CPU f64 tensor: the oracle's input.
inline Tensor f64(const Tensor& t) { return t.to(Device::cpu(), DType::F64); }

/// a and b hold the same bytes (same dtype and shape, compared element by element); names how
/// many elements differ and the first, with both values. For results that must not depend on
/// a switch at all (not within a tolerance: any difference is a fault).
inline void expect_same_bits(const Tensor& a, const Tensor& b, const std::string& what) {
  ASSERT_TRUE(a.defined() && b.defined()) << what << ": undefined";
  ASSERT_EQ(a.dtype(), b.dtype()) << what;
  ASSERT_EQ(a.shape(), b.shape()) << what;
  const Tensor ha = a.contiguous().to(Device::cpu()), hb = b.contiguous().to(Device::cpu());
  const auto* pa = static_cast<const unsigned char*>(ha.raw());
  const auto* pb = static_cast<const unsigned char*>(hb.raw());
  const size_t n = ha.nbytes(), es = ha.nbytes() / std::max<size_t>(ha.numel(), 1);
  size_t first = n, count = 0;
  for (size_t i = 0; i < n; i += es)
    if (std::memcmp(pa + i, pb + i, es) != 0) {
      if (first == n) first = i / es;
      ++count;
    }
  if (count == 0) return;
  const auto va = ha.to(DType::F64).to_vector(), vb = hb.to(DType::F64).to_vector();
  ADD_FAILURE() << what << ": " << count << " of " << ha.numel()
                << " elements differ, the first at flat index " << first << ": " << va[first]
                << " vs " << vb[first];
}

/// Every element finite.
inline bool all_finite(const Tensor& t) {
  for (double v : t.to_vector())
    if (!std::isfinite(v)) return false;
  return true;
}

/// Expects ||got - ref|| / ||ref|| <= tol and no NaN/Inf in got.
inline void expect_close(const Tensor& got, const Tensor& ref, double tol, const std::string& what) {
  ASSERT_EQ(got.shape(), ref.shape()) << what;
  EXPECT_TRUE(all_finite(got)) << what << ": non-finite output";
  const double e = rel_err(f64(got), ref);
  EXPECT_LE(e, tol) << what << ": relative error " << e;
}

}  // namespace lizard::test
