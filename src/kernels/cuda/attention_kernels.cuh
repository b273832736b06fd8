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

// (smem_addr, cp_async16, cp_async_commit and cp_async_wait are in cuda_common.cuh.)
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

// Token tok's block (index into its block table) and slot in that block, shifting instead of dividing when the
// block size is a power of two.
__device__ __forceinline__ void block_slot(const Params& p, int tok, int& blk, int& in) {
  if (p.block_shift >= 0) {
    blk = tok >> p.block_shift;
    in = tok & (p.block_size - 1);
  } else {
    blk = tok / p.block_size;
    in = tok - blk * p.block_size;
  }
}

// kv_offset with the sizes of p.
__device__ __forceinline__ int64_t kv_offset(const Params& p, const int32_t* table, int tok, int kvh, int D) {
  int blk, in;
  block_slot(p, tok, blk, in);
  return static_cast<int64_t>(table[blk]) * p.block_stride + static_cast<int64_t>(kvh * p.block_size + in) * D;
}

// Byte offset of 16-byte chunk `chunk` (0-15) of row r in a tile of `rows` rows of 256 bytes (128 16-bit values)
// laid out for wgmma's 128-byte swizzle: two column halves of rows x 128 bytes, each row's 8 chunks permuted by
// XOR with r % 8 (the tile starts 1024-byte aligned).
__device__ __forceinline__ uint32_t sw128_offset(int r, int chunk, int rows) {
  return static_cast<uint32_t>((chunk >> 3) * rows * 128 + r * 128 + (((chunk & 7) ^ (r & 7)) << 4));
}

// Issues the copies of keys and values [t0, t0 + TOK) (zeros past `end`) into k_s / v_s, spread over the
// NTHREADS threads of which this is thread `tid`. Unrolled so the block-table reads of a thread's rows are
// all in flight at once. KV is the stored element: T (rows padded to Tile<D>::kStride for ldmatrix) or
// uint8_t, fp8 e4m3 (rows of D bytes padded to D + 16, for widen_kv_tile or the direct fp8 tiles below).
template <typename KV, int D, int TOK, int NTHREADS>
__device__ __forceinline__ void load_kv_tile(const Params& p, const int32_t* table, int kvh, int t0, int end, KV* k_s,
                                             KV* v_s, int tid) {
  constexpr int kPerChunk = 16 / static_cast<int>(sizeof(KV));  // elements per 16-byte copy
  constexpr int kChunks = D / kPerChunk;
  constexpr int kStride = sizeof(KV) == 1 ? D + 16 : Tile<D>::kStride;
  constexpr int kTotal = TOK * kChunks;
  constexpr int kIters = (kTotal + NTHREADS - 1) / NTHREADS;
  const KV* kc = static_cast<const KV*>(p.k_cache);
  const KV* vc = static_cast<const KV*>(p.v_cache);
  const uint32_t k_base = smem_addr(k_s), v_base = smem_addr(v_s);
  int64_t off[kIters];
  bool valid[kIters];
#pragma unroll
  for (int i = 0; i < kIters; ++i) {
    const int c = tid + i * NTHREADS;
    const int r = c / kChunks, col = c % kChunks;
    const int tok = t0 + r;
    valid[i] = (kTotal % NTHREADS == 0 || c < kTotal) && tok < end;
    off[i] = valid[i] ? kv_offset(p, table, tok, kvh, D) + col * kPerChunk : 0;
  }
#pragma unroll
  for (int i = 0; i < kIters; ++i) {
    const int c = tid + i * NTHREADS;
    if (kTotal % NTHREADS != 0 && c >= kTotal) break;
    const int r = c / kChunks, col = c % kChunks;
    const uint32_t so = static_cast<uint32_t>((r * kStride + col * kPerChunk) * sizeof(KV));
    cp_async16(k_base + so, kc + off[i], valid[i] ? 16 : 0);
    cp_async16(v_base + so, vc + off[i], valid[i] ? 16 : 0);
  }
}

// load_kv_tile with one block-table read per thread, for N caches at once (K and V, or one of them): thread `tid`
// copies one 16-byte column chunk of TOK * kChunks / NTHREADS consecutive keys of each, so it reads the table once,
// and again only where its keys run into the next block; in the usual case (all its keys valid and in one block)
// its copies are one base address plus constant offsets. dst[c] are shared-memory addresses of tiles laid out as
// load_kv_tile's (SW: swizzled) for caches src[c].
template <typename KV, int D, int TOK, int NTHREADS, bool SW, int N>
__device__ __forceinline__ void load_rows(const Params& p, const int32_t* table, int kvh, int t0, int end,
                                          const KV* const (&src)[N], const uint32_t (&dst)[N], int tid) {
  constexpr int kPerChunk = 16 / static_cast<int>(sizeof(KV));
  constexpr int kChunks = D / kPerChunk;
  constexpr int kStride = sizeof(KV) == 1 ? D + 16 : Tile<D>::kStride;
  constexpr int kKeys = TOK * kChunks / NTHREADS;
  static_assert(NTHREADS % kChunks == 0 && TOK * kChunks % NTHREADS == 0, "whole keys per thread");
  static_assert(!SW || D * sizeof(KV) == 256, "the swizzled layout holds rows of 256 bytes");
  const int col = tid % kChunks, r0 = (tid / kChunks) * kKeys;
  const int key0 = t0 + r0;
  int blk, in;
  block_slot(p, key0, blk, in);
  auto so = [&](int r) {
    return SW ? sw128_offset(r, col, TOK) : static_cast<uint32_t>((r * kStride + col * kPerChunk) * sizeof(KV));
  };
  const int64_t head = static_cast<int64_t>(kvh) * p.block_size * D + col * kPerChunk;
  int64_t boff = key0 < end ? static_cast<int64_t>(table[blk]) * p.block_stride + head : 0;
  if (in + kKeys <= p.block_size && key0 + kKeys <= end) {
    const int64_t base = boff + static_cast<int64_t>(in) * D;
#pragma unroll
    for (int i = 0; i < kKeys; ++i)
#pragma unroll
      for (int c = 0; c < N; ++c) cp_async16(dst[c] + so(r0 + i), src[c] + base + i * D, 16);
    return;
  }
#pragma unroll
  for (int i = 0; i < kKeys; ++i) {
    if (i > 0 && ++in == p.block_size) {
      in = 0;
      ++blk;
      boff = key0 + i < end ? static_cast<int64_t>(table[blk]) * p.block_stride + head : 0;
    }
    const bool valid = key0 + i < end;
    const int64_t off = valid ? boff + static_cast<int64_t>(in) * D : 0;
#pragma unroll
    for (int c = 0; c < N; ++c) cp_async16(dst[c] + so(r0 + i), src[c] + off, valid ? 16 : 0);
  }
}
// K and V at once into padded (not swizzled) tiles.
template <typename KV, int D, int TOK, int NTHREADS>
__device__ __forceinline__ void load_kv_rows(const Params& p, const int32_t* table, int kvh, int t0, int end,
                                             uint32_t k_s, uint32_t v_s, int tid) {
  const KV* const src[2] = {static_cast<const KV*>(p.k_cache), static_cast<const KV*>(p.v_cache)};
  const uint32_t dst[2] = {k_s, v_s};
  load_rows<KV, D, TOK, NTHREADS, false, 2>(p, table, kvh, t0, end, src, dst, tid);
}

// The loader of the split-layout decode and mma.sync prefill tiles: load_kv_rows wherever the tile splits into
// whole keys per thread (every head dim but 80 and 96), else load_kv_tile.
template <typename KV, int D, int TOK, int NTHREADS>
__device__ __forceinline__ void load_kv(const Params& p, const int32_t* table, int kvh, int t0, int end, KV* k_s,
                                        KV* v_s, int tid) {
  constexpr int kChunks = D * static_cast<int>(sizeof(KV)) / 16;
  if constexpr (NTHREADS % kChunks == 0 && TOK * kChunks % NTHREADS == 0) {
    load_kv_rows<KV, D, TOK, NTHREADS>(p, table, kvh, t0, end, smem_addr(k_s), smem_addr(v_s), tid);
  } else {
    load_kv_tile<KV, D, TOK, NTHREADS>(p, table, kvh, t0, end, k_s, v_s, tid);
  }
}

// Widens a landed fp8 K/V tile pair (rows of D bytes) into 16-bit tiles with padded rows, spread over NTHREADS
// threads: 16 values per 16-byte read, exact.
template <typename T, int D, int TOK, int NTHREADS>
__device__ __forceinline__ void widen_kv_tile(const uint8_t* k_raw, const uint8_t* v_raw, T* k_s, T* v_s, int tid) {
  constexpr int kChunks = D / 16;
  constexpr int kPer = TOK * kChunks;
#pragma unroll
  for (int i = 0; i < (2 * kPer + NTHREADS - 1) / NTHREADS; ++i) {
    const int c = tid + i * NTHREADS;
    if ((2 * kPer) % NTHREADS != 0 && c >= 2 * kPer) break;
    const bool is_v = c >= kPer;
    const int cc = is_v ? c - kPer : c;
    const int r = cc / kChunks, col = cc % kChunks;
    const uint4 raw = *reinterpret_cast<const uint4*>((is_v ? v_raw : k_raw) + r * (D + 16) + col * 16);
    const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
    uint4 lo, hi;
    lo.x = widen_fp8x2<T>(static_cast<uint16_t>(w[0])), lo.y = widen_fp8x2<T>(static_cast<uint16_t>(w[0] >> 16));
    lo.z = widen_fp8x2<T>(static_cast<uint16_t>(w[1])), lo.w = widen_fp8x2<T>(static_cast<uint16_t>(w[1] >> 16));
    hi.x = widen_fp8x2<T>(static_cast<uint16_t>(w[2])), hi.y = widen_fp8x2<T>(static_cast<uint16_t>(w[2] >> 16));
    hi.z = widen_fp8x2<T>(static_cast<uint16_t>(w[3])), hi.w = widen_fp8x2<T>(static_cast<uint16_t>(w[3] >> 16));
    uint4* dst = reinterpret_cast<uint4*>((is_v ? v_s : k_s) + r * Tile<D>::kStride + col * 16);
    dst[0] = lo;
    dst[1] = hi;
  }
}

// One K/V pipeline of STAGES stages in shared memory (kv_pipeline_bytes): the stages' tiles as loaded (T, or
// uint8_t for fp8), then for fp8 with WIDE the 16-bit pair they are widened into.
template <typename T, int D, int TOK, int STAGES, bool F8, bool WIDE = F8>
struct KvPipe {
  using KV = std::conditional_t<F8, uint8_t, T>;
  static constexpr int kRowElems = F8 ? D + 16 : Tile<D>::kStride;
  static constexpr size_t kStageBytes = static_cast<size_t>(2) * TOK * kRowElems * sizeof(KV);
  static constexpr size_t kBytes = kv_pipeline_bytes(TOK, STAGES, D, F8, WIDE);
  static_assert(kBytes == STAGES * kStageBytes + (F8 && WIDE ? 2 * TOK * Tile<D>::kStride * sizeof(T) : 0),
                "pipe size");
  unsigned char* base;
  __device__ KV* k(int st) const { return reinterpret_cast<KV*>(base + st * kStageBytes); }
  __device__ KV* v(int st) const { return k(st) + TOK * kRowElems; }
  __device__ T* wide_k() const { return reinterpret_cast<T*>(base + STAGES * kStageBytes); }
  __device__ T* wide_v() const { return wide_k() + TOK * Tile<D>::kStride; }
};

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

// The A fragments of P's keys 16 kk .. 16 kk + 15 for the P·V mma, from the score accumulators (whose layout is
// the A layout's, two n-blocks per k-step).
template <typename T, int TOK>
__device__ __forceinline__ void p_frag(uint32_t (&a)[4], const float (&s)[TOK / 8][4], int kk) {
  a[0] = pack2<T>(s[2 * kk][0], s[2 * kk][1]);
  a[1] = pack2<T>(s[2 * kk][2], s[2 * kk][3]);
  a[2] = pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
  a[3] = pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
}

// O[16 x D] += P[16 x TOK] V[TOK x D] for one warp, P taken from the score accumulators.
template <typename T, int D, int TOK>
__device__ __forceinline__ void pv_tile(float (&o)[D / 8][4], const float (&s)[TOK / 8][4], const T* v_s, int lane) {
  const uint32_t v_base = smem_addr(v_s);
#pragma unroll
  for (int kk = 0; kk < TOK / 16; ++kk) {
    uint32_t a[4];
    p_frag<T, TOK>(a, s, kk);
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

// Direct fp8 tiles (head-major decode): the K and V tiles stay one byte per value in shared memory (rows of
// D + 16 bytes) and ldmatrix hands each lane 4 bytes that become its mma fragments after widening in registers.
// ldmatrix (b16) gives lane (g, t) = (lane / 4, lane % 4) the bytes 4t..4t+3 of a 16-byte row segment, so:
// - Q Kᵀ relabels the 16 dims of a k-step: k-slots 2t, 2t+1 are dims 4t, 4t+1 and k-slots 2t+8, 2t+9 are dims
//   4t+2, 4t+3. One row segment of 8 tokens is then a whole B fragment, and Q's A fragments must be loaded with
//   the same relabeling (load_q_frag_fp8): a0/a1 hold dims 4t, 4t+1, a2/a3 dims 4t+2, 4t+3.
// - P V reads V transposed (ldmatrix.trans: lane (g, t) gets dims 2g, 2g+1 of tokens 2t, 2t+1), splits the bytes
//   by dim (byte_perm) and runs one mma for the even dims of a 16-dim group and one for the odd: accumulator
//   o[2G] holds dims 16G + 4t and 16G + 4t + 2 in its columns 2t, 2t+1, o[2G + 1] dims 16G + 4t + 1 and
//   16G + 4t + 3, so a lane owns dims 16G + 4t .. 16G + 4t + 3 of its rows (store_o_fp8).

// S[16 x TOK] = Q Kᵀ over a direct fp8 K tile, qf loaded by load_q_frag_fp8.
template <typename T, int D, int TOK>
__device__ __forceinline__ void qk_tile_fp8(float (&s)[TOK / 8][4], const uint32_t (&qf)[D / 16][4],
                                            const uint8_t* k_raw, int lane) {
  static_assert(D % 64 == 0, "direct fp8 tiles take head dims that are multiples of 64");
#pragma unroll
  for (int nb = 0; nb < TOK / 8; ++nb) s[nb][0] = s[nb][1] = s[nb][2] = s[nb][3] = 0.0f;
  const uint32_t base = smem_addr(k_raw);
#pragma unroll
  for (int nb = 0; nb < TOK / 8; ++nb)
#pragma unroll
    for (int kp = 0; kp < D / 64; ++kp) {
      uint32_t r[4];
      const int row = nb * 8 + (lane & 7), col = kp * 64 + (lane >> 3) * 16;
      ldmatrix_x4(r, base + static_cast<uint32_t>(row * (D + 16) + col));
#pragma unroll
      for (int j = 0; j < 4; ++j)
        mma16816<T>(s[nb], qf[kp * 4 + j], widen_fp8x2<T>(static_cast<uint16_t>(r[j])),
                    widen_fp8x2<T>(static_cast<uint16_t>(r[j] >> 16)));
    }
}

// O[16 x D] += P[16 x TOK] V[TOK x D] over a direct fp8 V tile, O in the layout described above.
template <typename T, int D, int TOK>
__device__ __forceinline__ void pv_tile_fp8(float (&o)[D / 8][4], const float (&s)[TOK / 8][4], const uint8_t* v_raw,
                                            int lane) {
  const uint32_t base = smem_addr(v_raw);
#pragma unroll
  for (int kk = 0; kk < TOK / 16; ++kk) {
    uint32_t a[4];
    p_frag<T, TOK>(a, s, kk);
#pragma unroll
    for (int gp = 0; gp < D / 32; ++gp) {  // two 16-dim groups per ldmatrix
      uint32_t r[4];
      const int row = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
      const int col = gp * 32 + (lane >> 4) * 16;
      ldmatrix_x4_trans(r, base + static_cast<uint32_t>(row * (D + 16) + col));
#pragma unroll
      for (int h = 0; h < 2; ++h) {  // r[2h]: tokens 0-7 of the group, r[2h + 1]: tokens 8-15
        const int G = gp * 2 + h;
        const uint32_t lo = r[2 * h], hi = r[2 * h + 1];
        mma16816<T>(o[2 * G], a, widen_fp8x2<T>(static_cast<uint16_t>(__byte_perm(lo, 0, 0x0020))),
                    widen_fp8x2<T>(static_cast<uint16_t>(__byte_perm(hi, 0, 0x0020))));
        mma16816<T>(o[2 * G + 1], a, widen_fp8x2<T>(static_cast<uint16_t>(__byte_perm(lo, 0, 0x0031))),
                    widen_fp8x2<T>(static_cast<uint16_t>(__byte_perm(hi, 0, 0x0031))));
      }
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

// The online softmax's pieces for row h of a warp's 16 (this lane holds rows g and g + 8, h = 0 and 1) over a tile
// of scores: the row's largest score (over the quad of lanes that hold its columns), and the scores turned into
// P = exp2(s * sc - base) by `exp2`, returning this lane's sum of them.
template <int TOK>
__device__ __forceinline__ float row_max(const float (&s)[TOK / 8][4], int h) {
  float mx = -INFINITY;
#pragma unroll
  for (int nb = 0; nb < TOK / 8; ++nb) mx = fmaxf(mx, fmaxf(s[nb][2 * h], s[nb][2 * h + 1]));
  mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
  return fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
}
template <int TOK, typename Exp2>
__device__ __forceinline__ float row_exp_sum(float (&s)[TOK / 8][4], int h, float sc, float base, Exp2 exp2) {
  float sum = 0.0f;
#pragma unroll
  for (int nb = 0; nb < TOK / 8; ++nb) {
    s[nb][2 * h] = exp2(fmaf(s[nb][2 * h], sc, -base));
    s[nb][2 * h + 1] = exp2(fmaf(s[nb][2 * h + 1], sc, -base));
    sum += s[nb][2 * h] + s[nb][2 * h + 1];
  }
  return sum;
}

// Online-softmax update of one warp's 16 rows (this lane holds rows g and g + 8) with a tile of scores
// s * sc in the log2 domain (sc > 0; masked entries -inf); s becomes the probabilities P. Folding the scale
// into the exponent's FMA (exp2(s * sc - max)) saves a multiply per score on unmasked tiles.
template <int D, int TOK>
__device__ __forceinline__ void softmax_update(float (&s)[TOK / 8][4], float (&m)[2], float (&l)[2],
                                               float (&o)[D / 8][4], float sc = 1.0f) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const float mx = fmaxf(m[h], row_max<TOK>(s, h) * sc);
    // A row with nothing visible yet keeps -inf; subtract 0 instead so no inf - inf appears.
    const float base = mx == -INFINITY ? 0.0f : mx;
    const float alpha = exp2f(m[h] - base);
    m[h] = mx;
    const float sum = row_exp_sum<TOK>(s, h, sc, base, [](float x) { return exp2f(x); });
    l[h] = l[h] * alpha + sum;  // per-lane partial; summed over the quad at the end
#pragma unroll
    for (int db = 0; db < D / 8; ++db) {
      o[db][2 * h] *= alpha;
      o[db][2 * h + 1] *= alpha;
    }
  }
}

// 2^x on the MUFU unit alone (flushing results below 2^-126 to zero, which no 16-bit P can hold anyway);
// exp2f adds the denormal fix-ups around it.
__device__ __forceinline__ float ex2_ftz(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// softmax_update with lazy rescaling (prefill's `fast` configuration): a row's reference max m moves only when
// the tile's max exceeds it by more than 8 (log2 units), so P = exp2(s * sc - m) stays <= 2^8 and O and l keep
// one common reference (the result O / l is the same); the warp skips the O rescale when none of its rows moved,
// which is most tiles once the rows have seen their largest scores. This is its scores half: s becomes P, m and l
// move, and alpha gets each row's factor for O; true when some row of the warp moved (O must then be rescaled by
// rescale_o; softmax_update_lazy below does both).
template <int TOK>
__device__ __forceinline__ bool softmax_scores_lazy(float (&s)[TOK / 8][4], float (&m)[2], float (&l)[2],
                                                    float (&alpha)[2], float sc) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const float mx = row_max<TOK>(s, h) * sc;
    const float mnew = mx > m[h] + 8.0f ? mx : m[h];
    // Rows with nothing visible yet keep -inf (alpha 1, nothing accumulated); exp2(-inf) = 0 for the first max.
    alpha[h] = mnew == m[h] ? 1.0f : ex2_ftz(m[h] - mnew);
    const float base = mnew == -INFINITY ? 0.0f : mnew;
    m[h] = mnew;
    const float sum = row_exp_sum<TOK>(s, h, sc, base, [](float x) { return ex2_ftz(x); });
    l[h] = l[h] * alpha[h] + sum;  // per-lane partial; summed over the quad at the end
  }
  return __any_sync(0xffffffffu, alpha[0] != 1.0f || alpha[1] != 1.0f);
}

// O's rows g and g + 8 times alpha[0] and alpha[1].
template <int D>
__device__ __forceinline__ void rescale_o(float (&o)[D / 8][4], const float (&alpha)[2]) {
#pragma unroll
  for (int db = 0; db < D / 8; ++db) {
    o[db][0] *= alpha[0];
    o[db][1] *= alpha[0];
    o[db][2] *= alpha[1];
    o[db][3] *= alpha[1];
  }
}

template <int D, int TOK>
__device__ __forceinline__ void softmax_update_lazy(float (&s)[TOK / 8][4], float (&m)[2], float (&l)[2],
                                                    float (&o)[D / 8][4], float sc) {
  float alpha[2];
  if (softmax_scores_lazy<TOK>(s, m, l, alpha, sc)) rescale_o<D>(o, alpha);
}

// ---------------------------------------------------------------------------------------------
// Decode: one query per sequence (at position kv_len - 1), its context split over CTAs. What the split and the
// head-major kernels share:

// Declares, in a decode kernel (p, seq, split and TOK in scope), the query's position `pos`, the keys [start, end)
// of split `split` of sequence seq's context (the last p.window of it with a window) and the sequence's block
// `table`. Each split takes an equal share of this sequence's own context (whole tiles of TOK), so that no split
// sits idle when the context is shorter than the plan's. A macro, not a function: as an inlined function the same
// arithmetic changed the compiler's address arithmetic in the kernels' K/V loads (cuobjdump -sass), and these are
// the kernels measured in docs/kernels.md.
#define KILN_DECODE_SPLIT_RANGE()                                                          \
  const int kv_len = p.kv_lens[seq];                                                       \
  const int pos = kv_len - 1;                                                              \
  const int lo = p.window > 0 ? max(0, pos - p.window + 1) : 0;                            \
  const int per = ((kv_len - lo + p.num_splits - 1) / p.num_splits + TOK - 1) / TOK * TOK; \
  const int start = lo + split * per;                                                      \
  const int end = min(kv_len, start + per);                                                \
  const int32_t* table = p.block_tables + static_cast<int64_t>(seq) * p.max_blocks_per_seq

// The online softmax over a tile's scores s = Q Kᵀ for keys t0 .. t0 + TOK - 1 (keys from `end` on masked): logits
// (logit2, with this lane's rows' ALiBi slopes) into P, m, l and O updated.
template <int D, int TOK>
__device__ __forceinline__ void decode_tile_softmax(float (&s)[TOK / 8][4], float (&m)[2], float (&l)[2],
                                                    float (&o)[D / 8][4], const Params& p, const float (&slope)[2],
                                                    int t0, int end, int pos, int lane) {
#pragma unroll
  for (int nb = 0; nb < TOK / 8; ++nb)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int tok = t0 + nb * 8 + 2 * (lane & 3) + (e & 1);
      s[nb][e] = tok < end ? logit2(s[nb][e], p, slope[e >> 1], tok, pos) : -INFINITY;
    }
  softmax_update<D, TOK>(s, m, l, o);
}

// Zeroed O, and the online softmax's start (no maximum yet, nothing summed).
template <int D>
__device__ __forceinline__ void zero_o_m_l(float (&o)[D / 8][4], float (&m)[2], float (&l)[2]) {
#pragma unroll
  for (int i = 0; i < D / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  m[0] = m[1] = -INFINITY, l[0] = l[1] = 0.0f;
}

// A row's l from its per-lane partial sums (the quad of lanes that hold its columns).
__device__ __forceinline__ void quad_sum_l(float (&l)[2]) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 1);
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 2);
  }
}

// Split layout: grid (num_splits, num_kv_heads * head_chunks, num_seqs); each warp walks its own tiles of the
// split (tile w, w + WARPS, ...) through a private STAGES-deep cp.async pipeline, then the warps merge.
template <typename T, int D, int WARPS, int TOK, int STAGES, bool F8 = false>
struct DecodeCfg {
  using Pipe = KvPipe<T, D, TOK, STAGES, F8>;
  static constexpr int kQElems = 16 * Tile<D>::kStride;
  static constexpr size_t kSmem = static_cast<size_t>(kQElems) * sizeof(T) + static_cast<size_t>(WARPS) * Pipe::kBytes;
  static constexpr size_t kMergeBytes = static_cast<size_t>(WARPS) * 16 * (D + 2) * sizeof(float);
  static_assert(kMergeBytes <= static_cast<size_t>(WARPS) * Pipe::kBytes, "merge space");
  static constexpr bool kQReg = D <= 128;
};

template <typename T, int D, int WARPS, int TOK, int STAGES, bool F8>
__global__ void __launch_bounds__(WARPS * 32) decode_kernel(Params p) {
  using Cfg = DecodeCfg<T, D, WARPS, TOK, STAGES, F8>;
  using Pipe = typename Cfg::Pipe;
  using TL = Tile<D>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* q_s = reinterpret_cast<T*>(smem_raw);
  unsigned char* kv_s = smem_raw + Cfg::kQElems * sizeof(T);

  const int split = blockIdx.x;
  const int kvh = blockIdx.y / p.head_chunks, chunk = blockIdx.y % p.head_chunks;
  const int seq = blockIdx.z;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  KILN_DECODE_SPLIT_RANGE();

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

  float o[D / 8][4], m[2], l[2];
  zero_o_m_l<D>(o, m, l);
  // ALiBi slopes of this lane's rows g and g + 8 (heads of the group).
  float slope[2] = {0.0f, 0.0f};
  if (p.alibi_slopes) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int gh = chunk * 16 + (lane >> 2) + 8 * h;
      if (gh < p.group) slope[h] = p.alibi_slopes[kvh * p.group + gh];
    }
  }

  const Pipe pipe{kv_s + static_cast<size_t>(warp) * Pipe::kBytes};
  using KV = typename Pipe::KV;
  const int ntiles = end > start ? (end - start + TOK - 1) / TOK : 0;
  const int my_tiles = ntiles > warp ? (ntiles - warp + WARPS - 1) / WARPS : 0;
#pragma unroll
  for (int st = 0; st < STAGES - 1; ++st) {
    if (st < my_tiles)
      load_kv<KV, D, TOK, 32>(p, table, kvh, start + (warp + st * WARPS) * TOK, end, pipe.k(st), pipe.v(st), lane);
    cp_async_commit();
  }
  for (int it = 0; it < my_tiles; ++it) {
    const int nxt = it + STAGES - 1;
    if (nxt < my_tiles)
      load_kv<KV, D, TOK, 32>(p, table, kvh, start + (warp + nxt * WARPS) * TOK, end, pipe.k(nxt % STAGES),
                              pipe.v(nxt % STAGES), lane);
    cp_async_commit();
    cp_async_wait<STAGES - 1>();
    __syncwarp();
    const int st = it % STAGES;
    const T *k_t, *v_t;
    if constexpr (F8) {
      widen_kv_tile<T, D, TOK, 32>(pipe.k(st), pipe.v(st), pipe.wide_k(), pipe.wide_v(), lane);
      __syncwarp();
      k_t = pipe.wide_k(), v_t = pipe.wide_v();
    } else {
      k_t = pipe.k(st), v_t = pipe.v(st);
    }
    float s[TOK / 8][4];
    qk_tile<T, D, TOK, Cfg::kQReg>(s, qf, q_base, k_t, lane);
    decode_tile_softmax<D, TOK>(s, m, l, o, p, slope, start + (warp + it * WARPS) * TOK, end, pos, lane);
    pv_tile<T, D, TOK>(o, s, v_t, lane);
    __syncwarp();
  }
  cp_async_wait<0>();

  // Merge the warps through shared memory (the KV stages are free now).
  quad_sum_l(l);
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

// Head-major decode: grid (ceil(units / WARPS), num_splits, num_seqs) with units = num_kv_heads * head_chunks;
// warp w of CTA x owns unit x * WARPS + w (a KV head and 16 of its query heads) and walks every tile of the
// split through its own STAGES-deep cp.async pipeline, so the CTA's warps stream neighbouring heads of the
// same KV blocks together. Q fragments come straight from global memory; each warp writes its own rows. Each lane
// loads a column chunk of consecutive keys with one block-table read (load_kv_rows).
template <typename T, int D, int WARPS, int TOK, int STAGES, bool F8>
__global__ void __launch_bounds__(WARPS * 32) decode_hm_kernel(Params p) {
  static_assert(D <= 128, "head-major decode keeps Q in registers");
  // fp8: direct tiles (qk_tile_fp8 / pv_tile_fp8); the head-major kernel runs at head_dim 128 only.
  static_assert(!F8 || D % 64 == 0, "head-major decode reads fp8 tiles directly");
  constexpr bool kDirect = F8;
  using Pipe = KvPipe<T, D, TOK, STAGES, F8, false>;
  using KV = typename Pipe::KV;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int unit = blockIdx.x * WARPS + warp;
  if (unit >= p.num_kv_heads * p.head_chunks) return;  // warp-uniform; nothing below synchronizes the CTA
  const int kvh = unit / p.head_chunks, chunk = unit % p.head_chunks;
  const int split = blockIdx.y, seq = blockIdx.z;
  KILN_DECODE_SPLIT_RANGE();
  const int g = lane >> 2, t4 = lane & 3;

  const Pipe pipe{smem_raw + static_cast<size_t>(warp) * Pipe::kBytes};
  const int ntiles = end > start ? (end - start + TOK - 1) / TOK : 0;
  auto load = [&](int tile) {
    const int st = tile % STAGES, t0 = start + tile * TOK;
    load_kv_rows<KV, D, TOK, 32>(p, table, kvh, t0, end, smem_addr(pipe.k(st)), smem_addr(pipe.v(st)), lane);
  };
#pragma unroll
  for (int st = 0; st < STAGES - 1; ++st) {
    if (st < ntiles) load(st);
    cp_async_commit();
  }

  // A fragments of rows g and g + 8 (heads chunk * 16 + g of the group; zeros past the group).
  const int gh0 = chunk * 16 + g, gh1 = gh0 + 8;
  const T* q = static_cast<const T*>(p.q) + static_cast<int64_t>(seq) * p.ldq;
  // Lane (g, t) holds dims 2t, 2t+1 (a0/a1) and 2t+8, 2t+9 (a2/a3) of each k-step, or with direct fp8 tiles
  // dims 4t .. 4t+3 (the relabeling of qk_tile_fp8).
  const int qc = kDirect ? 4 * t4 : 2 * t4, qhi = kDirect ? 1 : 4;
  const uint32_t* q0 = reinterpret_cast<const uint32_t*>(q + static_cast<int64_t>(kvh * p.group + gh0) * D + qc);
  const uint32_t* q1 = reinterpret_cast<const uint32_t*>(q + static_cast<int64_t>(kvh * p.group + gh1) * D + qc);
  const bool v0 = gh0 < p.group, v1 = gh1 < p.group;
  uint32_t qf[D / 16][4];
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks) {
    qf[ks][0] = v0 ? q0[ks * 8] : 0u;
    qf[ks][1] = v1 ? q1[ks * 8] : 0u;
    qf[ks][2] = v0 ? q0[ks * 8 + qhi] : 0u;
    qf[ks][3] = v1 ? q1[ks * 8 + qhi] : 0u;
  }
  float slope[2] = {0.0f, 0.0f};
  if (p.alibi_slopes) {
    if (v0) slope[0] = p.alibi_slopes[kvh * p.group + gh0];
    if (v1) slope[1] = p.alibi_slopes[kvh * p.group + gh1];
  }

  float o[D / 8][4], m[2], l[2];
  zero_o_m_l<D>(o, m, l);
  for (int it = 0; it < ntiles; ++it) {
    const int nxt = it + STAGES - 1;
    if (nxt < ntiles) load(nxt);
    cp_async_commit();
    cp_async_wait<STAGES - 1>();
    __syncwarp();
    const int st = it % STAGES;
    float s[TOK / 8][4];
    if constexpr (kDirect) {
      qk_tile_fp8<T, D, TOK>(s, qf, pipe.k(st), lane);
    } else {
      qk_tile<T, D, TOK, true>(s, qf, 0u, pipe.k(st), lane);
    }
    decode_tile_softmax<D, TOK>(s, m, l, o, p, slope, start + it * TOK, end, pos, lane);
    if constexpr (kDirect) {
      pv_tile_fp8<T, D, TOK>(o, s, pipe.v(st), lane);
    } else {
      pv_tile<T, D, TOK>(o, s, pipe.v(st), lane);
    }
    __syncwarp();
  }
  cp_async_wait<0>();

  quad_sum_l(l);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int gh = h ? gh1 : gh0;
    if (gh >= p.group) continue;
    const int hq = kvh * p.group + gh;
    const float inv = l[h] > 0.0f ? 1.0f / l[h] : 0.0f;
    const int64_t idx = (static_cast<int64_t>(seq) * p.num_heads + hq) * p.num_splits + split;
    if constexpr (kDirect) {
      // Dims 16G + 4t .. 16G + 4t + 3: o[2G] holds the even ones, o[2G + 1] the odd (pv_tile_fp8).
#pragma unroll
      for (int G = 0; G < D / 16; ++G) {
        const float4 v = make_float4(o[2 * G][2 * h] * inv, o[2 * G + 1][2 * h] * inv, o[2 * G][2 * h + 1] * inv,
                                     o[2 * G + 1][2 * h + 1] * inv);
        if (p.num_splits == 1) {
          auto* dst = reinterpret_cast<typename Elem<T>::Pair*>(
              static_cast<T*>(p.out) + static_cast<int64_t>(seq) * p.ldo + static_cast<int64_t>(hq) * D + 16 * G +
              4 * t4);
          dst[0] = Elem<T>::from_f2(v.x, v.y);
          dst[1] = Elem<T>::from_f2(v.z, v.w);
        } else {
          *reinterpret_cast<float4*>(p.part_o + idx * D + 16 * G + 4 * t4) = v;
        }
      }
    } else if (p.num_splits == 1) {
      T* dst = static_cast<T*>(p.out) + static_cast<int64_t>(seq) * p.ldo + static_cast<int64_t>(hq) * D + 2 * t4;
#pragma unroll
      for (int db = 0; db < D / 8; ++db)
        *reinterpret_cast<typename Elem<T>::Pair*>(dst + db * 8) =
            Elem<T>::from_f2(o[db][2 * h] * inv, o[db][2 * h + 1] * inv);
    } else {
      float* dst = p.part_o + idx * D + 2 * t4;
#pragma unroll
      for (int db = 0; db < D / 8; ++db)
        *reinterpret_cast<float2*>(dst + db * 8) = make_float2(o[db][2 * h] * inv, o[db][2 * h + 1] * inv);
    }
    if (p.num_splits > 1 && t4 == 0) p.part_lse[idx] = l[h] > 0.0f ? m[h] + log2f(l[h]) : -INFINITY;
  }
}

#undef KILN_DECODE_SPLIT_RANGE

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

// The decode kernel (HM: head-major, else split; F8: over an fp8 KV cache), with its dynamic shared memory limit
// raised (once per instance).
template <typename T, int D, bool HM, bool F8>
void (*decode_kernel_of())(Params) {
  constexpr DecodeConfig c = HM ? kHeadMajorDecode : kSplitDecode;
  constexpr int kSmem = static_cast<int>(decode_smem_bytes(c, D, F8));
  void (*kernel)(Params);
  if constexpr (HM) {
    static_assert(c.warps * KvPipe<T, D, c.tok, c.stages, F8, false>::kBytes == static_cast<size_t>(kSmem), "smem size");
    kernel = decode_hm_kernel<T, D, c.warps, c.tok, c.stages, F8>;
  } else {
    static_assert(DecodeCfg<T, D, c.warps, c.tok, c.stages, F8>::kSmem == static_cast<size_t>(kSmem), "smem size");
    kernel = decode_kernel<T, D, c.warps, c.tok, c.stages, F8>;
  }
  static bool configured = false;  // raising the limit once per instance is enough
  if (!configured) {
    KILN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
    configured = true;
  }
  return kernel;
}

template <typename T, int D, bool HM, bool F8>
void run_decode(const Params& p, cudaStream_t stream) {
  constexpr DecodeConfig c = HM ? kHeadMajorDecode : kSplitDecode;
  constexpr int kSmem = static_cast<int>(decode_smem_bytes(c, D, F8));
  void (*kernel)(Params) = decode_kernel_of<T, D, HM, F8>();
  dim3 grid;
  if constexpr (HM) {
    const int units = p.num_kv_heads * p.head_chunks;
    grid = dim3((units + c.warps - 1) / c.warps, p.num_splits, p.num_seqs);
  } else {
    grid = dim3(p.num_splits, p.num_kv_heads * p.head_chunks, p.num_seqs);
  }
  kernel<<<grid, c.warps * 32, kSmem, stream>>>(p);
  KILN_CUDA_LAUNCH_CHECK();
  if (p.num_splits > 1) {
    decode_merge_kernel<T, D><<<p.num_seqs * p.num_heads, D, 0, stream>>>(p);
    KILN_CUDA_LAUNCH_CHECK();
  }
}

// CTAs of the decode kernel resident on one multiprocessor (registers and shared memory both counted).
template <typename T, int D, bool HM, bool F8>
int decode_occupancy() {
  constexpr DecodeConfig c = HM ? kHeadMajorDecode : kSplitDecode;
  int n = 0;
  KILN_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, decode_kernel_of<T, D, HM, F8>(), c.warps * 32,
                                                                decode_smem_bytes(c, D, F8)));
  return n;
}

// The head-major kernel runs at head_dim 128 alone (over a 16-bit and an fp8 cache); the split one at every head
// dim.
template <typename T, int D>
void launch_decode(const Params& p, bool head_major, cudaStream_t stream) {
  if constexpr (D == 128) {
    if (head_major)
      return p.kv_fp8 ? run_decode<T, D, true, true>(p, stream) : run_decode<T, D, true, false>(p, stream);
  }
  KILN_CHECK(!head_major, "decode attention: the head-major kernel takes head_dim 128, not {}", D);
  p.kv_fp8 ? run_decode<T, D, false, true>(p, stream) : run_decode<T, D, false, false>(p, stream);
}

// ---------------------------------------------------------------------------------------------
// Prefill: grid (row_tiles, num_kv_heads, num_seqs), heaviest row tiles first; WARPS warps own 16 * MT rows
// each (MT m-tiles share every K/V fragment a warp loads) of the CTA's rows of (token, head of the group)
// pairs; the CTA walks the keys [lo, hi) its rows can see in tiles of TOK through a STAGES-deep cp.async
// pipeline (one __syncthreads per tile), masking only tiles that straddle the causal diagonal or the window
// edge; warps skip tiles they cannot see.
template <typename T, int D, int WARPS, int TOK, int STAGES, int MT, bool F8 = false>
struct PrefillCfg {
  using Pipe = KvPipe<T, D, TOK, STAGES, F8>;
  static constexpr int kRows = 16 * MT * WARPS;
  static constexpr int kQElems = kRows * Tile<D>::kStride;
  static constexpr size_t kSmem = static_cast<size_t>(kQElems) * sizeof(T) + Pipe::kBytes;
  static constexpr bool kQReg = D <= 128 && MT == 1;
};

// S[MT][16 x TOK] = Q Kᵀ for MT m-tiles of one warp (q fragments from shared memory, rows 16 apart), each K
// fragment loaded once for all of them.
template <typename T, int D, int TOK, int MT>
__device__ __forceinline__ void qk_tile_mt(float (&s)[MT][TOK / 8][4], uint32_t q_base, const T* k_s, int lane) {
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nb = 0; nb < TOK / 8; ++nb) s[mt][nb][0] = s[mt][nb][1] = s[mt][nb][2] = s[mt][nb][3] = 0.0f;
  const uint32_t k_base = smem_addr(k_s);
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks) {
    uint32_t a[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
      load_q_frag<D>(a[mt], q_base + static_cast<uint32_t>(mt * 16 * Tile<D>::kStride * 2), ks, lane);
#pragma unroll
    for (int np = 0; np < TOK / 16; ++np) {
      uint32_t b[4];
      const int row = np * 16 + (lane & 7) + ((lane >> 4) << 3);
      const int col = ks * 16 + ((lane >> 3) & 1) * 8;
      ldmatrix_x4(b, k_base + static_cast<uint32_t>((row * Tile<D>::kStride + col) * 2));
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        mma16816<T>(s[mt][2 * np], a[mt], b[0], b[1]);
        mma16816<T>(s[mt][2 * np + 1], a[mt], b[2], b[3]);
      }
    }
  }
}

// O[MT][16 x D] += P[MT][16 x TOK] V[TOK x D], each V fragment loaded once for the MT m-tiles.
template <typename T, int D, int TOK, int MT>
__device__ __forceinline__ void pv_tile_mt(float (&o)[MT][D / 8][4], const float (&s)[MT][TOK / 8][4], const T* v_s,
                                           int lane) {
  const uint32_t v_base = smem_addr(v_s);
#pragma unroll
  for (int kk = 0; kk < TOK / 16; ++kk) {
    uint32_t a[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      p_frag<T, TOK>(a[mt], s[mt], kk);
    }
#pragma unroll
    for (int dp = 0; dp < D / 16; ++dp) {
      uint32_t b[4];
      const int row = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
      const int col = dp * 16 + (lane >> 4) * 8;
      ldmatrix_x4_trans(b, v_base + static_cast<uint32_t>((row * Tile<D>::kStride + col) * 2));
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        mma16816<T>(o[mt][2 * dp], a[mt], b[0], b[1]);
        mma16816<T>(o[mt][2 * dp + 1], a[mt], b[2], b[3]);
      }
    }
  }
}

// Log2-domain logits (logit2) of one warp's m-tile of prefill rows, this lane's rows row_base + g and
// row_base + g + 8, for the keys t0 .. t0 + TOK - 1; unless `full`, -inf where a row cannot see the key (past its
// causal diagonal, before its window, or a padding row past last_row).
template <int TOK>
__device__ __forceinline__ void prefill_logits(float (&s)[TOK / 8][4], const Params& p, int kvh, int row_base,
                                               int last_row, int pos0, int t0, bool full, int lane) {
  const int g = lane >> 2, t4 = lane & 3;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = row_base + g + 8 * h;
    const int rp = row <= last_row ? pos0 + row / p.group : -1;  // -1: padding row, sees nothing
    const float slope = p.alibi_slopes && row <= last_row ? p.alibi_slopes[kvh * p.group + row % p.group] : 0.0f;
#pragma unroll
    for (int nb = 0; nb < TOK / 8; ++nb)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int tok = t0 + nb * 8 + 2 * t4 + e;
        const bool ok = full || (tok <= rp && (p.window <= 0 || tok > rp - p.window));
        s[nb][2 * h + e] = ok ? logit2(s[nb][2 * h + e], p, slope, tok, rp) : -INFINITY;
      }
  }
}

// Writes O / l of one warp's m-tile of prefill rows (this lane's rows row_base + g and row_base + g + 8; l summed
// over the quad here), skipping rows past last_row.
template <typename T, int D>
__device__ __forceinline__ void store_prefill_rows(const float (&o)[D / 8][4], const float (&l)[2], const Params& p,
                                                   int kvh, int row_base, int last_row, int q_start, int lane) {
  const int g = lane >> 2, t4 = lane & 3;
  T* out = static_cast<T*>(p.out);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float lsum = l[h];
    lsum += __shfl_xor_sync(0xffffffffu, lsum, 1);
    lsum += __shfl_xor_sync(0xffffffffu, lsum, 2);
    const int row = row_base + g + 8 * h;
    if (row > last_row) continue;
    const int i = row / p.group, hq = kvh * p.group + row % p.group;
    const float inv = lsum > 0.0f ? 1.0f / lsum : 0.0f;
    T* dst = out + static_cast<int64_t>(q_start + i) * p.ldo + static_cast<int64_t>(hq) * D + 2 * t4;
#pragma unroll
    for (int db = 0; db < D / 8; ++db)
      *reinterpret_cast<typename Elem<T>::Pair*>(dst + db * 8) =
          Elem<T>::from_f2(o[db][2 * h] * inv, o[db][2 * h + 1] * inv);
  }
}

// The row tile a prefill CTA owns: rows [row0, last_row] of (token, head of the group) pairs of sequence seq and KV
// head kvh, whose new tokens start at q_start (positions from pos0), and the keys [lo, hi) those rows can see.
struct PrefillTile {
  int seq, kvh, q_start, row0, last_row, pos0, lo, hi;
  const int32_t* table;  // the sequence's block table
};

// Fills t for this CTA (`rows` rows per CTA); false when the tile lies past its sequence's rows. heaviest_first:
// the launch order walks row tiles from the last (most keys under the causal mask) down, all heads and sequences
// of a tile together; otherwise grid (row tile from the last, KV head, sequence).
__device__ __forceinline__ bool prefill_tile(const Params& p, int rows, bool heaviest_first, PrefillTile& t) {
  int tile;
  if (heaviest_first) {
    const long long b = blockIdx.x + static_cast<long long>(gridDim.x) * (blockIdx.y + gridDim.y * blockIdx.z);
    const long long per_tile = static_cast<long long>(gridDim.y) * gridDim.z;
    tile = gridDim.x - 1 - static_cast<int>(b / per_tile);
    const int rem = static_cast<int>(b % per_tile);
    t.seq = rem / gridDim.y;
    t.kvh = rem % gridDim.y;
  } else {
    tile = gridDim.x - 1 - blockIdx.x, t.kvh = blockIdx.y, t.seq = blockIdx.z;
  }
  t.q_start = p.cu_q_lens[t.seq];
  const int q_len = p.cu_q_lens[t.seq + 1] - t.q_start;
  t.row0 = tile * rows;
  if (t.row0 >= q_len * p.group) return false;
  t.pos0 = p.kv_lens[t.seq] - q_len;  // position of the first new token
  t.table = p.block_tables + static_cast<int64_t>(t.seq) * p.max_blocks_per_seq;
  t.last_row = min(t.row0 + rows, q_len * p.group) - 1;
  const int i_min = t.row0 / p.group, i_max = t.last_row / p.group;
  t.hi = t.pos0 + i_max + 1;
  t.lo = p.window > 0 ? max(0, t.pos0 + i_min - p.window + 1) : 0;
  return true;
}

template <typename T, int D, int WARPS, int TOK, int STAGES, int MT, bool FAST, bool F8>
__global__ void __launch_bounds__(WARPS * 32, 1) prefill_kernel(Params p) {
  using Cfg = PrefillCfg<T, D, WARPS, TOK, STAGES, MT, F8>;
  using Pipe = typename Cfg::Pipe;
  using KV = typename Pipe::KV;
  using TL = Tile<D>;
  constexpr int kThreads = WARPS * 32;
  constexpr int kWarpRows = 16 * MT;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* q_s = reinterpret_cast<T*>(smem_raw);
  const Pipe pipe{smem_raw + Cfg::kQElems * sizeof(T)};

  PrefillTile pt;
  if (!prefill_tile(p, Cfg::kRows, FAST, pt)) return;
  const int kvh = pt.kvh, q_start = pt.q_start, row0 = pt.row0, last_row = pt.last_row, pos0 = pt.pos0;
  const int lo = pt.lo, hi = pt.hi;
  const int32_t* table = pt.table;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

  // Query rows (zeros past the sequence).
  {
    const T* q = static_cast<const T*>(p.q);
    const uint32_t q_base = smem_addr(q_s);
    for (int c = threadIdx.x; c < Cfg::kRows * TL::kChunks; c += kThreads) {
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
#pragma unroll
  for (int st = 0; st < STAGES - 1; ++st) {
    if (st < ntiles)
      load_kv<KV, D, TOK, kThreads>(p, table, kvh, lo + st * TOK, hi, pipe.k(st), pipe.v(st), threadIdx.x);
    cp_async_commit();
  }

  // This warp's rows and their positions.
  const int wrow_first = row0 + warp * kWarpRows, wrow_last = min(row0 + warp * kWarpRows + kWarpRows - 1, last_row);
  const int wpos_min = wrow_first <= last_row ? pos0 + wrow_first / p.group : -1;
  const int wpos_max = wrow_first <= last_row ? pos0 + wrow_last / p.group : -1;

  float o[MT][D / 8][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int i = 0; i < D / 8; ++i) o[mt][i][0] = o[mt][i][1] = o[mt][i][2] = o[mt][i][3] = 0.0f;
  float m[MT][2], l[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) m[mt][0] = m[mt][1] = -INFINITY, l[mt][0] = l[mt][1] = 0.0f;
  const uint32_t q_base = smem_addr(q_s) + static_cast<uint32_t>(warp * kWarpRows * TL::kStride * sizeof(T));
  uint32_t qf[Cfg::kQReg ? D / 16 : 1][4];

  for (int it = 0; it < ntiles; ++it) {
    // Tile it (and Q) landed for this thread; the barrier makes it everyone's and frees the stage read last
    // iteration, which the next load refills.
    cp_async_wait<STAGES - 2>();
    __syncthreads();
    const int nxt = it + STAGES - 1;
    if (nxt < ntiles)
      load_kv<KV, D, TOK, kThreads>(p, table, kvh, lo + nxt * TOK, hi, pipe.k(nxt % STAGES), pipe.v(nxt % STAGES),
                                    threadIdx.x);
    cp_async_commit();
    // fp8: the whole CTA widens the landed tile into the 16-bit pair (free: every thread is past the barrier
    // above, so done with the previous tile).
    const T *k_t, *v_t;
    if constexpr (F8) {
      widen_kv_tile<T, D, TOK, kThreads>(pipe.k(it % STAGES), pipe.v(it % STAGES), pipe.wide_k(), pipe.wide_v(),
                                         threadIdx.x);
      __syncthreads();
      k_t = pipe.wide_k(), v_t = pipe.wide_v();
    } else {
      k_t = pipe.k(it % STAGES), v_t = pipe.v(it % STAGES);
    }
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
      float s[MT][TOK / 8][4];
      if constexpr (MT == 1) {
        qk_tile<T, D, TOK, Cfg::kQReg>(s[0], qf, q_base, k_t, lane);
      } else {
        qk_tile_mt<T, D, TOK, MT>(s, q_base, k_t, lane);
      }
      const bool full = t0 + TOK - 1 <= wpos_min && t0 + TOK <= hi && (p.window <= 0 || t0 > wpos_max - p.window) &&
                        wrow_last - wrow_first == kWarpRows - 1;
      // Unmasked tiles without soft-cap or ALiBi: scaled here, or (FAST) kept raw with the scale folded into the
      // softmax's exponent. Other tiles become log2-domain logits here (row positions and slopes recomputed, not
      // held in registers through the loop).
      const bool nomask = full && p.softcap <= 0.0f && p.alibi_slopes == nullptr;
      const bool plain = FAST && nomask && p.scale_log2 > 0.0f;
      if (!FAST && nomask) {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int nb = 0; nb < TOK / 8; ++nb)
#pragma unroll
            for (int e = 0; e < 4; ++e) s[mt][nb][e] *= p.scale_log2;
      } else if (!plain) {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
          prefill_logits<TOK>(s[mt], p, kvh, row0 + warp * kWarpRows + mt * 16, last_row, pos0, t0, full, lane);
      }
      const float sc = plain ? p.scale_log2 : 1.0f;
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        if constexpr (FAST) {
          softmax_update_lazy<D, TOK>(s[mt], m[mt], l[mt], o[mt], sc);
        } else {
          softmax_update<D, TOK>(s[mt], m[mt], l[mt], o[mt]);
        }
      }
      if constexpr (MT == 1) {
        pv_tile<T, D, TOK>(o[0], s[0], v_t, lane);
      } else {
        pv_tile_mt<T, D, TOK, MT>(o, s, v_t, lane);
      }
    }
  }
  cp_async_wait<0>();

#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
    store_prefill_rows<T, D>(o[mt], l[mt], p, kvh, row0 + warp * kWarpRows + mt * 16, last_row, q_start, lane);
}

// Launches prefill kernel K over the grid (row_tiles, num_kv_heads, num_seqs) with `smem` bytes of dynamic shared
// memory, raising the instance's limit on its first launch; max_shared: all of the unified L1 as shared memory, so
// that two CTAs of ~90-110 KB fit on an SM.
template <auto K>
void launch_prefill_grid(const Params& p, int threads, size_t smem, bool max_shared, cudaStream_t stream) {
  static bool configured = false;
  if (!configured) {
    KILN_CUDA_CHECK(cudaFuncSetAttribute(K, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    if (max_shared)
      KILN_CUDA_CHECK(cudaFuncSetAttribute(K, cudaFuncAttributePreferredSharedMemoryCarveout,
                                           static_cast<int>(cudaSharedmemCarveoutMaxShared)));
    configured = true;
  }
  const dim3 grid(p.row_tiles, p.num_kv_heads, p.num_seqs);
  K<<<grid, threads, smem, stream>>>(p);
  KILN_CUDA_LAUNCH_CHECK();
}

// The mma.sync prefill kernel of head dim D (F8: over an fp8 KV cache).
template <typename T, int D, bool F8>
void run_prefill(const Params& p, cudaStream_t stream) {
  constexpr PrefillConfig c = D == 128 ? kPrefillConfig128 : kPrefillConfig;
  constexpr int kTok = D <= 128 ? c.tok : 32;
  using Cfg = PrefillCfg<T, D, c.warps, kTok, c.stages, c.mt, F8>;
  static_assert(Cfg::kRows == prefill_rows_per_cta(D, false), "rows per CTA");
  launch_prefill_grid<prefill_kernel<T, D, c.warps, kTok, c.stages, c.mt, c.fast, F8>>(p, c.warps * 32, Cfg::kSmem,
                                                                                       c.fast, stream);
}

// head_dim 128 over a 16-bit cache may take the wgmma kernel; everything else the mma.sync one.
template <typename T, int D>
void launch_prefill(const Params& p, bool wgmma, cudaStream_t stream) {
  if constexpr (D == 128) {
    if (wgmma) return launch_prefill_sm90<T>(p, stream);
  }
  KILN_CHECK(!wgmma, "prefill attention: the wgmma kernel takes head_dim 128, not {}", D);
  p.kv_fp8 ? run_prefill<T, D, true>(p, stream) : run_prefill<T, D, false>(p, stream);
}

#define KILN_ATTN_INSTANCES(D)                                                       \
  template void launch_decode<__nv_bfloat16, D>(const Params&, bool, cudaStream_t);  \
  template void launch_decode<__half, D>(const Params&, bool, cudaStream_t);         \
  template void launch_prefill<__nv_bfloat16, D>(const Params&, bool, cudaStream_t); \
  template void launch_prefill<__half, D>(const Params&, bool, cudaStream_t);

}  // namespace kiln::cuda::attn
