// RoPE (half-split or interleaved, partial rotary, optional per-head q/k RMSNorm) fused with writing K and V
// into their paged KV-cache slots. One CTA per token: it stages the token's whole q|k|v row in shared memory with
// asynchronous copies (all of them in flight while the angles are computed), then one warp per head rotates.
#include "kernels/cuda/cuda_common.cuh"

namespace kiln::cuda {
namespace {

constexpr int kRopeWarps = 8;
constexpr int kMaxHeadDim = 256;

// Element offset of (slot, kv head): blocks block_stride apart, each [num_kv_heads, block_size, head_dim].
__device__ __forceinline__ int64_t cache_offset(int32_t slot, int h, int64_t block_stride, int block_size,
                                                int head_dim) {
  const int64_t block = slot / block_size;
  const int64_t off = slot % block_size;
  return block * block_stride + (h * block_size + off) * head_dim;
}

// F8: the cache holds fp8 e4m3 (one byte per element) instead of T. Dynamic shared memory: the token's (H + 2 Hkv) D
// row; aligned16: the rows allow 16-byte copies (else 4-byte ones).
template <typename T, bool F8>
__global__ void __launch_bounds__(kRopeWarps * 32) rope_kv_kernel(T* qkv, RopeKvArgs a, bool aligned16) {
  __shared__ float cs_cos[kMaxHeadDim / 2], cs_sin[kMaxHeadDim / 2];
  __shared__ float buf[kRopeWarps][kMaxHeadDim];
  extern __shared__ __align__(16) unsigned char row_raw[];
  using P = typename Elem<T>::Pair;
  const int64_t t = blockIdx.x;
  const int D = a.head_dim, H = a.num_heads, Hkv = a.num_kv_heads;
  const int half = a.rotary_dim / 2;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  T* row = qkv + t * a.ld_qkv;
  T* row_s = reinterpret_cast<T*>(row_raw);
  {
    const int n = (H + 2 * Hkv) * D;
    const uint32_t dst = smem_addr(row_s);
    if (aligned16) {
      for (int c = threadIdx.x; c < n / 8; c += blockDim.x) cp_async16(dst + 16 * c, row + 8 * c, 16);
    } else {
      for (int c = threadIdx.x; c < n / 2; c += blockDim.x) cp_async4(dst + 4 * c, row + 2 * c);
    }
    cp_async_commit();
  }
  const int64_t pos = a.positions[t];
  // Angles in double as the CPU tables are (positions times inverse frequencies reach 1e5 radians).
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    double s, c;
    sincos(static_cast<double>(pos) * a.inv_freq[i], &s, &c);
    cs_cos[i] = static_cast<float>(c);
    cs_sin[i] = static_cast<float>(s);
  }
  cp_async_wait<0>();
  __syncthreads();

  const int32_t slot = a.slot_mapping ? a.slot_mapping[t] : -1;
  float* b = buf[warp];
  for (int hh = warp; hh < H + Hkv; hh += kRopeWarps) {
    const bool is_q = hh < H;
    const T* src = row_s + hh * D;  // k heads follow the q heads
    const T* nw = static_cast<const T*>(is_q ? a.q_norm : a.k_norm);
    float ss = 0.0f;
    for (int p = lane; p < D / 2; p += 32) {
      const float2 v = Elem<T>::to_f2(reinterpret_cast<const P*>(src)[p]);
      b[2 * p] = v.x;
      b[2 * p + 1] = v.y;
      ss += v.x * v.x + v.y * v.y;
    }
    if (nw) {
      const float inv = rsqrtf(warp_sum(ss) / static_cast<float>(D) + a.qk_norm_eps);
      for (int p = lane; p < D / 2; p += 32) {
        b[2 * p] *= inv * to_f(nw[2 * p]);
        b[2 * p + 1] *= inv * to_f(nw[2 * p + 1]);
      }
    }
    __syncwarp();
    for (int i = lane; i < half; i += 32) {
      const int i0 = a.interleaved ? 2 * i : i;
      const int i1 = a.interleaved ? 2 * i + 1 : i + half;
      const float x0 = b[i0], x1 = b[i1];
      b[i0] = x0 * cs_cos[i] - x1 * cs_sin[i];
      b[i1] = x1 * cs_cos[i] + x0 * cs_sin[i];
    }
    __syncwarp();
    if (is_q || !F8) {
      P* dst = nullptr;
      if (is_q) {
        dst = reinterpret_cast<P*>(row + static_cast<int64_t>(hh) * D);
      } else if (slot >= 0) {
        dst = reinterpret_cast<P*>(static_cast<T*>(a.k_cache) +
                                   cache_offset(slot, hh - H, a.block_stride, a.block_size, D));
      }
      if (dst)
        for (int p = lane; p < D / 2; p += 32) dst[p] = Elem<T>::from_f2(b[2 * p], b[2 * p + 1]);
    } else if (slot >= 0) {
      auto* dst = reinterpret_cast<__nv_fp8x2_storage_t*>(static_cast<uint8_t*>(a.k_cache) +
                                                          cache_offset(slot, hh - H, a.block_stride, a.block_size, D));
      for (int p = lane; p < D / 2; p += 32) dst[p] = to_fp8x2(b[2 * p], b[2 * p + 1]);
    }
    __syncwarp();
  }

  if (slot >= 0) {
    const T* v = row_s + (H + Hkv) * D;
    const int pairs = Hkv * D / 2;
    for (int p = threadIdx.x; p < pairs; p += blockDim.x) {
      const int h = (2 * p) / D, d = (2 * p) % D;
      const int64_t off = cache_offset(slot, h, a.block_stride, a.block_size, D) + d;
      if constexpr (F8) {
        const float2 f = Elem<T>::to_f2(reinterpret_cast<const P*>(v)[p]);
        *reinterpret_cast<__nv_fp8x2_storage_t*>(static_cast<uint8_t*>(a.v_cache) + off) = to_fp8x2(f.x, f.y);
      } else {
        *reinterpret_cast<P*>(static_cast<T*>(a.v_cache) + off) = reinterpret_cast<const P*>(v)[p];
      }
    }
  }
}

}  // namespace

void rope_kv_write(ElemType t, void* qkv, const RopeKvArgs& args, cudaStream_t stream) {
  if (args.num_tokens <= 0) return;
  RopeKvArgs a = args;
  const int D = a.head_dim;
  KILN_CHECK(D > 0 && D % 2 == 0 && D <= kMaxHeadDim, "RoPE: head_dim {} must be even and at most {}", D, kMaxHeadDim);
  KILN_CHECK(a.rotary_dim >= 0 && a.rotary_dim % 2 == 0 && a.rotary_dim <= D,
             "RoPE: rotary_dim {} must be even and at most head_dim {}", a.rotary_dim, D);
  KILN_CHECK(a.num_heads > 0 && a.num_kv_heads > 0, "RoPE: head counts must be positive");
  KILN_CHECK(a.block_size > 0, "RoPE: block size must be positive");
  if (a.block_stride == 0) a.block_stride = int64_t{a.num_kv_heads} * a.block_size * D;
  KILN_CHECK(a.block_stride % 2 == 0 && a.block_stride >= int64_t{a.num_kv_heads} * a.block_size * D,
             "RoPE: block stride {} must be even and hold a block", a.block_stride);
  KILN_CHECK(a.positions && (a.rotary_dim == 0 || a.inv_freq), "RoPE: positions and inverse frequencies are needed");
  KILN_CHECK(!a.slot_mapping || (a.k_cache && a.v_cache), "RoPE: a slot mapping needs both caches");
  if (a.ld_qkv == 0) a.ld_qkv = static_cast<int64_t>(a.num_heads + 2 * a.num_kv_heads) * D;
  KILN_CHECK(a.ld_qkv % 2 == 0, "RoPE: the qkv row stride must be even");
  KILN_CHECK(a.num_tokens <= 0x7fffffff, "RoPE: too many tokens for one launch");
  KILN_CHECK(reinterpret_cast<uintptr_t>(qkv) % 4 == 0, "RoPE: the qkv buffer must be 4-byte aligned");
  const int64_t n = int64_t{a.num_heads + 2 * a.num_kv_heads} * D;
  const size_t row_bytes = static_cast<size_t>(n) * 2;
  // The row in shared memory next to the kernel's 9 KB of static tables (227 KB per CTA on sm_90, 163 KB on sm_80).
  constexpr size_t kMaxRowBytes = 96u << 10;
  KILN_CHECK(row_bytes <= kMaxRowBytes, "RoPE: {} heads of {} dims are more than one CTA stages ({} KB at most)",
             a.num_heads + 2 * a.num_kv_heads, D, kMaxRowBytes >> 10);
  const bool aligned16 = reinterpret_cast<uintptr_t>(qkv) % 16 == 0 && a.ld_qkv % 8 == 0 && n % 8 == 0;
  KILN_DISPATCH_16(t, T, {
    const unsigned grid = static_cast<unsigned>(a.num_tokens);
    auto kernel = a.kv_fp8 ? rope_kv_kernel<T, true> : rope_kv_kernel<T, false>;
    if (row_bytes > (48u << 10))  // rows of more than 48 KB: rare (384 heads of 64 dims), so raised per call
      KILN_CUDA_CHECK(
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kMaxRowBytes)));
    kernel<<<grid, kRopeWarps * 32, row_bytes, stream>>>(static_cast<T*>(qkv), a, aligned16);
  });
  KILN_CUDA_LAUNCH_CHECK();
}

}  // namespace kiln::cuda
