// wgmma (sm_90a) wrappers for the attention kernels: warpgroup-wide 64 x N x 16 products with fp32 accumulators
// in the mma.sync C layout (accumulator d[j][e]: n-block j of 8 columns, e as in m16n8k16), operands described
// by shared-memory descriptors (sw128_desc) or, for A, held in registers (the m16n8k16 A layout, per warp).
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace kiln::cuda::attn::sm90 {

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Keeps the compiler from moving accumulator reads or writes across the asynchronous products.
template <int NB>
__device__ __forceinline__ void fence_acc(float (&d)[NB][4]) {
#pragma unroll
  for (int j = 0; j < NB; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+f"(d[j][e])::"memory");
}

// Descriptor of a K-major or MN-major operand in the 128-byte swizzled layout (8-row atoms of 128 bytes, 1024
// bytes apart: the stride byte offset); lbo is the byte distance between 64-element column halves for MN-major
// operands (ignored for K-major ones). The tile must start 1024-byte aligned (base offset 0).
__device__ __forceinline__ uint64_t sw128_desc(uint32_t smem_addr, uint32_t lbo) {
  return static_cast<uint64_t>((smem_addr & 0x3FFFF) >> 4) | (static_cast<uint64_t>(lbo >> 4) << 16) |
         (static_cast<uint64_t>(1024 >> 4) << 32) | (1ull << 62);
}

// Wgmma<T, N>: d (+)= A B for A [64 x 16] and B [16 x N], T = bf16 or f16, accumulate != 0 adding to d.
// - ss: A and B (K-major) from shared memory;
// - rs_k: A from registers (this warp's 16 rows, the m16n8k16 A fragment), B K-major from shared memory;
// - rs_mn: A from registers, B MN-major (transposed) from shared memory.
// One macro per N writes the three for an element type (TY: its PTX name), instantiated for both below.
template <typename T, int N>
struct Wgmma;

#define KILN_WGMMA_N32(T, TY)                                                                                     \
  template <>                                                                                                     \
  struct Wgmma<T, 32> {                                                                                          \
    static __device__ __forceinline__ void ss(float (&d)[4][4], uint64_t a, uint64_t b, int accumulate) {       \
      asm volatile(                                                                                               \
          "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"                                                       \
          "wgmma.mma_async.sync.aligned.m64n32k16.f32." TY "." TY " "                                              \
          "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, p, 1, 1, 0, 0;\n}\n"                                          \
          : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), \
          "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), \
          "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), \
          "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]) \
          : "l"(a), "l"(b), "r"(accumulate));                                                                     \
    }                                                                                                             \
    template <int TNSP>                                                                                           \
    static __device__ __forceinline__ void rs(float (&d)[4][4], const uint32_t (&a)[4], uint64_t b,             \
                                              int accumulate) {                                                   \
      asm volatile(                                                                                               \
          "{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"                                                       \
          "wgmma.mma_async.sync.aligned.m64n32k16.f32." TY "." TY " "                                              \
          "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, {%16, %17, %18, %19}, %20, p, 1, 1, %22;\n}\n"      \
          : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), \
          "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), \
          "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), \
          "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]) \
          : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(accumulate), "n"(TNSP));                      \
    }                                                                                                             \
    static __device__ __forceinline__ void rs_k(float (&d)[4][4], const uint32_t (&a)[4], uint64_t b,           \
                                                int accumulate) {                                                 \
      rs<0>(d, a, b, accumulate);                                                                                 \
    }                                                                                                             \
    static __device__ __forceinline__ void rs_mn(float (&d)[4][4], const uint32_t (&a)[4], uint64_t b,          \
                                                 int accumulate = 1) {                                            \
      rs<1>(d, a, b, accumulate);                                                                                 \
    }                                                                                                             \
  };

#define KILN_WGMMA_N64(T, TY)                                                                                     \
  template <>                                                                                                     \
  struct Wgmma<T, 64> {                                                                                          \
    static __device__ __forceinline__ void ss(float (&d)[8][4], uint64_t a, uint64_t b, int accumulate) {       \
      asm volatile(                                                                                               \
          "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"                                                       \
          "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " "                                              \
          "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"                                          \
          : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), \
          "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), \
          "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), \
          "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), \
          "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), \
          "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), \
          "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), \
          "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]) \
          : "l"(a), "l"(b), "r"(accumulate));                                                                     \
    }                                                                                                             \
    template <int TNSP>                                                                                           \
    static __device__ __forceinline__ void rs(float (&d)[8][4], const uint32_t (&a)[4], uint64_t b,             \
                                              int accumulate) {                                                   \
      asm volatile(                                                                                               \
          "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"                                                       \
          "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " "                                              \
          "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, %38;\n}\n"      \
          : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), \
          "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), \
          "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), \
          "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), \
          "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), \
          "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), \
          "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), \
          "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]) \
          : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(accumulate), "n"(TNSP));                      \
    }                                                                                                             \
    static __device__ __forceinline__ void rs_k(float (&d)[8][4], const uint32_t (&a)[4], uint64_t b,           \
                                                int accumulate) {                                                 \
      rs<0>(d, a, b, accumulate);                                                                                 \
    }                                                                                                             \
    static __device__ __forceinline__ void rs_mn(float (&d)[8][4], const uint32_t (&a)[4], uint64_t b,          \
                                                 int accumulate = 1) {                                            \
      rs<1>(d, a, b, accumulate);                                                                                 \
    }                                                                                                             \
  };

#define KILN_WGMMA_N128(T, TY)                                                                                     \
  template <>                                                                                                     \
  struct Wgmma<T, 128> {                                                                                          \
    static __device__ __forceinline__ void ss(float (&d)[16][4], uint64_t a, uint64_t b, int accumulate) {       \
      asm volatile(                                                                                               \
          "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"                                                       \
          "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " "                                              \
          "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"                                          \
          : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), \
          "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), \
          "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), \
          "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), \
          "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), \
          "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), \
          "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), \
          "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]), \
          "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]), \
          "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), \
          "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]), \
          "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]), \
          "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]), \
          "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]), \
          "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]), \
          "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3]) \
          : "l"(a), "l"(b), "r"(accumulate));                                                                     \
    }                                                                                                             \
    template <int TNSP>                                                                                           \
    static __device__ __forceinline__ void rs(float (&d)[16][4], const uint32_t (&a)[4], uint64_t b,             \
                                              int accumulate) {                                                   \
      asm volatile(                                                                                               \
          "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"                                                       \
          "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " "                                              \
          "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, %70;\n}\n"      \
          : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), \
          "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), \
          "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), \
          "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), \
          "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), \
          "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), \
          "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), \
          "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]), \
          "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]), \
          "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), \
          "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]), \
          "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]), \
          "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]), \
          "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]), \
          "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]), \
          "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3]) \
          : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(accumulate), "n"(TNSP));                      \
    }                                                                                                             \
    static __device__ __forceinline__ void rs_k(float (&d)[16][4], const uint32_t (&a)[4], uint64_t b,           \
                                                int accumulate) {                                                 \
      rs<0>(d, a, b, accumulate);                                                                                 \
    }                                                                                                             \
    static __device__ __forceinline__ void rs_mn(float (&d)[16][4], const uint32_t (&a)[4], uint64_t b,          \
                                                 int accumulate = 1) {                                            \
      rs<1>(d, a, b, accumulate);                                                                                 \
    }                                                                                                             \
  };

KILN_WGMMA_N32(__nv_bfloat16, "bf16")
KILN_WGMMA_N32(__half, "f16")
KILN_WGMMA_N64(__nv_bfloat16, "bf16")
KILN_WGMMA_N64(__half, "f16")
KILN_WGMMA_N128(__nv_bfloat16, "bf16")
KILN_WGMMA_N128(__half, "f16")
#undef KILN_WGMMA_N32
#undef KILN_WGMMA_N64
#undef KILN_WGMMA_N128

}  // namespace kiln::cuda::attn::sm90
