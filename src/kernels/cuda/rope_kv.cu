// RoPE (half-split or interleaved, partial rotary, optional per-head q/k RMSNorm) fused with writing K and V
// into their paged KV-cache slots. One CTA per token, two kernels:
// - rope_kv_vec_kernel, for half-split rotation of a multiple of 16 dims over 16-byte aligned rows (every
//   Llama/Mistral/Qwen/Gemma/Falcon/NeoX shape): a thread takes a unit of a head, 8 dims and their rotation
//   partners 8 (rotary) or 8 pass-through dims, with 16-byte loads and stores straight from and to global memory;
//   a head's units are neighbouring lanes, so its q/k RMSNorm is a shuffle reduction.
// - rope_kv_kernel, for the rest (interleaved pairs, odd rotary widths, unaligned rows): it stages the token's
//   whole q|k|v row in shared memory with asynchronous copies, then one warp per head rotates.
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

// Angles of position `pos` for the rotary pairs, in double as the CPU tables are (positions times inverse
// frequencies reach 1e5 radians).
__device__ __forceinline__ void rope_angles(int64_t pos, const double* inv_freq, int half, float* cs_cos,
                                            float* cs_sin) {
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    double s, c;
    sincos(static_cast<double>(pos) * inv_freq[i], &s, &c);
    cs_cos[i] = static_cast<float>(c);
    cs_sin[i] = static_cast<float>(s);
  }
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
  rope_angles(a.positions[t], a.inv_freq, half, cs_cos, cs_sin);
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

// 8 consecutive elements of T as floats, and back (16-byte accesses; fp8: 8 bytes).
template <typename T>
__device__ __forceinline__ void load8(const T* p, float* x) {
  const uint4 u = *reinterpret_cast<const uint4*>(p);
  const auto* pr = reinterpret_cast<const typename Elem<T>::Pair*>(&u);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const float2 f = Elem<T>::to_f2(pr[j]);
    x[2 * j] = f.x;
    x[2 * j + 1] = f.y;
  }
}
template <typename T, bool F8>
__device__ __forceinline__ void store8(void* base, int64_t off, const float* x) {
  if constexpr (F8) {
    uint2 u;
    auto* pr = reinterpret_cast<__nv_fp8x2_storage_t*>(&u);
#pragma unroll
    for (int j = 0; j < 4; ++j) pr[j] = to_fp8x2(x[2 * j], x[2 * j + 1]);
    *reinterpret_cast<uint2*>(static_cast<uint8_t*>(base) + off) = u;
  } else {
    uint4 u;
    auto* pr = reinterpret_cast<typename Elem<T>::Pair*>(&u);
#pragma unroll
    for (int j = 0; j < 4; ++j) pr[j] = Elem<T>::from_f2(x[2 * j], x[2 * j + 1]);
    *reinterpret_cast<uint4*>(static_cast<T*>(base) + off) = u;
  }
}

constexpr int kRopeVecThreads = 128;

// The vectorized path (see the top). Units of a head: rotary_dim / 16 rotary units (dims 8u.. and their partners
// rotary_dim / 2 + 8u..), then (head_dim - rotary_dim) / 8 pass-through units. With q/k norms the units per head
// are a power of two (the host checks), so a head's units are an aligned lane group of one warp.
template <typename T, bool F8>
__global__ void __launch_bounds__(kRopeVecThreads) rope_kv_vec_kernel(T* qkv, RopeKvArgs a) {
  __shared__ float cs_cos[kMaxHeadDim / 2], cs_sin[kMaxHeadDim / 2];
  const int64_t t = blockIdx.x;
  const int D = a.head_dim, H = a.num_heads, Hkv = a.num_kv_heads;
  const int half = a.rotary_dim / 2, rot_units = a.rotary_dim / 16, units = rot_units + (D - a.rotary_dim) / 8;
  rope_angles(a.positions[t], a.inv_freq, half, cs_cos, cs_sin);
  __syncthreads();
  T* row = qkv + t * a.ld_qkv;
  const int32_t slot = a.slot_mapping ? a.slot_mapping[t] : -1;
  const int qk_items = (H + (slot >= 0 ? Hkv : 0)) * units;
  const int items = qk_items + (slot >= 0 ? Hkv * (D / 8) : 0);
  const int lane = threadIdx.x & 31;
  for (int it = threadIdx.x; it < items; it += blockDim.x) {
    if (it >= qk_items) {  // a V unit: 8 dims into the cache
      const int v = it - qk_items, h = v / (D / 8), d = 8 * (v % (D / 8));
      float x[8];
      load8(row + static_cast<int64_t>(H + Hkv + h) * D + d, x);
      store8<T, F8>(a.v_cache, cache_offset(slot, h, a.block_stride, a.block_size, D) + d, x);
      continue;
    }
    const int hh = it / units, u = it % units;
    const bool is_q = hh < H, rot = u < rot_units;
    const int d0 = rot ? 8 * u : a.rotary_dim + 8 * (u - rot_units), d1 = half + 8 * u;
    T* src = row + static_cast<int64_t>(hh) * D;
    float x0[8], x1[8];
    load8(src + d0, x0);
    if (rot) load8(src + d1, x1);
    if (const T* nw = static_cast<const T*>(is_q ? a.q_norm : a.k_norm)) {
      float ss = 0.0f;
#pragma unroll
      for (int j = 0; j < 8; ++j) ss += x0[j] * x0[j] + (rot ? x1[j] * x1[j] : 0.0f);
      const unsigned group = (units == 32 ? 0xffffffffu : ((1u << units) - 1u)) << (lane & ~(units - 1));
      for (int o = units / 2; o > 0; o >>= 1) ss += __shfl_xor_sync(group, ss, o);
      const float inv = rsqrtf(ss / static_cast<float>(D) + a.qk_norm_eps);
      float w[8];
      load8(nw + d0, w);
#pragma unroll
      for (int j = 0; j < 8; ++j) x0[j] *= inv * w[j];
      if (rot) {
        load8(nw + d1, w);
#pragma unroll
        for (int j = 0; j < 8; ++j) x1[j] *= inv * w[j];
      }
    }
    if (rot) {
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const float c = cs_cos[d0 + j], s = cs_sin[d0 + j];
        const float y0 = x0[j] * c - x1[j] * s, y1 = x1[j] * c + x0[j] * s;
        x0[j] = y0;
        x1[j] = y1;
      }
    }
    if (is_q) {
      store8<T, false>(src, d0, x0);
      if (rot) store8<T, false>(src, d1, x1);
    } else {
      const int64_t off = cache_offset(slot, hh - H, a.block_stride, a.block_size, D);
      store8<T, F8>(a.k_cache, off + d0, x0);
      if (rot) store8<T, F8>(a.k_cache, off + d1, x1);
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
  auto aligned = [](const void* p, uintptr_t al) { return reinterpret_cast<uintptr_t>(p) % al == 0; };
  const int units = a.rotary_dim / 16 + (D - a.rotary_dim) / 8;
  const uintptr_t cache_al = a.kv_fp8 ? 8 : 16;
  const bool vec = aligned16 && !a.interleaved && D % 8 == 0 && a.rotary_dim % 16 == 0 &&
                   (!a.slot_mapping || (aligned(a.k_cache, cache_al) && aligned(a.v_cache, cache_al) &&
                                        a.block_stride % 8 == 0)) &&
                   (!(a.q_norm || a.k_norm) || ((units & (units - 1)) == 0 && aligned(a.q_norm, 16) &&
                                                aligned(a.k_norm, 16)));
  if (vec) {
    KILN_DISPATCH_16(t, T, {
      auto kernel = a.kv_fp8 ? rope_kv_vec_kernel<T, true> : rope_kv_vec_kernel<T, false>;
      kernel<<<static_cast<unsigned>(a.num_tokens), kRopeVecThreads, 0, stream>>>(static_cast<T*>(qkv), a);
    });
    KILN_CUDA_LAUNCH_CHECK();
    return;
  }
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
