// Element conversions shared by kernels: load any storage type as float, store float as any.
#pragma once
#include <cstdint>
#include <type_traits>

#include "lizard/core/half.h"

namespace lizard::cuda {

LZ_HD float load_f(float v) { return v; }
LZ_HD float load_f(double v) { return static_cast<float>(v); }
LZ_HD float load_f(bf16 v) { return bf16_bits_to_float(v.bits); }
LZ_HD float load_f(f16 v) { return f16_bits_to_float(v.bits); }
LZ_HD float load_f(int32_t v) { return static_cast<float>(v); }
LZ_HD float load_f(int64_t v) { return static_cast<float>(v); }
LZ_HD float load_f(uint8_t v) { return static_cast<float>(v); }

template <class T> struct Store;
template <> struct Store<float> { LZ_HD static float from(float v) { return v; } };
template <> struct Store<double> { LZ_HD static double from(float v) { return v; } };
template <> struct Store<bf16> {
  LZ_HD static bf16 from(float v) { bf16 r; r.bits = float_to_bf16_bits(v); return r; }
};
template <> struct Store<f16> {
  LZ_HD static f16 from(float v) { f16 r; r.bits = float_to_f16_bits(v); return r; }
};
template <> struct Store<int32_t> { LZ_HD static int32_t from(float v) { return static_cast<int32_t>(v); } };
template <> struct Store<int64_t> { LZ_HD static int64_t from(float v) { return static_cast<int64_t>(v); } };
template <> struct Store<uint8_t> { LZ_HD static uint8_t from(float v) { return static_cast<uint8_t>(v); } };

/// Converts between storage types; integer to integer and double to double stay exact.
template <class D, class S>
LZ_HD D convert(S v) {
  if constexpr (std::is_same_v<D, S>) {
    return v;
  } else if constexpr (std::is_integral_v<D> && std::is_integral_v<S>) {
    return static_cast<D>(v);
  } else if constexpr (std::is_same_v<D, double> && std::is_arithmetic_v<S>) {
    return static_cast<double>(v);
  } else if constexpr (std::is_integral_v<D> && std::is_same_v<S, double>) {
    return static_cast<D>(v);
  } else {
    return Store<D>::from(load_f(v));
  }
}

}  // namespace lizard::cuda
