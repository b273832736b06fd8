// Casts between f32 and the 16-bit float types on the GPU.
#include <algorithm>

#include "core/random_normal.h"
#include "kernels/cuda/cuda_common.cuh"

namespace kiln::cuda {

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

void cast_f32_to_bf16(const float* host_in, uint16_t* host_out, size_t n) {
  run_cast<__nv_bfloat16>(f32_to_bf16_kernel, host_in, host_out, n);
}

void cast_f32_to_f16(const float* host_in, uint16_t* host_out, size_t n) {
  run_cast<__half>(f32_to_f16_kernel, host_in, host_out, n);
}

}  // namespace kiln::cuda
