// GPU casts agree bit for bit with the CPU conversions on every f16/bf16 value and random floats.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <random>
#include <vector>

#include "kernels/cuda/cuda_ops.h"
#include "kiln/dtype.h"

namespace kiln {
namespace {

std::vector<float> test_values() {
  std::vector<float> v;
  for (uint32_t h = 0; h < 0x10000; ++h) {
    v.push_back(f16_to_f32(static_cast<uint16_t>(h)));
    v.push_back(bf16_to_f32(static_cast<uint16_t>(h)));
  }
  std::mt19937 rng(1);
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 1 << 20; ++i) {
    float f = std::bit_cast<float>(bits(rng));
    if (!std::isnan(f)) v.push_back(f);
  }
  return v;
}

TEST(CudaCast, F32ToBF16MatchesCpu) {
  ASSERT_GT(cuda::device_count(), 0) << "no CUDA device: run the gpu label on a GPU machine";
  const auto in = test_values();
  std::vector<uint16_t> out(in.size());
  cuda::cast_f32_to_bf16(in.data(), out.data(), in.size());
  for (size_t i = 0; i < in.size(); ++i) ASSERT_EQ(out[i], f32_to_bf16(in[i])) << in[i];
}

TEST(CudaCast, F32ToF16MatchesCpu) {
  ASSERT_GT(cuda::device_count(), 0) << "no CUDA device: run the gpu label on a GPU machine";
  const auto in = test_values();
  std::vector<uint16_t> out(in.size());
  cuda::cast_f32_to_f16(in.data(), out.data(), in.size());
  for (size_t i = 0; i < in.size(); ++i) ASSERT_EQ(out[i], f32_to_f16(in[i])) << in[i];
}

}  // namespace
}  // namespace kiln
