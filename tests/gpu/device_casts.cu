// The device casts of device_casts.h: one grid-stride kernel per type over a device copy of the host array.
#include <algorithm>

#include "device_casts.h"
#include "kernels/cuda/cuda_common.cuh"

namespace kiln::testing {
namespace {

// NaNs keep their sign and top payload bits and become quiet, as the CPU conversions do (the intrinsics
// return one canonical NaN).
__device__ __forceinline__ __nv_bfloat16 bf16_nan(float f) {
  return __ushort_as_bfloat16(static_cast<unsigned short>((__float_as_uint(f) >> 16) | 0x40u));
}
__device__ __forceinline__ __half f16_nan(float f) {
  const uint32_t u = __float_as_uint(f);
  return __ushort_as_half(static_cast<unsigned short>(((u >> 16) & 0x8000u) | 0x7e00u | ((u >> 13) & 0x3ffu)));
}

__global__ void f32_to_bf16_kernel(const float* in, __nv_bfloat16* out, size_t n) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    out[i] = isnan(in[i]) ? bf16_nan(in[i]) : __float2bfloat16_rn(in[i]);
}

__global__ void f32_to_f16_kernel(const float* in, __half* out, size_t n) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    out[i] = isnan(in[i]) ? f16_nan(in[i]) : __float2half_rn(in[i]);
}

template <typename Out, typename Kernel>
void run_cast(Kernel kernel, const float* host_in, uint16_t* host_out, size_t n) {
  if (n == 0) return;
  float* d_in = nullptr;
  Out* d_out = nullptr;
  KILN_CUDA_CHECK(cudaMalloc(&d_in, n * sizeof(float)));
  cudaError_t err = cudaMalloc(&d_out, n * sizeof(Out));
  if (err != cudaSuccess) {
    cudaFree(d_in);
    KILN_CUDA_CHECK(err);
  }
  err = cudaMemcpy(d_in, host_in, n * sizeof(float), cudaMemcpyHostToDevice);
  if (err == cudaSuccess) {
    const int threads = 256;
    const int blocks = static_cast<int>(std::min<size_t>((n + threads - 1) / threads, 65535));
    kernel<<<blocks, threads>>>(d_in, d_out, n);
    err = cudaGetLastError();
  }
  if (err == cudaSuccess) err = cudaMemcpy(host_out, d_out, n * sizeof(Out), cudaMemcpyDeviceToHost);
  cudaFree(d_in);
  cudaFree(d_out);
  KILN_CUDA_CHECK(err);
}

}  // namespace

void cast_f32_to_bf16(const float* host_in, uint16_t* host_out, size_t n) {
  run_cast<__nv_bfloat16>(f32_to_bf16_kernel, host_in, host_out, n);
}

void cast_f32_to_f16(const float* host_in, uint16_t* host_out, size_t n) {
  run_cast<__half>(f32_to_f16_kernel, host_in, host_out, n);
}

}  // namespace kiln::testing
