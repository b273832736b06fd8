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

// Wgmma<T, N>: d (+)= A B for A [64 x 16] and B [16 x N], T = bf16 or f16, accumulate != 0 adding to d, A from
// registers (this warp's 16 rows, the m16n8k16 A fragment):
// - rs_k: B K-major from shared memory;
// - rs_mn: B MN-major (transposed) from shared memory.
// One macro writes them for a shape and an element type (TY: its PTX name), instantiated for both below. A shape is
// its N (64: S = Q Kᵀ over 64-key tiles; 128: O += P V over head_dim 128), its accumulator blocks NB = N / 8 (ACC:
// the "+f" operands of d, 4 per block; REGS: their PTX list, %0 .. %(4 NB - 1)) and the numbers of the operands
// after them: a[0..3], b, accumulate, TNSP as RS ("{%a0, .., %a3}, %b"), RS_P and RS_T.
template <typename T, int N>
struct Wgmma;

#define KILN_WGMMA_ACC4(j) "+f"(d[j][0]), "+f"(d[j][1]), "+f"(d[j][2]), "+f"(d[j][3])
#define KILN_WGMMA_ACC_N64                                                                            \
  KILN_WGMMA_ACC4(0), KILN_WGMMA_ACC4(1), KILN_WGMMA_ACC4(2), KILN_WGMMA_ACC4(3), KILN_WGMMA_ACC4(4), \
      KILN_WGMMA_ACC4(5), KILN_WGMMA_ACC4(6), KILN_WGMMA_ACC4(7)
#define KILN_WGMMA_ACC_N128                                                                                  \
  KILN_WGMMA_ACC_N64, KILN_WGMMA_ACC4(8), KILN_WGMMA_ACC4(9), KILN_WGMMA_ACC4(10), KILN_WGMMA_ACC4(11), \
      KILN_WGMMA_ACC4(12), KILN_WGMMA_ACC4(13), KILN_WGMMA_ACC4(14), KILN_WGMMA_ACC4(15)
#define KILN_WGMMA_REGS_N64 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define KILN_WGMMA_REGS_N128 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"

#define KILN_WGMMA(T, TY, N, ACC, REGS, RS, RS_P, RS_T)                                                           \
  template <>                                                                                                     \
  struct Wgmma<T, N> {                                                                                            \
    template <int TNSP>                                                                                           \
    static __device__ __forceinline__ void rs(float (&d)[N / 8][4], const uint32_t (&a)[4], uint64_t b,         \
                                              int accumulate) {                                                   \
      asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " RS_P ", 0;\n"                                            \
                   "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." TY "." TY " " REGS ", " RS                  \
                   ", p, 1, 1, " RS_T ";\n}\n"                                                                  \
                   : ACC                                                                                          \
                   : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(accumulate), "n"(TNSP));            \
    }                                                                                                             \
    static __device__ __forceinline__ void rs_k(float (&d)[N / 8][4], const uint32_t (&a)[4], uint64_t b,       \
                                                int accumulate) {                                                 \
      rs<0>(d, a, b, accumulate);                                                                                 \
    }                                                                                                             \
    static __device__ __forceinline__ void rs_mn(float (&d)[N / 8][4], const uint32_t (&a)[4], uint64_t b,      \
                                                 int accumulate = 1) {                                            \
      rs<1>(d, a, b, accumulate);                                                                                 \
    }                                                                                                             \
  };

// Both element types of shape N.
#define KILN_WGMMA_SHAPE(N, RS, RS_P, RS_T)                                                       \
  KILN_WGMMA(__nv_bfloat16, "bf16", N, KILN_WGMMA_ACC_N##N, KILN_WGMMA_REGS_N##N, RS, RS_P, RS_T) \
  KILN_WGMMA(__half, "f16", N, KILN_WGMMA_ACC_N##N, KILN_WGMMA_REGS_N##N, RS, RS_P, RS_T)
KILN_WGMMA_SHAPE(64, "{%32, %33, %34, %35}, %36", "%37", "%38")
KILN_WGMMA_SHAPE(128, "{%64, %65, %66, %67}, %68", "%69", "%70")
#undef KILN_WGMMA_SHAPE
#undef KILN_WGMMA
#undef KILN_WGMMA_REGS_N64
#undef KILN_WGMMA_REGS_N128
#undef KILN_WGMMA_ACC_N128
#undef KILN_WGMMA_ACC_N64
#undef KILN_WGMMA_ACC4

}  // namespace kiln::cuda::attn::sm90
