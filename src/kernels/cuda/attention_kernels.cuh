// Attention kernels over the paged KV cache, on tensor cores (mma.sync m16n8k16, fp32 accumulation):
// a warp computes 16 query rows against a tile of keys held in shared memory, with an online softmax
// (FlashAttention-2 style). Decode packs the query heads of one KV group into the 16 rows and splits the
// context over warps and CTAs (flash-decoding); prefill packs (token, head of the group) pairs into rows
// so each KV tile is loaded once for the whole group. Included only by the attn_hd*.cu instance files.
#pragma once

#include <type_traits>

#include "kernels/cuda/attention_impl.h"
#include "kernels/cuda/cuda_common.cuh"

namespace kiln::cuda::attn {

// ---------------------------------------------------------------------------------------------
// PTX wrappers.

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte asynchronous copy global -> shared; src_bytes 0 fills the destination with zeros.
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::);
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// c += a (16x16, row) * b (16x8, col), fp32 accumulators.
template <typename T>
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same<T, __nv_bfloat16>::value) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  typename Elem<T>::Pair v = Elem<T>::from_f2(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// ---------------------------------------------------------------------------------------------
// Shared-memory tiles: rows of D elements padded by 8 (16 bytes) so that ldmatrix's eight row
// addresses fall in distinct bank groups for every head_dim used (64, 80, 96, 128, 256).
template <int D>
struct Tile {
  static constexpr int kStride = D + 8;  // elements
  static constexpr int kChunks = D / 8;  // 16-byte chunks per row
};

// Element offset of token `tok` of KV head `kvh` for a sequence's block table (blocks block_stride apart).
__device__ __forceinline__ int64_t kv_offset(const int32_t* table, int tok, int kvh, int64_t block_stride,
                                             int block_size, int D) {
  const int64_t block = table[tok / block_size];
  return block * block_stride + static_cast<int64_t>(kvh * block_size + tok % block_size) * D;
}

// Issues the copies of keys and values [t0, t0 + TOK) (zeros past `end`) into k_s / v_s, spread over the
// NTHREADS threads of which this is thread `tid`. Unrolled so the block-table reads of a thread's rows are
// all in flight at once.
template <typename T, int D, int TOK, int NTHREADS>
__device__ __forceinline__ void load_kv_tile(const Params& p, const int32_t* table, int kvh, int t0, int end, T* k_s,
                                             T* v_s, int tid) {
  using TL = Tile<D>;
  constexpr int kTotal = TOK * TL::kChunks;
  constexpr int kIters = (kTotal + NTHREADS - 1) / NTHREADS;
  const T* kc = static_cast<const T*>(p.k_cache);
  const T* vc = static_cast<const T*>(p.v_cache);
  const uint32_t k_base = smem_addr(k_s), v_base = smem_addr(v_s);
  int64_t off[kIters];
  bool valid[kIters];
#pragma unroll
  for (int i = 0; i < kIters; ++i) {
    const int c = tid + i * NTHREADS;
    const int r = c / TL::kChunks, col = c % TL::kChunks;
    const int tok = t0 + r;
    valid[i] = (kTotal % NTHREADS == 0 || c < kTotal) && tok < end;
    off[i] = valid[i] ? kv_offset(table, tok, kvh, p.block_stride, p.block_size, D) + col * 8 : 0;
  }
#pragma unroll
  for (int i = 0; i < kIters; ++i) {
    const int c = tid + i * NTHREADS;
    if (kTotal % NTHREADS != 0 && c >= kTotal) break;
    const int r = c / TL::kChunks, col = c % TL::kChunks;
    const uint32_t so = static_cast<uint32_t>((r * TL::kStride + col * 8) * sizeof(T));
    cp_async16(k_base + so, kc + off[i], valid[i] ? 16 : 0);
    cp_async16(v_base + so, vc + off[i], valid[i] ? 16 : 0);
  }
}

// Loads the A fragments of 16 query rows (row stride Tile<D>::kStride) for k-step ks.
template <int D>
__device__ __forceinline__ void load_q_frag(uint32_t (&a)[4], uint32_t q_base, int ks, int lane) {
  const int row = (lane & 7) + ((lane >> 3) & 1) * 8;
  const int col = ks * 16 + (lane >> 4) * 8;
  ldmatrix_x4(a, q_base + static_cast<uint32_t>((row * Tile<D>::kStride + col) * 2));
}

// Scores S[16 x TOK] = Q Kᵀ for one warp; q fragments from registers (kQReg) or shared memory.
template <typename T, int D, int TOK, bool kQReg>
__device__ __forceinline__ void qk_tile(float (&s)[TOK / 8][4], const uint32_t (&qf)[kQReg ? D / 16 : 1][4],
                                        uint32_t q_base, const T* k_s, int lane) {
#pragma unroll
  for (int nb = 0; nb < TOK / 8; ++nb) s[nb][0] = s[nb][1] = s[nb][2] = s[nb][3] = 0.0f;
  const uint32_t k_base = smem_addr(k_s);
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks) {
    uint32_t a[4];
    if constexpr (kQReg) {
      a[0] = qf[ks][0], a[1] = qf[ks][1], a[2] = qf[ks][2], a[3] = qf[ks][3];
    } else {
      load_q_frag<D>(a, q_base, ks, lane);
    }
#pragma unroll
    for (int np = 0; np < TOK / 16; ++np) {
      uint32_t b[4];
      const int row = np * 16 + (lane & 7) + ((lane >> 4) << 3);
      const int col = ks * 16 + ((lane >> 3) & 1) * 8;
      ldmatrix_x4(b, k_base + static_cast<uint32_t>((row * Tile<D>::kStride + col) * 2));
      mma16816<T>(s[2 * np], a, b[0], b[1]);
      mma16816<T>(s[2 * np + 1], a, b[2], b[3]);
    }
  }
}

// O[16 x D] += P[16 x TOK] V[TOK x D] for one warp, P taken from the score accumulators.
template <typename T, int D, int TOK>
__device__ __forceinline__ void pv_tile(float (&o)[D / 8][4], const float (&s)[TOK / 8][4], const T* v_s, int lane) {
  const uint32_t v_base = smem_addr(v_s);
#pragma unroll
  for (int kk = 0; kk < TOK / 16; ++kk) {
    uint32_t a[4];
    a[0] = pack2<T>(s[2 * kk][0], s[2 * kk][1]);
    a[1] = pack2<T>(s[2 * kk][2], s[2 * kk][3]);
    a[2] = pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
    a[3] = pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
    for (int dp = 0; dp < D / 16; ++dp) {
      uint32_t b[4];
      const int row = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
      const int col = dp * 16 + (lane >> 4) * 8;
      ldmatrix_x4_trans(b, v_base + static_cast<uint32_t>((row * Tile<D>::kStride + col) * 2));
      mma16816<T>(o[2 * dp], a, b[0], b[1]);
      mma16816<T>(o[2 * dp + 1], a, b[2], b[3]);
    }
  }
}

// Turns a raw score q·k into a log2-domain logit: scale, optional soft-capping, then the ALiBi bias
// slope * (key position - query position), as cpu::attention orders them.
__device__ __forceinline__ float logit2(float raw, const Params& p, float slope, int key_pos, int q_pos) {
  if (p.softcap <= 0.0f && p.alibi_slopes == nullptr) return raw * p.scale_log2;
  float sc = raw * p.scale;
  if (p.softcap > 0.0f) sc = p.softcap * tanhf(sc / p.softcap);
  sc += slope * static_cast<float>(key_pos - q_pos);
  return sc * 1.4426950408889634f;
}

// Online-softmax update of one warp's 16 rows (this lane holds rows g and g + 8) with a tile of
// log2-domain scores (masked entries -inf); s becomes the probabilities P.
template <int D, int TOK>
__device__ __forceinline__ void softmax_update(float (&s)[TOK / 8][4], float (&m)[2], float (&l)[2],
                                               float (&o)[D / 8][4]) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float mx = m[h];
#pragma unroll
    for (int nb = 0; nb < TOK / 8; ++nb) mx = fmaxf(mx, fmaxf(s[nb][2 * h], s[nb][2 * h + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    // A row with nothing visible yet keeps -inf; subtract 0 instead so no inf - inf appears.
    const float base = mx == -INFINITY ? 0.0f : mx;
    const float alpha = exp2f(m[h] - base);
    m[h] = mx;
    float sum = 0.0f;
#pragma unroll
    for (int nb = 0; nb < TOK / 8; ++nb) {
      s[nb][2 * h] = exp2f(s[nb][2 * h] - base);
      s[nb][2 * h + 1] = exp2f(s[nb][2 * h + 1] - base);
      sum += s[nb][2 * h] + s[nb][2 * h + 1];
    }
    l[h] = l[h] * alpha + sum;  // per-lane partial; summed over the quad at the end
#pragma unroll
    for (int db = 0; db < D / 8; ++db) {
      o[db][2 * h] *= alpha;
      o[db][2 * h + 1] *= alpha;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Decode: grid (num_splits, num_kv_heads * head_chunks, num_seqs); each warp walks its own tiles of the
// split (tile w, w + WARPS, ...) through a private STAGES-deep cp.async pipeline, then the warps merge.
template <typename T, int D, int WARPS, int TOK, int STAGES>
struct DecodeCfg {
  static constexpr int kStageElems = 2 * TOK * Tile<D>::kStride;  // K and V
  static constexpr int kQElems = 16 * Tile<D>::kStride;
  static constexpr size_t kSmem =
      (static_cast<size_t>(kQElems) + static_cast<size_t>(WARPS) * STAGES * kStageElems) * sizeof(T);
  static constexpr size_t kMergeBytes = static_cast<size_t>(WARPS) * 16 * (D + 2) * sizeof(float);
  static_assert(kMergeBytes <= static_cast<size_t>(WARPS) * STAGES * kStageElems * sizeof(T), "merge space");
  static constexpr bool kQReg = D <= 128;
};

template <typename T, int D, int WARPS, int TOK, int STAGES>
__global__ void __launch_bounds__(WARPS * 32) decode_kernel(Params p) {
  using Cfg = DecodeCfg<T, D, WARPS, TOK, STAGES>;
  using TL = Tile<D>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* q_s = reinterpret_cast<T*>(smem_raw);
  T* kv_s = q_s + Cfg::kQElems;

  const int split = blockIdx.x;
  const int kvh = blockIdx.y / p.head_chunks, chunk = blockIdx.y % p.head_chunks;
  const int seq = blockIdx.z;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int kv_len = p.kv_lens[seq];
  const int pos = kv_len - 1;
  const int lo = p.window > 0 ? max(0, pos - p.window + 1) : 0;
  const int start = lo + split * p.split_tokens;
  const int end = min(kv_len, start + p.split_tokens);
  const int32_t* table = p.block_tables + static_cast<int64_t>(seq) * p.max_blocks_per_seq;

  // Query rows: heads chunk*16 .. of the group (zeros past the group).
  const T* q = static_cast<const T*>(p.q) + static_cast<int64_t>(seq) * p.ldq;
  for (int c = threadIdx.x; c < 16 * TL::kChunks; c += WARPS * 32) {
    const int r = c / TL::kChunks, col = c % TL::kChunks;
    const int gh = chunk * 16 + r;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (gh < p.group) v = *reinterpret_cast<const uint4*>(q + static_cast<int64_t>(kvh * p.group + gh) * D + col * 8);
    *reinterpret_cast<uint4*>(q_s + r * TL::kStride + col * 8) = v;
  }
  __syncthreads();
  const uint32_t q_base = smem_addr(q_s);
  uint32_t qf[Cfg::kQReg ? D / 16 : 1][4];
  if constexpr (Cfg::kQReg) {
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) load_q_frag<D>(qf[ks], q_base, ks, lane);
  }

  float o[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  // ALiBi slopes of this lane's rows g and g + 8 (heads of the group).
  float slope[2] = {0.0f, 0.0f};
  if (p.alibi_slopes) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int gh = chunk * 16 + (lane >> 2) + 8 * h;
      if (gh < p.group) slope[h] = p.alibi_slopes[kvh * p.group + gh];
    }
  }

  T* my_s = kv_s + static_cast<size_t>(warp) * STAGES * Cfg::kStageElems;
  const int ntiles = end > start ? (end - start + TOK - 1) / TOK : 0;
  const int my_tiles = ntiles > warp ? (ntiles - warp + WARPS - 1) / WARPS : 0;
  auto stage_k = [&](int st) { return my_s + st * Cfg::kStageElems; };
  auto stage_v = [&](int st) { return my_s + st * Cfg::kStageElems + TOK * TL::kStride; };
#pragma unroll
  for (int st = 0; st < STAGES - 1; ++st) {
    if (st < my_tiles)
      load_kv_tile<T, D, TOK, 32>(p, table, kvh, start + (warp + st * WARPS) * TOK, end, stage_k(st), stage_v(st),
                                  lane);
    cp_async_commit();
  }
  for (int it = 0; it < my_tiles; ++it) {
    const int nxt = it + STAGES - 1;
    if (nxt < my_tiles)
      load_kv_tile<T, D, TOK, 32>(p, table, kvh, start + (warp + nxt * WARPS) * TOK, end, stage_k(nxt % STAGES),
                                  stage_v(nxt % STAGES), lane);
    cp_async_commit();
    cp_async_wait<STAGES - 1>();
    __syncwarp();
    const int st = it % STAGES;
    float s[TOK / 8][4];
    qk_tile<T, D, TOK, Cfg::kQReg>(s, qf, q_base, stage_k(st), lane);
    const int t0 = start + (warp + it * WARPS) * TOK;
#pragma unroll
    for (int nb = 0; nb < TOK / 8; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int tok = t0 + nb * 8 + 2 * (lane & 3) + (e & 1);
        s[nb][e] = tok < end ? logit2(s[nb][e], p, slope[e >> 1], tok, pos) : -INFINITY;
      }
    softmax_update<D, TOK>(s, m, l, o);
    pv_tile<T, D, TOK>(o, s, stage_v(st), lane);
    __syncwarp();
  }
  cp_async_wait<0>();

  // Merge the warps through shared memory (the KV stages are free now).
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 1);
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 2);
  }
  __syncthreads();
  float* o_s = reinterpret_cast<float*>(kv_s);  // [WARPS][16][D]
  float* ml_s = o_s + WARPS * 16 * D;           // [WARPS][16][2]
  const int g = lane >> 2, t4 = lane & 3;
#pragma unroll
  for (int db = 0; db < D / 8; ++db) {
    float* r0 = o_s + (warp * 16 + g) * D + db * 8 + 2 * t4;
    float* r1 = o_s + (warp * 16 + g + 8) * D + db * 8 + 2 * t4;
    r0[0] = o[db][0], r0[1] = o[db][1];
    r1[0] = o[db][2], r1[1] = o[db][3];
  }
  if (t4 == 0) {
    ml_s[(warp * 16 + g) * 2] = m[0], ml_s[(warp * 16 + g) * 2 + 1] = l[0];
    ml_s[(warp * 16 + g + 8) * 2] = m[1], ml_s[(warp * 16 + g + 8) * 2 + 1] = l[1];
  }
  __syncthreads();
  const int rows = min(16, p.group - chunk * 16);
  for (int i = threadIdx.x; i < rows * D; i += WARPS * 32) {
    const int r = i / D, d = i % D;
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) M = fmaxf(M, ml_s[(w * 16 + r) * 2]);
    float L = 0.0f, acc = 0.0f;
    if (M != -INFINITY) {
#pragma unroll
      for (int w = 0; w < WARPS; ++w) {
        const float f = exp2f(ml_s[(w * 16 + r) * 2] - M);
        L += f * ml_s[(w * 16 + r) * 2 + 1];
        acc += f * o_s[(w * 16 + r) * D + d];
      }
    }
    const float val = L > 0.0f ? acc / L : 0.0f;
    const int hq = kvh * p.group + chunk * 16 + r;
    if (p.num_splits == 1) {
      static_cast<T*>(p.out)[static_cast<int64_t>(seq) * p.ldo + static_cast<int64_t>(hq) * D + d] = from_f<T>(val);
    } else {
      const int64_t idx = (static_cast<int64_t>(seq) * p.num_heads + hq) * p.num_splits + split;
      p.part_o[idx * D + d] = val;
      if (d == 0) p.part_lse[idx] = L > 0.0f ? M + log2f(L) : -INFINITY;
    }
  }
}

// Combines the splits of each (sequence, head): grid num_seqs * num_heads, D threads.
template <typename T, int D>
__global__ void decode_merge_kernel(Params p) {
  const int64_t sh = blockIdx.x;  // seq * num_heads + head
  const int seq = static_cast<int>(sh / p.num_heads), hq = static_cast<int>(sh % p.num_heads);
  const int d = threadIdx.x;
  const float* lse = p.part_lse + sh * p.num_splits;
  float M = -INFINITY;
  for (int s = 0; s < p.num_splits; ++s) M = fmaxf(M, lse[s]);
  float L = 0.0f, acc = 0.0f;
  if (M != -INFINITY) {
    for (int s = 0; s < p.num_splits; ++s) {
      const float f = exp2f(lse[s] - M);
      L += f;
      acc += f * p.part_o[(sh * p.num_splits + s) * D + d];
    }
  }
  static_cast<T*>(p.out)[static_cast<int64_t>(seq) * p.ldo + static_cast<int64_t>(hq) * D + d] =
      from_f<T>(L > 0.0f ? acc / L : 0.0f);
}

template <typename T, int D, int WARPS, int TOK, int STAGES>
void run_decode(const Params& p, cudaStream_t stream) {
  using Cfg = DecodeCfg<T, D, WARPS, TOK, STAGES>;
  auto kernel = decode_kernel<T, D, WARPS, TOK, STAGES>;
  static bool configured = false;  // raising the limit once per instance is enough
  if (!configured) {
    KILN_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(Cfg::kSmem)));
    configured = true;
  }
  const dim3 grid(p.num_splits, p.num_kv_heads * p.head_chunks, p.num_seqs);
  kernel<<<grid, WARPS * 32, Cfg::kSmem, stream>>>(p);
  KILN_CUDA_LAUNCH_CHECK();
  if (p.num_splits > 1) {
    decode_merge_kernel<T, D><<<p.num_seqs * p.num_heads, D, 0, stream>>>(p);
    KILN_CUDA_LAUNCH_CHECK();
  }
}

template <typename T, int D, int V>
void run_decode_variant(const Params& p, cudaStream_t stream) {
  constexpr DecodeConfig c = kDecodeConfigs[V];
  run_decode<T, D, c.warps, c.tok, c.stages>(p, stream);
}

template <typename T, int D>
void launch_decode(const Params& p, int variant, cudaStream_t stream) {
  if constexpr (D == 128) {
    switch (variant) {
      case 1:
        return run_decode_variant<T, D, 1>(p, stream);
      case 2:
        return run_decode_variant<T, D, 2>(p, stream);
      case 3:
        return run_decode_variant<T, D, 3>(p, stream);
      case 4:
        return run_decode_variant<T, D, 4>(p, stream);
      case 5:
        return run_decode_variant<T, D, 5>(p, stream);
      default:
        break;
    }
  }
  run_decode_variant<T, D, 0>(p, stream);
}

// ---------------------------------------------------------------------------------------------
// Prefill: grid (row_tiles, num_kv_heads, num_seqs); 4 warps own 16 rows each of the CTA's 64 rows of
// (token, head of the group) pairs; the CTA walks the keys [lo, hi) its rows can see in tiles of TOK,
// double-buffered, masking only tiles that straddle the causal diagonal or the window edge.
template <typename T, int D>
struct PrefillCfg {
  static constexpr int kWarps = 4;
  static constexpr int kRows = 16 * kWarps;
  static constexpr int kTok = D <= 128 ? 64 : 32;
  static constexpr int kStages = 2;
  static constexpr int kStageElems = 2 * kTok * Tile<D>::kStride;
  static constexpr int kQElems = kRows * Tile<D>::kStride;
  static constexpr size_t kSmem =
      (static_cast<size_t>(kQElems) + kStages * static_cast<size_t>(kStageElems)) * sizeof(T);
  static constexpr bool kQReg = D <= 128;
};

template <typename T, int D>
__global__ void __launch_bounds__(128) prefill_kernel(Params p) {
  using Cfg = PrefillCfg<T, D>;
  using TL = Tile<D>;
  constexpr int TOK = Cfg::kTok;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* q_s = reinterpret_cast<T*>(smem_raw);
  T* kv_s = q_s + Cfg::kQElems;

  const int tile = blockIdx.x, kvh = blockIdx.y, seq = blockIdx.z;
  const int q_start = p.cu_q_lens[seq];
  const int q_len = p.cu_q_lens[seq + 1] - q_start;
  const int row0 = tile * Cfg::kRows;
  if (row0 >= q_len * p.group) return;
  const int kv_len = p.kv_lens[seq];
  const int pos0 = kv_len - q_len;  // position of the first new token
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int32_t* table = p.block_tables + static_cast<int64_t>(seq) * p.max_blocks_per_seq;

  // Keys the CTA's rows can see.
  const int last_row = min(row0 + Cfg::kRows, q_len * p.group) - 1;
  const int i_min = row0 / p.group, i_max = last_row / p.group;
  const int hi = pos0 + i_max + 1;
  const int lo = p.window > 0 ? max(0, pos0 + i_min - p.window + 1) : 0;

  // Query rows (zeros past the sequence).
  {
    const T* q = static_cast<const T*>(p.q);
    const uint32_t q_base = smem_addr(q_s);
    for (int c = threadIdx.x; c < Cfg::kRows * TL::kChunks; c += 128) {
      const int r = c / TL::kChunks, col = c % TL::kChunks;
      const int row = row0 + r;
      const bool valid = row <= last_row;
      const int i = valid ? row / p.group : 0, hq = kvh * p.group + (valid ? row % p.group : 0);
      const T* src = q + static_cast<int64_t>(q_start + i) * p.ldq + static_cast<int64_t>(hq) * D + col * 8;
      cp_async16(q_base + static_cast<uint32_t>((r * TL::kStride + col * 8) * sizeof(T)), src, valid ? 16 : 0);
    }
    cp_async_commit();
  }
  const int ntiles = hi > lo ? (hi - lo + TOK - 1) / TOK : 0;
  auto stage_k = [&](int st) { return kv_s + st * Cfg::kStageElems; };
  auto stage_v = [&](int st) { return kv_s + st * Cfg::kStageElems + TOK * TL::kStride; };
  if (ntiles > 0) load_kv_tile<T, D, TOK, 128>(p, table, kvh, lo, hi, stage_k(0), stage_v(0), threadIdx.x);
  cp_async_commit();

  // This warp's rows and their positions (row g and g + 8 of the warp for this lane).
  const int g = lane >> 2, t4 = lane & 3;
  int rpos[2];
  float slope[2] = {0.0f, 0.0f};
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = row0 + warp * 16 + g + 8 * h;
    rpos[h] = row <= last_row ? pos0 + row / p.group : -1;  // -1: padding row, sees nothing
    if (p.alibi_slopes && row <= last_row) slope[h] = p.alibi_slopes[kvh * p.group + row % p.group];
  }
  const int wrow_first = row0 + warp * 16, wrow_last = min(row0 + warp * 16 + 15, last_row);
  const int wpos_min = wrow_first <= last_row ? pos0 + wrow_first / p.group : -1;
  const int wpos_max = wrow_first <= last_row ? pos0 + wrow_last / p.group : -1;

  float o[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  const uint32_t q_base = smem_addr(q_s) + static_cast<uint32_t>(warp * 16 * TL::kStride * sizeof(T));
  uint32_t qf[Cfg::kQReg ? D / 16 : 1][4];

  for (int it = 0; it < ntiles; ++it) {
    if (it + 1 < ntiles)
      load_kv_tile<T, D, TOK, 128>(p, table, kvh, lo + (it + 1) * TOK, hi, stage_k((it + 1) % 2), stage_v((it + 1) % 2),
                                   threadIdx.x);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    if constexpr (Cfg::kQReg) {
      if (it == 0) {
#pragma unroll
        for (int ks = 0; ks < D / 16; ++ks) load_q_frag<D>(qf[ks], q_base, ks, lane);
      }
    }
    const int t0 = lo + it * TOK;
    // Skip tiles this warp cannot see at all (past its diagonal, or before its window).
    const bool visible = wpos_max >= t0 && (p.window <= 0 || t0 + TOK - 1 > wpos_min - p.window);
    if (visible) {
      float s[TOK / 8][4];
      qk_tile<T, D, TOK, Cfg::kQReg>(s, qf, q_base, stage_k(it % 2), lane);
      const bool full = t0 + TOK - 1 <= wpos_min && t0 + TOK <= hi && (p.window <= 0 || t0 > wpos_max - p.window) &&
                        wrow_last - wrow_first == 15;
#pragma unroll
      for (int nb = 0; nb < TOK / 8; ++nb)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int tok = t0 + nb * 8 + 2 * t4 + (e & 1);
          const int rp = rpos[e >> 1];
          const bool ok = full || (tok <= rp && (p.window <= 0 || tok > rp - p.window));
          s[nb][e] = ok ? logit2(s[nb][e], p, slope[e >> 1], tok, rp) : -INFINITY;
        }
      softmax_update<D, TOK>(s, m, l, o);
      pv_tile<T, D, TOK>(o, s, stage_v(it % 2), lane);
    }
    __syncthreads();
  }
  cp_async_wait<0>();

#pragma unroll
  for (int h = 0; h < 2; ++h) {
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 1);
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 2);
  }
  T* out = static_cast<T*>(p.out);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = row0 + warp * 16 + g + 8 * h;
    if (row > last_row) continue;
    const int i = row / p.group, hq = kvh * p.group + row % p.group;
    const float inv = l[h] > 0.0f ? 1.0f / l[h] : 0.0f;
    T* dst = out + static_cast<int64_t>(q_start + i) * p.ldo + static_cast<int64_t>(hq) * D + 2 * t4;
#pragma unroll
    for (int db = 0; db < D / 8; ++db)
      *reinterpret_cast<typename Elem<T>::Pair*>(dst + db * 8) =
          Elem<T>::from_f2(o[db][2 * h] * inv, o[db][2 * h + 1] * inv);
  }
}

template <typename T, int D>
void launch_prefill(const Params& p, cudaStream_t stream) {
  using Cfg = PrefillCfg<T, D>;
  auto kernel = prefill_kernel<T, D>;
  static bool configured = false;
  if (!configured) {
    KILN_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(Cfg::kSmem)));
    configured = true;
  }
  const dim3 grid(p.row_tiles, p.num_kv_heads, p.num_seqs);
  kernel<<<grid, 128, Cfg::kSmem, stream>>>(p);
  KILN_CUDA_LAUNCH_CHECK();
}

#define KILN_ATTN_INSTANCES(D)                                                     \
  template void launch_decode<__nv_bfloat16, D>(const Params&, int, cudaStream_t); \
  template void launch_decode<__half, D>(const Params&, int, cudaStream_t);        \
  template void launch_prefill<__nv_bfloat16, D>(const Params&, cudaStream_t);     \
  template void launch_prefill<__half, D>(const Params&, cudaStream_t);

}  // namespace kiln::cuda::attn
