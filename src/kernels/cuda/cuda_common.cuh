// Shared pieces of the CUDA kernels: error checks, element-type traits, vector access, reductions.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "kernels/cuda/cuda_ops.h"
#include "kiln/error.h"

#define KILN_CUDA_CHECK(expr)                                                                                          \
  do {                                                                                                                 \
    cudaError_t err_ = (expr);                                                                                         \
    if (err_ != cudaSuccess)                                                                                           \
      KILN_THROW("CUDA error {} ({}) at {}:{}", cudaGetErrorName(err_), cudaGetErrorString(err_), __FILE__, __LINE__); \
  } while (0)

// After a launch: a bad configuration shows here, a fault at the next synchronizing call.
#define KILN_CUDA_LAUNCH_CHECK() KILN_CUDA_CHECK(cudaGetLastError())

namespace kiln::cuda {

// Element traits for the 16-bit types: conversions and the packed pair type.
template <typename T>
struct Elem;
template <>
struct Elem<__nv_bfloat16> {
  using Pair = __nv_bfloat162;
  static __device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __device__ __forceinline__ __nv_bfloat16 from_f(float v) { return __float2bfloat16_rn(v); }
  static __device__ __forceinline__ float2 to_f2(Pair v) { return __bfloat1622float2(v); }
  static __device__ __forceinline__ Pair from_f2(float a, float b) { return __floats2bfloat162_rn(a, b); }
};
template <>
struct Elem<__half> {
  using Pair = __half2;
  static __device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
  static __device__ __forceinline__ __half from_f(float v) { return __float2half_rn(v); }
  static __device__ __forceinline__ float2 to_f2(Pair v) { return __half22float2(v); }
  static __device__ __forceinline__ Pair from_f2(float a, float b) { return __floats2half2_rn(a, b); }
};
template <>
struct Elem<float> {
  static __device__ __forceinline__ float to_f(float v) { return v; }
  static __device__ __forceinline__ float from_f(float v) { return v; }
};

template <typename T>
__device__ __forceinline__ float to_f(T v) {
  return Elem<T>::to_f(v);
}
template <typename T>
__device__ __forceinline__ T from_f(float v) {
  return Elem<T>::from_f(v);
}

// As from_f, but an f16 result saturates at +-65504 instead of becoming infinite (NaN stays NaN): the stores of
// activations that feed a GEMM, so that an f16 compute type degrades a rare out-of-range value instead of
// turning the rest of the forward into inf/NaN (bf16 and f32 have the range and are unchanged).
template <typename T>
__device__ __forceinline__ T from_f_sat(float v) {
  if constexpr (std::is_same_v<T, __half>) v = v > 65504.0f ? 65504.0f : (v < -65504.0f ? -65504.0f : v);
  return Elem<T>::from_f(v);
}

// fp8 e4m3 KV cache values (one byte each, no scale): a float rounds to nearest even and saturates at +-448
// (NaN stays NaN), as kiln::round_to_fp8_e4m3 on the host; widening back to f16 or bf16 is exact (every e4m3
// value is both).
__device__ __forceinline__ __nv_fp8x2_storage_t to_fp8x2(float lo, float hi) {
  return __nv_cvt_float2_to_fp8x2(make_float2(lo, hi), __NV_SATFINITE, __NV_E4M3);
}
// Two e4m3 values (the low byte first) as a pair of T, packed as T's Pair is.
template <typename T>
__device__ __forceinline__ uint32_t widen_fp8x2(uint16_t v) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(v), __NV_E4M3);
  if constexpr (std::is_same_v<T, __half>) {
    return static_cast<uint32_t>(h.x) | (static_cast<uint32_t>(h.y) << 16);
  } else {
    const float2 f = __half22float2(__half2(h));
    const __nv_bfloat162 b = __floats2bfloat162_rn(f.x, f.y);
    return *reinterpret_cast<const uint32_t*>(&b);
  }
}
__device__ __forceinline__ float fp8_to_f(uint8_t v) {
  return __half2float(__half(__nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(v), __NV_E4M3)));
}

// 8 16-bit elements in one 16-byte access.
template <typename T>
union Vec8 {
  uint4 u;
  T h[8];
};

template <typename T>
__device__ __forceinline__ void load8(const T* p, float (&f)[8]) {
  Vec8<T> v;
  v.u = *reinterpret_cast<const uint4*>(p);
#pragma unroll
  for (int i = 0; i < 8; ++i) f[i] = to_f(v.h[i]);
}

// Shared-memory address of a generic pointer into shared memory.
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// 16-byte asynchronous copy global -> shared; src_bytes 0 fills the destination with zeros.
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}
// 4-byte asynchronous copy global -> shared.
__device__ __forceinline__ void cp_async4(uint32_t dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(dst), "l"(src));
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::);
}
// Waits until at most N of this thread's committed groups are in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// `scratch` holds 32 floats; the call synchronizes the block twice.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float r = lane < nwarps ? scratch[lane] : 0.0f;
  r = warp_sum(r);
  __syncthreads();
  return r;
}

inline bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

// Launches kernel_t<T> for the element type t (bf16 or f16).
#define KILN_DISPATCH_16(t, T, ...)                            \
  do {                                                         \
    if ((t) == ::kiln::cuda::ElemType::BF16) {                 \
      using T = __nv_bfloat16;                                 \
      __VA_ARGS__;                                             \
    } else if ((t) == ::kiln::cuda::ElemType::F16) {           \
      using T = __half;                                        \
      __VA_ARGS__;                                             \
    } else {                                                   \
      KILN_THROW("CUDA op: element type must be bf16 or f16"); \
    }                                                          \
  } while (0)

}  // namespace kiln::cuda
