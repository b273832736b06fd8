// Element types and exact conversions between f32, f16 and bf16.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace kiln {

enum class DType : uint8_t { F32, F16, BF16, I32, I64, I8, U8 };

// Bytes per element.
size_t dtype_size(DType t);
// Short lowercase name: "f32", "f16", "bf16", ...
std::string_view dtype_name(DType t);

// IEEE binary16 bits to float: exact (every f16 value is representable in f32).
inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: value = mant * 2^-24, exact in f32
      float v = static_cast<float>(mant) * 0x1p-24f;
      bits = sign | std::bit_cast<uint32_t>(v);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  }
  return std::bit_cast<float>(bits);
}

// float to binary16 with round-to-nearest-even, overflow to infinity, NaN kept quiet.
uint16_t f32_to_f16(float f);

// bfloat16 bits to float: exact.
inline float bf16_to_f32(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

// float to bfloat16 with round-to-nearest-even; NaN kept quiet.
inline uint16_t f32_to_bf16(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

// The fp8 e4m3 value nearest to f (ties to even), saturated at +-448 (infinities too), NaN kept: what an fp8 KV
// cache stores (LoadOptions::kv_cache_fp8), as a float. Exact values: 3 mantissa bits, normals from 2^-6,
// subnormals in steps of 2^-9.
float round_to_fp8_e4m3(float f);

// Converts n elements of type `src_type` at `src` to f32.
void convert_to_f32(DType src_type, const void* src, float* dst, size_t n);

}  // namespace kiln
