// Element types of safetensors files and scalar conversions between the float formats, without
// LibTorch (the merger and the coordinator do not link it).
#ifndef PAFT_COMMON_DTYPE_H_
#define PAFT_COMMON_DTYPE_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace paft {

enum class DType {
  kBool, kU8, kI8, kF8E4M3, kF8E5M2, kI16, kU16, kF16, kBF16, kI32, kU32, kF32, kF64, kI64, kU64,
};

// safetensors' dtype names ("F32", "BF16", ...). nullopt for an unknown name.
std::optional<DType> DTypeFromName(absl::string_view name);
const char* DTypeName(DType dtype);
size_t DTypeSize(DType dtype);
bool IsFloatingPoint(DType dtype);

// IEEE binary32 <-> bfloat16, round to nearest even; NaN stays NaN.
inline uint16_t FloatToBf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  uint32_t rounding_bias = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding_bias) >> 16);
}

inline float Bf16ToFloat(uint16_t value) {
  uint32_t bits = static_cast<uint32_t>(value) << 16;
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

// IEEE binary32 <-> binary16, round to nearest even, with subnormals, infinities and NaN.
uint16_t FloatToF16(float value);
float F16ToFloat(uint16_t value);

// Reads element `index` of a float tensor (F32, F16, BF16, F64) as float.
float LoadAsFloat(DType dtype, const void* data, size_t index);
// Writes `value` as element `index` of a float tensor (F32, F16, BF16, F64).
void StoreFromFloat(DType dtype, void* data, size_t index, float value);

}  // namespace paft

#endif  // PAFT_COMMON_DTYPE_H_
