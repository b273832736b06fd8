// GGUF block formats and fp8: kiln's dequantization against gguf-py's (tests/fixtures/io/block_formats.json, made by
// tools/make_block_format_goldens.py), bit for bit; the simple quantizers round-trip; e4m3 bytes encode and decode.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/block_formats.h"
#include "io/json_file.h"
#include "kiln/dtype.h"

namespace kiln {
namespace {

DType type_named(const std::string& s) {
  for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q4_K, DType::Q5_K,
                  DType::Q6_K})
    if (dtype_name(t) == s) return t;
  ADD_FAILURE() << "unknown type " << s;
  return DType::F32;
}

std::vector<uint8_t> from_hex(const std::string& h) {
  std::vector<uint8_t> out(h.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<uint8_t>(std::stoul(h.substr(2 * i, 2), nullptr, 16));
  return out;
}

TEST(BlockFormats, DequantizeEqualsGgufPyBitForBit) {
  const nlohmann::json doc = io::read_json_file(std::string(KILN_SOURCE_DIR) + "/tests/fixtures/io/block_formats.json");
  ASSERT_EQ(doc["cases"].size(), 8u);
  for (const auto& c : doc["cases"]) {
    const DType t = type_named(c["type"].get<std::string>());
    const std::vector<uint8_t> bytes = from_hex(c["bytes_hex"].get<std::string>());
    const int64_t n = c["values"].get<int64_t>();
    ASSERT_EQ(dtype_bytes(t, n), bytes.size()) << dtype_name(t);
    std::vector<float> got(static_cast<size_t>(n));
    convert_to_f32(t, bytes.data(), got.data(), got.size());
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t want = static_cast<uint32_t>(std::stoul(c["f32_bits"][i].get<std::string>(), nullptr, 16));
      ASSERT_EQ(std::bit_cast<uint32_t>(got[i]), want)
          << dtype_name(t) << " value " << i << ": " << got[i] << " vs " << std::bit_cast<float>(want);
    }
  }
}

// Q8_0 and Q4_1 land within half a step; Q4_0 maps the value of largest magnitude to -8 (so its step is
// amax / 8) and clamps values of the other sign at +7: up to one step off there.
TEST(BlockFormats, SimpleQuantizersRoundTrip) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(256);
  for (float& v : x) v = nd(rng);
  for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q4_1}) {
    std::vector<uint8_t> q(dtype_bytes(t, 256));
    quantize_blocks(t, x.data(), q.data(), 256);
    std::vector<float> y(256);
    dequantize_blocks(t, q.data(), y.data(), 256);
    for (int b = 0; b < 8; ++b) {
      float lo = x[32 * b], hi = x[32 * b];
      for (int j = 0; j < 32; ++j) lo = std::min(lo, x[32 * b + j]), hi = std::max(hi, x[32 * b + j]);
      const float amax = std::max(std::fabs(lo), std::fabs(hi));
      const float step = t == DType::Q4_1 ? (hi - lo) / 15.0f : t == DType::Q8_0 ? amax / 127.0f : amax / 8.0f;
      const float bound = (t == DType::Q4_0 ? 1.0f : 0.5f) * step * 1.01f + 1e-3f;  // + f16 rounding of the scales
      for (int j = 0; j < 32; ++j)
        EXPECT_LE(std::fabs(y[32 * b + j] - x[32 * b + j]), bound) << dtype_name(t) << " " << j;
    }
  }
}

TEST(Fp8E4M3, EveryByteDecodesAndEncodesBack) {
  for (int b = 0; b < 256; ++b) {
    const float f = fp8_e4m3_to_f32(static_cast<uint8_t>(b));
    if ((b & 0x7f) == 0x7f) {
      EXPECT_TRUE(std::isnan(f)) << b;
      continue;
    }
    EXPECT_EQ(round_to_fp8_e4m3(f), f) << b;
    if (b == 0x80) continue;  // -0 encodes as 0x80 too, checked below
    EXPECT_EQ(f32_to_fp8_e4m3(f), b) << b << " " << f;
  }
  EXPECT_EQ(f32_to_fp8_e4m3(-0.0f), 0x80);
  EXPECT_EQ(fp8_e4m3_to_f32(0x7e), 448.0f);
  EXPECT_EQ(fp8_e4m3_to_f32(0x01), std::ldexp(1.0f, -9));
  EXPECT_EQ(f32_to_fp8_e4m3(1000.0f), 0x7e);  // saturates
  EXPECT_EQ(f32_to_fp8_e4m3(-1e9f), 0xfe);
  EXPECT_EQ(f32_to_fp8_e4m3(1.0625f), 0x38);  // a tie between 1 and 1.125 goes to even (1)
  EXPECT_EQ(f32_to_fp8_e4m3(1.1875f), 0x3a);  // a tie between 1.125 and 1.25 goes to even (1.25)
}

}  // namespace
}  // namespace kiln
