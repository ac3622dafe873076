// Element types. F64 exists for CPU oracles and finite-difference checks only.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "lizard/core/half.h"

namespace lizard {

enum class DType : uint8_t { F32, BF16, F16, I32, I64, F64, U8 };

/// Bytes per element.
size_t dtype_size(DType t);
/// "f32", "bf16", "f16", "i32", "i64", "f64", "u8".
const char* dtype_name(DType t);
/// Parses the names above (also "float32", "bfloat16", "float16"); throws InputError otherwise.
DType dtype_from_name(const std::string& name);
/// True for F32, BF16, F16, F64.
bool dtype_is_float(DType t);

/// Maps a C++ element type to its DType.
template <class T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::F32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::F64; };
template <> struct dtype_of<bf16> { static constexpr DType value = DType::BF16; };
template <> struct dtype_of<f16> { static constexpr DType value = DType::F16; };
template <> struct dtype_of<int32_t> { static constexpr DType value = DType::I32; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::I64; };
template <> struct dtype_of<uint8_t> { static constexpr DType value = DType::U8; };

}  // namespace lizard
