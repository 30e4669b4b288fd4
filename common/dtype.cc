#include "common/dtype.h"

#include <cmath>

namespace paft {
namespace {

struct DTypeEntry {
  DType dtype;
  const char* name;
  size_t size;
};

constexpr DTypeEntry kDTypes[] = {
    {DType::kBool, "BOOL", 1},    {DType::kU8, "U8", 1},    {DType::kI8, "I8", 1},
    {DType::kF8E4M3, "F8_E4M3", 1}, {DType::kF8E5M2, "F8_E5M2", 1}, {DType::kI16, "I16", 2},
    {DType::kU16, "U16", 2},      {DType::kF16, "F16", 2},  {DType::kBF16, "BF16", 2},
    {DType::kI32, "I32", 4},      {DType::kU32, "U32", 4},  {DType::kF32, "F32", 4},
    {DType::kF64, "F64", 8},      {DType::kI64, "I64", 8},  {DType::kU64, "U64", 8},
};

const DTypeEntry& Entry(DType dtype) {
  for (const DTypeEntry& e : kDTypes) {
    if (e.dtype == dtype) return e;
  }
  return kDTypes[0];  // unreachable: every enumerator is in the table
}

}  // namespace

std::optional<DType> DTypeFromName(absl::string_view name) {
  for (const DTypeEntry& e : kDTypes) {
    if (name == e.name) return e.dtype;
  }
  return std::nullopt;
}

const char* DTypeName(DType dtype) { return Entry(dtype).name; }
size_t DTypeSize(DType dtype) { return Entry(dtype).size; }

bool IsFloatingPoint(DType dtype) {
  return dtype == DType::kF16 || dtype == DType::kBF16 || dtype == DType::kF32 ||
         dtype == DType::kF64 || dtype == DType::kF8E4M3 || dtype == DType::kF8E5M2;
}

uint16_t FloatToF16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  uint32_t sign = (bits >> 16) & 0x8000u;
  uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow -> inf
  if (abs < 0x38800000u) {
    // Subnormal half (or zero): value = mantissa * 2^-24.
    if (abs < 0x33000000u) return static_cast<uint16_t>(sign);  // rounds to zero
    uint32_t exponent = abs >> 23;
    uint32_t mantissa = (abs & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - exponent;  // 14..24: half = mantissa * 2^(exponent - 126)
    uint32_t half = mantissa >> shift;
    uint32_t remainder = mantissa & ((1u << shift) - 1);
    uint32_t halfway = 1u << (shift - 1);
    if (remainder > halfway || (remainder == halfway && (half & 1u))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  // Normal: rebias the exponent, round the mantissa from 23 to 10 bits.
  uint32_t half = ((abs - 0x38000000u) >> 13);
  uint32_t remainder = abs & 0x1fffu;
  if (remainder > 0x1000u || (remainder == 0x1000u && (half & 1u))) ++half;
  return static_cast<uint16_t>(sign | half);
}

float F16ToFloat(uint16_t value) {
  uint32_t sign = static_cast<uint32_t>(value & 0x8000u) << 16;
  uint32_t exponent = (value >> 10) & 0x1fu;
  uint32_t mantissa = value & 0x3ffu;
  uint32_t bits;
  if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {
      float f = std::ldexp(static_cast<float>(mantissa), -24);
      std::memcpy(&bits, &f, sizeof(bits));
      bits |= sign;
    }
  } else if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  }
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

float LoadAsFloat(DType dtype, const void* data, size_t index) {
  switch (dtype) {
    case DType::kF32: {
      float v;
      std::memcpy(&v, static_cast<const char*>(data) + 4 * index, 4);
      return v;
    }
    case DType::kF64: {
      double v;
      std::memcpy(&v, static_cast<const char*>(data) + 8 * index, 8);
      return static_cast<float>(v);
    }
    case DType::kBF16: {
      uint16_t v;
      std::memcpy(&v, static_cast<const char*>(data) + 2 * index, 2);
      return Bf16ToFloat(v);
    }
    case DType::kF16: {
      uint16_t v;
      std::memcpy(&v, static_cast<const char*>(data) + 2 * index, 2);
      return F16ToFloat(v);
    }
    default:
      return 0.0f;
  }
}

void StoreFromFloat(DType dtype, void* data, size_t index, float value) {
  switch (dtype) {
    case DType::kF32:
      std::memcpy(static_cast<char*>(data) + 4 * index, &value, 4);
      break;
    case DType::kF64: {
      double v = value;
      std::memcpy(static_cast<char*>(data) + 8 * index, &v, 8);
      break;
    }
    case DType::kBF16: {
      uint16_t v = FloatToBf16(value);
      std::memcpy(static_cast<char*>(data) + 2 * index, &v, 2);
      break;
    }
    case DType::kF16: {
      uint16_t v = FloatToF16(value);
      std::memcpy(static_cast<char*>(data) + 2 * index, &v, 2);
      break;
    }
    default:
      break;
  }
}

}  // namespace paft
