// Random weights and fills on the device (fill_normal, fill_f32), and the device queries (device_count, num_sms).
#include <algorithm>

#include "core/random_normal.h"
#include "kernels/cuda/cuda_common.cuh"

namespace kiln::cuda {

namespace {

template <typename T>
__global__ void fill_normal_kernel(T* dst, int64_t n, uint64_t key, double stddev, ElemType round_via) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float v = static_cast<float>(random_normal(key, i, stddev));
    if (round_via == ElemType::BF16) v = __bfloat162float(__float2bfloat16_rn(v));
    if (round_via == ElemType::F16) v = __half2float(__float2half_rn(v));
    dst[i] = from_f<T>(v);
  }
}

__global__ void fill_f32_kernel(float* dst, int64_t n, float value) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[i] = value;
}

unsigned fill_grid(int64_t n) { return static_cast<unsigned>(std::clamp<int64_t>((n + 255) / 256, 1, 1 << 16)); }

}  // namespace

void fill_normal(ElemType t, void* dst, int64_t n, uint64_t key, double stddev, ElemType round_via,
                 cudaStream_t stream) {
  if (n <= 0) return;
  if (t == ElemType::F32) {
    fill_normal_kernel<float><<<fill_grid(n), 256, 0, stream>>>(static_cast<float*>(dst), n, key, stddev, round_via);
  } else {
    KILN_DISPATCH_16(t, T, {
      fill_normal_kernel<T><<<fill_grid(n), 256, 0, stream>>>(static_cast<T*>(dst), n, key, stddev, round_via);
    });
  }
  KILN_CUDA_LAUNCH_CHECK();
}

void fill_f32(float* dst, int64_t n, float value, cudaStream_t stream) {
  if (n <= 0) return;
  fill_f32_kernel<<<fill_grid(n), 256, 0, stream>>>(dst, n, value);
  KILN_CUDA_LAUNCH_CHECK();
}

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

int num_sms() {
  int dev = 0, n = 0;
  KILN_CUDA_CHECK(cudaGetDevice(&dev));
  KILN_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
  return n;
}

}  // namespace kiln::cuda
