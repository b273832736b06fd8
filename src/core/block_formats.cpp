// GGUF block formats: dequantization of every supported type and round-to-nearest quantizers for the simple ones.
#include "core/block_formats.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kiln/error.h"

namespace kiln {
namespace {

uint16_t load_u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
void store_u16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v & 0xff);
  p[1] = static_cast<uint8_t>(v >> 8);
}
float half(const uint8_t* p) { return f16_to_f32(load_u16(p)); }

// The 6-bit scale and minimum of sub-block j (0..7) of a Q4_K / Q5_K block, packed in 12 bytes: sub-blocks
// 0..3 keep theirs in the low 6 bits of bytes j and j + 4; 4..7 in the nibbles of bytes j + 4, with their top
// two bits in the high bits of bytes j - 4 (scale) and j (minimum).
void scale_min_k4(int j, const uint8_t* q, float* sc, float* mn) {
  uint8_t d, m;
  if (j < 4) {
    d = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    d = static_cast<uint8_t>((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4));
    m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
  *sc = static_cast<float>(d);
  *mn = static_cast<float>(m);
}

// value = scale * q - min, each step rounded on its own.
inline float scaled(float scale, float q, float min) {
  const float p = scale * q;
  return p - min;
}

}  // namespace

void dequantize_blocks(DType t, const void* src, float* dst, int64_t n) {
  const DTypeBlock blk = dtype_block(t);
  KILN_CHECK(dtype_is_gguf_block(t) && n % blk.values == 0, "dequantize_blocks: {} values of {} are not whole blocks",
             n, dtype_name(t));
  const auto* p = static_cast<const uint8_t*>(src);
  float* y = dst;
  const int64_t blocks = n / blk.values;
  for (int64_t b = 0; b < blocks; ++b, p += blk.bytes, y += blk.values) {
    switch (t) {
      case DType::Q8_0: {  // d (f16), 32 x int8: d * q
        const float d = half(p);
        for (int j = 0; j < 32; ++j) y[j] = d * static_cast<float>(static_cast<int8_t>(p[2 + j]));
        break;
      }
      case DType::Q4_0: {  // d, 16 bytes: values j (low nibbles) and j + 16 (high), d * (q - 8)
        const float d = half(p);
        for (int j = 0; j < 16; ++j) {
          y[j] = d * static_cast<float>((p[2 + j] & 0x0f) - 8);
          y[j + 16] = d * static_cast<float>((p[2 + j] >> 4) - 8);
        }
        break;
      }
      case DType::Q4_1: {  // d, m, 16 bytes: d * q + m
        const float d = half(p), m = half(p + 2);
        for (int j = 0; j < 16; ++j) {
          y[j] = scaled(d, static_cast<float>(p[4 + j] & 0x0f), -m);
          y[j + 16] = scaled(d, static_cast<float>(p[4 + j] >> 4), -m);
        }
        break;
      }
      case DType::Q5_0:
      case DType::Q5_1: {  // d (, m), 32 high bits, 16 bytes of low nibbles: 5-bit q, d * (q - 16) or d * q + m
        const bool q51 = t == DType::Q5_1;
        const float d = half(p), m = q51 ? half(p + 2) : 0.0f;
        const uint8_t* qhp = p + (q51 ? 4 : 2);
        const uint32_t qh = static_cast<uint32_t>(qhp[0]) | (static_cast<uint32_t>(qhp[1]) << 8) |
                            (static_cast<uint32_t>(qhp[2]) << 16) | (static_cast<uint32_t>(qhp[3]) << 24);
        const uint8_t* qs = qhp + 4;
        for (int j = 0; j < 16; ++j) {
          const int lo = (qs[j] & 0x0f) | static_cast<int>(((qh >> j) & 1u) << 4);
          const int hi = (qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
          if (q51) {
            y[j] = scaled(d, static_cast<float>(lo), -m);
            y[j + 16] = scaled(d, static_cast<float>(hi), -m);
          } else {
            y[j] = d * static_cast<float>(lo - 16);
            y[j + 16] = d * static_cast<float>(hi - 16);
          }
        }
        break;
      }
      case DType::Q4_K:
      case DType::Q5_K: {
        // d, dmin (f16), 12 bytes of 6-bit sub-block scales and minimums, [Q5_K: 32 bytes of fifth bits], 128 bytes
        // of nibbles. Values 64 i .. 64 i + 31 are the low nibbles of bytes 32 i .. 32 i + 31 (sub-block 2 i),
        // the next 32 their high nibbles (sub-block 2 i + 1); a value is (d * sc) * q - (dmin * mn).
        const bool q5 = t == DType::Q5_K;
        const float d = half(p), dmin = half(p + 2);
        const uint8_t* sc = p + 4;
        const uint8_t* qh = p + 16;
        const uint8_t* qs = p + (q5 ? 48 : 16);
        for (int i = 0; i < 4; ++i) {
          float s0, m0, s1, m1;
          scale_min_k4(2 * i, sc, &s0, &m0);
          scale_min_k4(2 * i + 1, sc, &s1, &m1);
          const float d0 = d * s0, min0 = dmin * m0, d1 = d * s1, min1 = dmin * m1;
          for (int l = 0; l < 32; ++l) {
            int lo = qs[32 * i + l] & 0x0f, hi = qs[32 * i + l] >> 4;
            if (q5) {
              lo += ((qh[l] >> (2 * i)) & 1) << 4;
              hi += ((qh[l] >> (2 * i + 1)) & 1) << 4;
            }
            y[64 * i + l] = scaled(d0, static_cast<float>(lo), min0);
            y[64 * i + 32 + l] = scaled(d1, static_cast<float>(hi), min1);
          }
        }
        break;
      }
      case DType::Q6_K: {
        // 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16 int8 sub-block scales, d (f16). Each half of
        // 128 values uses 64 low bytes, 32 high bytes and 8 scales; a value is (d * sc) * (q - 32), sc per 16.
        const uint8_t* ql = p;
        const uint8_t* qh = p + 128;
        const auto* scales = reinterpret_cast<const int8_t*>(p + 192);
        const float d = half(p + 208);
        for (int h = 0; h < 2; ++h) {
          const uint8_t* l4 = ql + 64 * h;
          const uint8_t* h2 = qh + 32 * h;
          const int8_t* s = scales + 8 * h;
          float* o = y + 128 * h;
          for (int l = 0; l < 32; ++l) {
            const int is = l / 16;
            const int q1 = ((l4[l] & 0x0f) | (((h2[l] >> 0) & 3) << 4)) - 32;
            const int q2 = ((l4[l + 32] & 0x0f) | (((h2[l] >> 2) & 3) << 4)) - 32;
            const int q3 = ((l4[l] >> 4) | (((h2[l] >> 4) & 3) << 4)) - 32;
            const int q4 = ((l4[l + 32] >> 4) | (((h2[l] >> 6) & 3) << 4)) - 32;
            o[l] = (d * static_cast<float>(s[is])) * static_cast<float>(q1);
            o[l + 32] = (d * static_cast<float>(s[is + 2])) * static_cast<float>(q2);
            o[l + 64] = (d * static_cast<float>(s[is + 4])) * static_cast<float>(q3);
            o[l + 96] = (d * static_cast<float>(s[is + 6])) * static_cast<float>(q4);
          }
        }
        break;
      }
      default:
        KILN_ASSERT(false);
    }
  }
}

void quantize_blocks(DType t, const float* x, void* dst, int64_t n) {
  KILN_CHECK((t == DType::Q8_0 || t == DType::Q4_0 || t == DType::Q4_1) && n % 32 == 0,
             "quantize_blocks: {} values of {} (Q8_0, Q4_0 and Q4_1 in whole blocks of 32 only)", n, dtype_name(t));
  auto* p = static_cast<uint8_t*>(dst);
  const int64_t bytes = dtype_block(t).bytes;
  for (int64_t b = 0; b < n / 32; ++b, x += 32, p += bytes) {
    float amax = 0.0f, mx = -INFINITY, mn = INFINITY, vmax = 0.0f;
    for (int j = 0; j < 32; ++j) {
      if (std::fabs(x[j]) > amax) amax = std::fabs(x[j]), vmax = x[j];
      mx = std::max(mx, x[j]);
      mn = std::min(mn, x[j]);
    }
    if (t == DType::Q8_0) {
      const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
      store_u16(p, f32_to_f16(d));
      for (int j = 0; j < 32; ++j) p[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::lround(x[j] * id)));
    } else if (t == DType::Q4_0) {
      // The value of largest magnitude maps to -8, so the full range [-8, 7] is used.
      const float d = vmax / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
      store_u16(p, f32_to_f16(d));
      for (int j = 0; j < 16; ++j) {
        const int a = std::clamp(static_cast<int>(x[j] * id + 8.5f), 0, 15);
        const int c = std::clamp(static_cast<int>(x[j + 16] * id + 8.5f), 0, 15);
        p[2 + j] = static_cast<uint8_t>(a | (c << 4));
      }
    } else {
      const float d = (mx - mn) / 15.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
      store_u16(p, f32_to_f16(d));
      store_u16(p + 2, f32_to_f16(mn));
      for (int j = 0; j < 16; ++j) {
        const int a = std::clamp(static_cast<int>((x[j] - mn) * id + 0.5f), 0, 15);
        const int c = std::clamp(static_cast<int>((x[j + 16] - mn) * id + 0.5f), 0, 15);
        p[4 + j] = static_cast<uint8_t>(a | (c << 4));
      }
    }
  }
}

}  // namespace kiln
