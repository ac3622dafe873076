// Calls a generic lambda with a value of the C++ type matching a DType.
#pragma once
#include "lizard/core/dtype.h"
#include "lizard/core/error.h"

namespace lizard {

/// f(T{}) with T the storage type of `t` (float, double, bf16, f16, int32_t, int64_t, uint8_t).
template <class F>
decltype(auto) visit_dtype(DType t, F&& f) {
  switch (t) {
    case DType::F32: return f(float{});
    case DType::F64: return f(double{});
    case DType::BF16: return f(bf16{});
    case DType::F16: return f(f16{});
    case DType::I32: return f(int32_t{});
    case DType::I64: return f(int64_t{});
    case DType::U8: return f(uint8_t{});
  }
  throw Error("visit_dtype: bad dtype");
}

/// Converts any storage type to double and back (bf16/f16 through float, round to nearest even).
template <class T>
inline double to_double(T v) {
  return static_cast<double>(v);
}
template <>
inline double to_double<bf16>(bf16 v) {
  return static_cast<double>(static_cast<float>(v));
}
template <>
inline double to_double<f16>(f16 v) {
  return static_cast<double>(static_cast<float>(v));
}
template <class T>
inline T from_double(double v) {
  return static_cast<T>(v);
}
template <>
inline bf16 from_double<bf16>(double v) {
  return bf16(static_cast<float>(v));
}
template <>
inline f16 from_double<f16>(double v) {
  return f16(static_cast<float>(v));
}

}  // namespace lizard
