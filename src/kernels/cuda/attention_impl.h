// Internal interface between the attention dispatcher (attention.cu) and its per-head_dim instance files.
#pragma once

#include <cstdint>

#include "kernels/cuda/cuda_ops.h"

namespace kiln::cuda::attn {

struct Params {
  const void* q = nullptr;
  int64_t ldq = 0;
  void* out = nullptr;
  int64_t ldo = 0;
  const void* k_cache = nullptr;
  const void* v_cache = nullptr;
  const int32_t* block_tables = nullptr;
  int32_t max_blocks_per_seq = 0;
  int32_t block_size = 0;
  int32_t block_shift = -1;  // log2(block_size) when it is a power of two, else -1
  int64_t block_stride = 0;  // elements between blocks
  bool kv_fp8 = false;       // K and V stored as fp8 e4m3, one byte each (else as T)
  const int32_t* kv_lens = nullptr;
  const int32_t* cu_q_lens = nullptr;  // prefill only
  int32_t num_seqs = 0;
  int32_t num_heads = 0, num_kv_heads = 0, group = 0;
  int32_t head_dim = 0;
  float scale_log2 = 0.0f;  // softmax scale times log2(e)
  float scale = 0.0f;
  float softcap = 0.0f;
  const float* alibi_slopes = nullptr;  // [num_heads] device, or null
  int32_t window = 0;
  // decode split-K
  int32_t num_splits = 1;
  int32_t head_chunks = 1;
  float* part_o = nullptr;    // [num_seqs, num_heads, num_splits, head_dim]
  float* part_lse = nullptr;  // [num_seqs, num_heads, num_splits] (log2 domain)
  // prefill
  int32_t row_tiles = 0;
};

// Decode kernel configurations: warps per CTA, tokens per tile, cp.async pipeline stages per warp, and the
// layout: split (the CTA's warps share one (sequence, KV head) and take its tiles in turn, then merge; every
// tensor-core head dim) or head-major (each warp owns one (KV head, 16-head chunk) of the sequence and walks all of
// the split's tiles, so a CTA's warps read neighbouring heads of the same KV block at once; no merge inside the
// CTA; head_dim 128). DecodePlan::head_major picks one. The numbers that chose both are in docs/kernels.md
// (measured against configurations since removed).
struct DecodeConfig {
  int warps, tok, stages;
  bool head_major;
};
constexpr DecodeConfig kSplitDecode = {4, 16, 3, false};
// Head-major, 4 warps, 3 stages, each lane loading a column chunk of a tile's keys with one block-table read
// (load_kv_rows): 97.3% of copy bandwidth at batch 384 x 1024 over the model's pool against 93.2% for the same
// kernel with load_kv_tile, and +7% end to end on 1000/1000 (docs/kernels.md). plan_decode_attention takes the
// split kernel instead when the head-major grid cannot fill the GPU (batch 1 at 2048 tokens: 13.7 us against 15.8).
constexpr DecodeConfig kHeadMajorDecode = {4, 16, 3, true};
// Bytes of the K/V pipeline of tok-token tiles over `stages` stages: 16-bit tiles with rows padded by 16 bytes
// for ldmatrix, or (fp8) the one-byte tiles with rows padded by 16 bytes, plus (wide) one padded 16-bit K/V pair
// that each stage is widened into before use. The head-major decode kernel reads fp8 tiles directly (no wide pair).
constexpr size_t kv_pipeline_bytes(int tok, int stages, int D, bool fp8, bool wide = true) {
  const size_t pair16 = static_cast<size_t>(2) * tok * (D + 8) * 2;
  return fp8 ? static_cast<size_t>(stages) * 2 * tok * (D + 16) + (wide ? pair16 : 0) : stages * pair16;
}
// Dynamic shared memory of a decode configuration (head_dim D, 16-bit compute; fp8: an fp8 KV cache).
constexpr size_t decode_smem_bytes(const DecodeConfig& c, int D, bool fp8 = false) {
  return static_cast<size_t>(c.head_major ? 0 : 16 * (D + 8) * 2) +
         static_cast<size_t>(c.warps) * kv_pipeline_bytes(c.tok, c.stages, D, fp8, !c.head_major);
}

// mma.sync prefill kernel configurations: warps per CTA, keys per tile, cp.async stages (the whole CTA shares the
// K/V tiles), m-tiles per warp (16 query rows each; a warp's m-tiles share each K/V fragment it loads), and `fast`:
// the scale folded into the exponent's FMA, ex2.approx.ftz, lazy rescaling (a row's reference max moves only when a
// tile raises it by more than 2^8, and a warp skips the O rescale when none of its rows moved), heaviest row tiles
// of all (sequence, KV head) pairs launched first, and all of L1 as shared memory. A warp with one m-tile keeps its
// Q fragments in registers (head_dim <= 128), else reloads them from shared memory per tile.
struct PrefillConfig {
  int warps, tok, stages, mt;
  bool fast;
};
// Head dims other than 128 (32-key tiles for head_dim 256), over a 16-bit or an fp8 cache.
constexpr PrefillConfig kPrefillConfig = {4, 64, 2, 1, false};
// Head_dim 128 over an fp8 cache, and over a 16-bit one where the wgmma kernel does not run: 4 warps x 2 m-tiles,
// 32-key tiles, 2 stages, the fast softmax. On the H200, causal 4 x 2048 232 TFLOP/s against 164 for the earlier
// default (8 warps x 16 rows, 64-key tiles), 1 x 4096 259 against 186, 8 x 1024 197 against 137; slower only on a
// short chunk after a long prefix (1 x (3584 + 512): 153 against 171).
constexpr PrefillConfig kPrefillConfig128 = {4, 32, 2, 2, true};
// The wgmma prefill kernel (sm_90a, sm90/attn_hd128_wgmma.cu; head_dim 128 over a 16-bit cache on compute
// capability 9.0): warpgroups of 64 rows computing, one producer warpgroup copying the K and V tiles into rings of
// k_stages and v_stages slots, keys per tile; Q in registers, P V overlapped with the next tile's softmax. On the
// H200 (docs/kernels.md), against the earlier wgmma default (one warpgroup, two CTAs per SM, cp.async by the
// computing threads) in the same call: causal 4 x 8192 386 TFLOP/s against 360, a 512-token chunk after 3,584
// cached tokens 380 against 357, 4 x 2048 304 against 298, 8 x 1024 the same (217 against 218).
struct WgmmaPrefillConfig {
  int wg, tok, k_stages, v_stages;
};
constexpr WgmmaPrefillConfig kWgmmaPrefill = {2, 64, 4, 4};
// Query rows per CTA of the prefill kernel for a head dim (wgmma: the Hopper kernel).
constexpr int prefill_rows_per_cta(int head_dim, bool wgmma) {
  return wgmma ? 64 * kWgmmaPrefill.wg
               : 16 * (head_dim == 128 ? kPrefillConfig128.warps * kPrefillConfig128.mt
                                       : kPrefillConfig.warps * kPrefillConfig.mt);
}

// head_major: kHeadMajorDecode (head_dim 128 only), else kSplitDecode.
template <typename T, int D>
void launch_decode(const Params& p, bool head_major, cudaStream_t stream);
// CTAs of the head-major decode kernel (head_dim 128) resident per multiprocessor (the occupancy API; bf16
// instance).
int head_major_decode_ctas_per_sm(bool kv_fp8);
// wgmma: the Hopper kernel (head_dim 128 over a 16-bit cache), else the mma.sync one.
template <typename T, int D>
void launch_prefill(const Params& p, bool wgmma, cudaStream_t stream);
// The wgmma kernel (head_dim 128, 16-bit cache; sm90/attn_hd128_wgmma.cu, built for sm_90a).
template <typename T>
void launch_prefill_sm90(const Params& p, cudaStream_t stream);

// Head dims without a tensor-core instance (any head_dim up to kGenericMaxHeadDim): one warp per (query row,
// head), scalar fp32 math. Decode when p.cu_q_lens is null (one query per sequence, q row = sequence).
constexpr int kGenericMaxHeadDim = 256;
bool has_tensor_core_instance(int head_dim);
template <typename T>
void launch_generic(const Params& p, int32_t max_q_len, cudaStream_t stream);

}  // namespace kiln::cuda::attn
