// dtype conversions: exhaustive f16/bf16 round trips and round-to-nearest-even at the edges.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>

#include "kiln/dtype.h"
#include "kiln/tensor.h"
#include "core/thread_pool.h"

namespace kiln {
namespace {

TEST(DType, F16RoundTripsEveryValue) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(f))));
      continue;
    }
    EXPECT_EQ(f32_to_f16(f), h) << std::hex << h;
  }
}

TEST(DType, BF16RoundTripsEveryValue) {
  for (uint32_t b = 0; b < 0x10000; ++b) {
    const float f = bf16_to_f32(static_cast<uint16_t>(b));
    if (std::isnan(f)) continue;
    EXPECT_EQ(f32_to_bf16(f), b) << std::hex << b;
  }
}

TEST(DType, F16KnownValuesAndRounding) {
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0xc000), -2.0f);
  EXPECT_EQ(f16_to_f32(0x7bff), 65504.0f);
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(f32_to_f16(65519.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // rounds to infinity
  // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1.0).
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  // Halfway between the two smallest subnormals rounds to even.
  EXPECT_EQ(f32_to_f16(std::ldexp(1.5f, -24)), 0x0002);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0001f, -25)), 0x0001);
}

// fp8 e4m3 (1 sign, 4 exponent bits biased by 7, 3 mantissa bits, no infinities, 448 the largest finite
// value): the values and ties worked out from that definition.
TEST(DType, Fp8E4m3RoundsToNearestEvenAndSaturates) {
  EXPECT_EQ(round_to_fp8_e4m3(1.0f), 1.0f);
  EXPECT_EQ(round_to_fp8_e4m3(-2.5f), -2.5f);
  EXPECT_EQ(round_to_fp8_e4m3(448.0f), 448.0f);
  EXPECT_EQ(round_to_fp8_e4m3(0.1f), 0.1015625f);                     // 13 / 128: 1.625 x 2^-4
  EXPECT_EQ(round_to_fp8_e4m3(1.0625f), 1.0f);                        // halfway to 1.125: to even (mantissa 0)
  EXPECT_EQ(round_to_fp8_e4m3(1.1875f), 1.25f);                       // halfway to 1.25: to even (mantissa 2)
  EXPECT_EQ(round_to_fp8_e4m3(1.07f), 1.125f);
  EXPECT_EQ(round_to_fp8_e4m3(432.0f), 448.0f);                       // halfway between 416 and 448: even
  EXPECT_EQ(round_to_fp8_e4m3(440.0f), 448.0f);
  EXPECT_EQ(round_to_fp8_e4m3(1000.0f), 448.0f);                      // saturates
  EXPECT_EQ(round_to_fp8_e4m3(-INFINITY), -448.0f);
  EXPECT_EQ(round_to_fp8_e4m3(std::ldexp(1.0f, -6)), std::ldexp(1.0f, -6));  // smallest normal
  EXPECT_EQ(round_to_fp8_e4m3(std::ldexp(1.0f, -9)), std::ldexp(1.0f, -9));  // smallest subnormal
  EXPECT_EQ(round_to_fp8_e4m3(std::ldexp(7.0f, -9)), std::ldexp(7.0f, -9));  // largest subnormal
  EXPECT_EQ(round_to_fp8_e4m3(std::ldexp(1.0f, -10)), 0.0f);          // halfway to the smallest: to even (0)
  EXPECT_EQ(round_to_fp8_e4m3(std::ldexp(3.0f, -10)), std::ldexp(1.0f, -8));  // 1.5 steps: to even (2 steps)
  EXPECT_EQ(round_to_fp8_e4m3(std::ldexp(1.0001f, -10)), std::ldexp(1.0f, -9));
  EXPECT_TRUE(std::signbit(round_to_fp8_e4m3(-1e-9f)));
  EXPECT_TRUE(std::isnan(round_to_fp8_e4m3(NAN)));
  // Every value between neighbours rounds to one of them, and each e4m3 value is a fixed point.
  for (float x = -500.0f; x < 500.0f; x += 0.37f) {
    const float r = round_to_fp8_e4m3(x);
    EXPECT_EQ(round_to_fp8_e4m3(r), r);
    if (std::fabs(x) >= std::ldexp(1.0f, -6) && std::fabs(x) <= 448.0f)
      EXPECT_LE(std::fabs(r - x), std::ldexp(std::fabs(x), -4) + 1e-6f) << x;  // half a step: 2^-4 relative
  }
}

TEST(DType, BF16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x3f808000u)), 0x3f80);  // tie, even stays
  EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x3f818000u)), 0x3f82);  // tie, odd rounds up
  EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x3f808001u)), 0x3f81);
}

TEST(Tensor, ContiguousStrides) {
  float buf[24];
  Tensor t(buf, DType::F32, {2, 3, 4});
  EXPECT_EQ(t.strides, (Shape{12, 4, 1}));
  EXPECT_TRUE(t.contiguous());
  EXPECT_EQ(t.nbytes(), 96u);
}

TEST(ThreadPool, CoversRangeExactlyOnce) {
  ThreadPool pool(3);
  for (int64_t n : {1, 2, 7, 100, 1001}) {
    std::vector<int> hits(n, 0);
    pool.parallel_for(n, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) hits[i]++;
    });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i], 1) << n << " " << i;
  }
}

}  // namespace
}  // namespace kiln
