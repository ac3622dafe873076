// bf16 and f16 storage types with exact conversions (round to nearest even), usable in kernels.
#pragma once
#include <cstdint>
#include <cstring>

#include "lizard/core/macros.h"

namespace lizard {

LZ_HD uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}
LZ_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

/// Rounds f32 to bf16 bits, nearest even; NaN stays a quiet NaN.
LZ_HD uint16_t float_to_bf16_bits(float f) {
  uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  uint32_t lsb = (u >> 16) & 1u;
  u += 0x7fffu + lsb;
  return static_cast<uint16_t>(u >> 16);
}
LZ_HD float bf16_bits_to_float(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

/// Rounds f32 to IEEE half bits, nearest even, with subnormals, overflow to inf, NaN kept.
LZ_HD uint16_t float_to_f16_bits(float f) {
  uint32_t x = float_bits(f);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);
  if (ax >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to >= 65520
  if (ax < 0x38800000u) {                                                 // subnormal or zero
    if (ax < 0x33000000u) return static_cast<uint16_t>(sign);            // < 2^-25 rounds to 0
    uint32_t e = ax >> 23;
    uint32_t mant = (ax & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126u - e;  // 14 + (112 - e) ... places the value at 2^-24 units
    uint32_t half = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1u);
    uint32_t mid = 1u << (shift - 1u);
    if (rem > mid || (rem == mid && (half & 1u))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t r = ax + 0xfffu + ((ax >> 13) & 1u);
  r -= 0x38000000u;  // rebias 127 -> 15
  return static_cast<uint16_t>(sign | (r >> 13));
}
LZ_HD float f16_bits_to_float(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t e = (h >> 10) & 0x1fu;
  uint32_t m = h & 0x3ffu;
  if (e == 0) {
    if (m == 0) return bits_float(sign);
    float v = static_cast<float>(m) * 5.9604644775390625e-08f;  // m * 2^-24
    return sign ? -v : v;
  }
  if (e == 31) return bits_float(sign | 0x7f800000u | (m << 13));
  return bits_float(sign | ((e + 112u) << 23) | (m << 13));
}

/// bf16 storage type (host side; kernels use __nv_bfloat16 with the same bits).
struct bf16 {
  uint16_t bits = 0;
  bf16() = default;
  LZ_HD explicit bf16(float f) : bits(float_to_bf16_bits(f)) {}
  LZ_HD explicit operator float() const { return bf16_bits_to_float(bits); }
};

/// IEEE f16 storage type (host side).
struct f16 {
  uint16_t bits = 0;
  f16() = default;
  LZ_HD explicit f16(float f) : bits(float_to_f16_bits(f)) {}
  LZ_HD explicit operator float() const { return f16_bits_to_float(bits); }
};

}  // namespace lizard
