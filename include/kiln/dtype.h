// Element types (plain, fp8, packed int4 and GGUF's block types) and exact conversions between them and f32.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace kiln {

// What a tensor's elements are stored as. Plain types hold one value per element; F8E4M3 one byte per value
// (OCP e4m3fn: no infinities, +-448 at most); U4 two unsigned 4-bit values per byte (the first in the low
// nibble). The Q* types are GGUF's block formats: a row is a run of blocks, each holding `block values` values
// and its own scales (llama.cpp's published layouts).
enum class DType : uint8_t {
  F32, F16, BF16, I32, I64, I8, U8,
  F8E4M3, U4,
  Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K,
};

// Values per block and bytes per block: 1 and the element size for plain types, 2 and 1 for U4.
struct DTypeBlock {
  int64_t values;
  int64_t bytes;
};
DTypeBlock dtype_block(DType t);
// Bytes per element of a plain (one value per element, whole bytes) type; throws for U4 and block types.
size_t dtype_size(DType t);
// Bytes of n values of type t (n a multiple of the type's block values; throws kiln::Error otherwise).
size_t dtype_bytes(DType t, int64_t n);
// Whether t is F32, F16 or BF16 (a dense floating-point type the matrix kernels read directly).
bool dtype_is_float(DType t);
// Whether t is one of GGUF's block formats (Q8_0 .. Q6_K).
bool dtype_is_gguf_block(DType t);
// Short lowercase name: "f32", "f16", "bf16", "f8e4m3", "u4", "q4_k", ...
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
// The e4m3 byte of round_to_fp8_e4m3(f) (saturating; NaN becomes 0x7f), and a byte back to its exact value.
uint8_t f32_to_fp8_e4m3(float f);
float fp8_e4m3_to_f32(uint8_t b);

// Converts n values of type `src_type` at `src` to f32: plain types exactly, F8E4M3 exactly, U4 as the unsigned
// integers 0..15, block types by their scales (n a multiple of the block values). I32/I64 are refused.
void convert_to_f32(DType src_type, const void* src, float* dst, size_t n);

}  // namespace kiln
