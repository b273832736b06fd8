// Element type sizes, names and bulk conversions.
#include "kiln/dtype.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/block_formats.h"
#include "kiln/error.h"

namespace kiln {

float round_to_fp8_e4m3(float f) {
  if (std::isnan(f)) return f;
  const float a = std::fabs(f);
  if (a >= 448.0f) return std::copysign(448.0f, f);
  int e = 0;
  std::frexp(a, &e);                                   // a = m 2^e, m in [0.5, 1) (e = 0 for a = 0)
  const int q = std::max(e - 1, -6) - 3;               // the spacing of e4m3 values around a is 2^q
  const float r = std::nearbyint(std::ldexp(a, -q));  // exact scaling; ties to even (default rounding mode)
  return std::copysign(std::ldexp(r, q), f);
}

DTypeBlock dtype_block(DType t) {
  switch (t) {
    case DType::F32: return {1, 4};
    case DType::F16: return {1, 2};
    case DType::BF16: return {1, 2};
    case DType::I32: return {1, 4};
    case DType::I64: return {1, 8};
    case DType::I8: return {1, 1};
    case DType::U8: return {1, 1};
    case DType::F8E4M3: return {1, 1};
    case DType::U4: return {2, 1};
    case DType::Q8_0: return {32, 34};
    case DType::Q4_0: return {32, 18};
    case DType::Q4_1: return {32, 20};
    case DType::Q5_0: return {32, 22};
    case DType::Q5_1: return {32, 24};
    case DType::Q4_K: return {256, 144};
    case DType::Q5_K: return {256, 176};
    case DType::Q6_K: return {256, 210};
  }
  KILN_ASSERT(false);
}

size_t dtype_size(DType t) {
  const DTypeBlock b = dtype_block(t);
  KILN_CHECK(b.values == 1, "dtype {} has no per-element size ({} values in {} bytes)", dtype_name(t), b.values,
             b.bytes);
  return static_cast<size_t>(b.bytes);
}

size_t dtype_bytes(DType t, int64_t n) {
  const DTypeBlock b = dtype_block(t);
  KILN_CHECK(n >= 0 && n % b.values == 0, "{} values of dtype {} are not whole blocks of {}", n, dtype_name(t),
             b.values);
  return static_cast<size_t>(n / b.values * b.bytes);
}

bool dtype_is_float(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

bool dtype_is_gguf_block(DType t) {
  switch (t) {
    case DType::Q8_0:
    case DType::Q4_0:
    case DType::Q4_1:
    case DType::Q5_0:
    case DType::Q5_1:
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K:
      return true;
    default:
      return false;
  }
}

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F16: return "f16";
    case DType::BF16: return "bf16";
    case DType::I32: return "i32";
    case DType::I64: return "i64";
    case DType::I8: return "i8";
    case DType::U8: return "u8";
    case DType::F8E4M3: return "f8e4m3";
    case DType::U4: return "u4";
    case DType::Q8_0: return "q8_0";
    case DType::Q4_0: return "q4_0";
    case DType::Q4_1: return "q4_1";
    case DType::Q5_0: return "q5_0";
    case DType::Q5_1: return "q5_1";
    case DType::Q4_K: return "q4_k";
    case DType::Q5_K: return "q5_k";
    case DType::Q6_K: return "q6_k";
  }
  KILN_ASSERT(false);
}

uint8_t f32_to_fp8_e4m3(float f) {
  if (std::isnan(f)) return 0x7f;
  const float r = round_to_fp8_e4m3(f);
  const uint8_t sign = std::signbit(r) ? 0x80 : 0;
  const float a = std::fabs(r);
  if (a == 0.0f) return sign;
  int e = 0;
  const float m = std::frexp(a, &e);  // a = m 2^e, m in [0.5, 1)
  if (e - 1 < -6) return sign | static_cast<uint8_t>(std::ldexp(a, 9));  // subnormal: a / 2^-9, exact
  const int mant = static_cast<int>(std::ldexp(m, 4)) - 8;             // 3 mantissa bits of 2m - 1
  return sign | static_cast<uint8_t>(((e - 1 + 7) << 3) | mant);
}

float fp8_e4m3_to_f32(uint8_t b) {
  const float sign = (b & 0x80) ? -1.0f : 1.0f;
  const int exp = (b >> 3) & 0xf;
  const int mant = b & 0x7;
  if (exp == 0xf && mant == 0x7) return std::numeric_limits<float>::quiet_NaN();
  if (exp == 0) return sign * std::ldexp(static_cast<float>(mant), -9);
  return sign * std::ldexp(static_cast<float>(8 + mant), exp - 7 - 3);
}

uint16_t f32_to_f16(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00u | static_cast<uint16_t>((abs >> 13) & 0x3ffu);  // NaN
  if (abs >= 0x477ff000u) return sign | 0x7c00u;  // rounds to >= 65520: infinity
  if (abs < 0x38800000u) {
    // Result is subnormal (or zero): value / 2^-24 rounded to nearest even integer.
    if (abs < 0x33000000u) return sign;  // below half the smallest subnormal
    const uint32_t exp = abs >> 23;
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - exp;  // 113 - exp + 13
    uint32_t q = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return sign | static_cast<uint16_t>(q);
  }
  uint32_t r = abs - 0x38000000u;  // rebias exponent 127 -> 15
  r += 0xfffu + ((r >> 13) & 1u);
  return sign | static_cast<uint16_t>(r >> 13);
}

void convert_to_f32(DType src_type, const void* src, float* dst, size_t n) {
  switch (src_type) {
    case DType::F32:
      std::memcpy(dst, src, n * sizeof(float));
      return;
    case DType::F16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = f16_to_f32(s[i]);
      return;
    }
    case DType::BF16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(s[i]);
      return;
    }
    case DType::F8E4M3: {
      const auto* s = static_cast<const uint8_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = fp8_e4m3_to_f32(s[i]);
      return;
    }
    case DType::I8: {
      const auto* s = static_cast<const int8_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(s[i]);
      return;
    }
    case DType::U8: {
      const auto* s = static_cast<const uint8_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(s[i]);
      return;
    }
    case DType::U4: {
      KILN_CHECK(n % 2 == 0, "cannot convert an odd count ({}) of packed u4 values", n);
      const auto* s = static_cast<const uint8_t*>(src);
      for (size_t i = 0; i < n / 2; ++i) {
        dst[2 * i] = static_cast<float>(s[i] & 0x0f);
        dst[2 * i + 1] = static_cast<float>(s[i] >> 4);
      }
      return;
    }
    default:
      if (dtype_is_gguf_block(src_type)) {
        dequantize_blocks(src_type, src, dst, static_cast<int64_t>(n));
        return;
      }
      KILN_THROW("cannot convert dtype {} to f32", dtype_name(src_type));
  }
}

}  // namespace kiln
