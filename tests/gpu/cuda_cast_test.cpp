// GPU casts agree bit for bit with the CPU conversions on every f16/bf16 value and random floats.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include <cuda_runtime.h>

#include "core/random_normal.h"
#include "device_casts.h"
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
  testing::cast_f32_to_bf16(in.data(), out.data(), in.size());
  for (size_t i = 0; i < in.size(); ++i) ASSERT_EQ(out[i], f32_to_bf16(in[i])) << in[i];
}

TEST(CudaCast, F32ToF16MatchesCpu) {
  ASSERT_GT(cuda::device_count(), 0) << "no CUDA device: run the gpu label on a GPU machine";
  const auto in = test_values();
  std::vector<uint16_t> out(in.size());
  testing::cast_f32_to_f16(in.data(), out.data(), in.size());
  for (size_t i = 0; i < in.size(); ++i) ASSERT_EQ(out[i], f32_to_f16(in[i])) << in[i];
}

// Random weights filled on the device (the CUDA loader's path) equal the host's RandomSource values
// (round_via(float(random_normal)) then the compute type), but for the rare element where the device's double
// log/sin/cos lands on the other side of a rounding boundary: at most one in 10^5, and then by one unit.
TEST(CudaFill, NormalMatchesHostFormula) {
  ASSERT_GT(cuda::device_count(), 0) << "no CUDA device: run the gpu label on a GPU machine";
  const int64_t n = (1 << 20) + 3;  // odd: the last pair is cut
  const uint64_t key = splitmix64(1234);
  struct Case {
    cuda::ElemType out, via;
  };
  const Case cases[] = {{cuda::ElemType::F16, cuda::ElemType::BF16},
                        {cuda::ElemType::BF16, cuda::ElemType::BF16},
                        {cuda::ElemType::F16, cuda::ElemType::F16},
                        {cuda::ElemType::F32, cuda::ElemType::F32}};
  for (const Case& c : cases) {
    const size_t esize = c.out == cuda::ElemType::F32 ? 4 : 2;
    void* d = nullptr;
    ASSERT_EQ(cudaMalloc(&d, n * esize), cudaSuccess);
    cuda::fill_normal(c.out, d, n, key, 0.02, c.via, nullptr);
    std::vector<uint8_t> got(n * esize);
    ASSERT_EQ(cudaMemcpy(got.data(), d, n * esize, cudaMemcpyDeviceToHost), cudaSuccess);
    cudaFree(d);
    int64_t differ = 0;
    double sum2 = 0;
    for (int64_t i = 0; i < n; ++i) {
      float want = static_cast<float>(random_normal(key, i, 0.02));
      if (c.via == cuda::ElemType::BF16) want = bf16_to_f32(f32_to_bf16(want));
      if (c.via == cuda::ElemType::F16) want = f16_to_f32(f32_to_f16(want));
      uint32_t want_bits, got_bits;
      if (c.out == cuda::ElemType::F32) {
        want_bits = std::bit_cast<uint32_t>(want);
        std::memcpy(&got_bits, &got[i * 4], 4);
      } else {
        want_bits = c.out == cuda::ElemType::BF16 ? f32_to_bf16(want) : f32_to_f16(want);
        uint16_t g16;
        std::memcpy(&g16, &got[i * 2], 2);
        got_bits = g16;
      }
      if (got_bits != want_bits) {
        ++differ;
        ASSERT_LE(std::max(got_bits, want_bits) - std::min(got_bits, want_bits), 1u) << "element " << i;
      }
      sum2 += static_cast<double>(want) * want;
    }
    EXPECT_LE(differ, n / 100000) << static_cast<int>(c.out) << " via " << static_cast<int>(c.via);
    EXPECT_NEAR(std::sqrt(sum2 / n), 0.02, 2e-4);  // the spread asked for
  }
}

TEST(CudaFill, F32Constant) {
  ASSERT_GT(cuda::device_count(), 0) << "no CUDA device: run the gpu label on a GPU machine";
  const int64_t n = 100003;
  float* d = nullptr;
  ASSERT_EQ(cudaMalloc(&d, n * sizeof(float)), cudaSuccess);
  cuda::fill_f32(d, n, 1.5f, nullptr);
  std::vector<float> got(n);
  ASSERT_EQ(cudaMemcpy(got.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  cudaFree(d);
  EXPECT_EQ(std::count(got.begin(), got.end(), 1.5f), n);
}

}  // namespace
}  // namespace kiln
