// Counter-based RNG (Philox-4x32-10). A stream is (seed, offset); element i of a draw
// depends only on (seed, offset, i), so CPU and GPU produce identical numbers and any
// element can be regenerated (dropout masks are recomputed, never stored).
#pragma once
#include <cmath>
#include <cstdint>

#include "lizard/core/macros.h"

namespace lizard {

struct Philox4 {
  uint32_t v[4];
};

/// Philox-4x32 with 10 rounds: counter (c0..c3), key (k0, k1).
LZ_HD Philox4 philox4x32(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                         uint32_t k1) {
  const uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int r = 0; r < 10; ++r) {
    uint64_t p0 = static_cast<uint64_t>(M0) * c0;
    uint64_t p1 = static_cast<uint64_t>(M1) * c2;
    uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += W0;
    k1 += W1;
  }
  return {{c0, c1, c2, c3}};
}

/// The i-th 32-bit word of stream (seed, offset).
LZ_HD uint32_t rng_u32(uint64_t seed, uint64_t offset, uint64_t i) {
  uint64_t block = i >> 2;
  Philox4 r = philox4x32(static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32),
                         static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32),
                         static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  return r.v[i & 3];
}

/// Uniform in [0, 1) with 24 random bits.
LZ_HD float rng_uniform(uint64_t seed, uint64_t offset, uint64_t i) {
  return static_cast<float>(rng_u32(seed, offset, i) >> 8) * (1.0f / 16777216.0f);
}

/// Standard normal by Box-Muller from words 2i and 2i+1 (computed in float).
LZ_HD float rng_normal(uint64_t seed, uint64_t offset, uint64_t i) {
  float u1 = (static_cast<float>(rng_u32(seed, offset, 2 * i) >> 8) + 1.0f) * (1.0f / 16777216.0f);
  float u2 = static_cast<float>(rng_u32(seed, offset, 2 * i + 1) >> 8) * (1.0f / 16777216.0f);
#if defined(__CUDA_ARCH__)
  return sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
#else
  return std::sqrt(-2.0f * std::log(u1)) * std::cos(6.283185307179586f * u2);
#endif
}

/// A stream owner: hands out disjoint offsets so successive draws never overlap.
class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : seed_(seed) {}
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void set_state(uint64_t seed, uint64_t offset) { seed_ = seed; offset_ = offset; }
  /// Reserves one stream and returns its offset.
  uint64_t next_offset() { return offset_++; }

 private:
  uint64_t seed_;
  uint64_t offset_ = 0;
};

}  // namespace lizard
