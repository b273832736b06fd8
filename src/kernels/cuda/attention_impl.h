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
// layout: split (the CTA's warps share one (sequence, KV head) and take its tiles in turn, then merge) or
// head-major (each warp owns one (KV head, 16-head chunk) of the sequence and walks all of the split's tiles,
// so a CTA's warps read neighbouring heads of the same KV block at once; no merge inside the CTA).
// Public variant v (DecodePlan::variant): 0 is kDefaultDecodeConfig, v >= 1 is config v - 1. Head dims other
// than 128 always use config 0.
struct DecodeConfig {
  int warps, tok, stages;
  bool head_major;
  bool l2pf = false;  // cp.async with the L2::256B prefetch hint
  bool rows = false;  // head-major: one block-table read per lane and tile (load_kv_rows)
};
constexpr DecodeConfig kDecodeConfigs[] = {
    {4, 16, 3, false},       {8, 16, 2, false},      {4, 16, 3, true},      {8, 16, 3, true},
    {2, 16, 6, true},        {4, 16, 6, true},       {8, 16, 2, true},      {2, 32, 3, true},
    {4, 16, 2, true},        {4, 16, 3, false, true}, {4, 16, 3, true, true}, {8, 16, 3, true, true},
    {4, 16, 3, true, false, true},  // 12: the default
    {4, 16, 2, true, false, true}};
constexpr int kNumDecodeConfigs = 14;
// Head-major, 4 warps, 3 stages, one block-table read per lane and tile (config 12): 97.3% of copy bandwidth at
// batch 384 x 1024 over the model's pool against 93.2% for the same kernel with load_kv_tile (config 2), and +7% end
// to end on 1000/1000 (docs/kernels.md). plan_decode_attention still picks config 0 for variant 0 when the head-major
// grid cannot fill the GPU (batch 1 at 2048 tokens: 13.7 us against 15.8 us).
constexpr int kDefaultDecodeConfig = 12;
static_assert(kDecodeConfigs[kDefaultDecodeConfig].head_major,
              "plan_decode_attention falls back from a head-major default");
constexpr int kNumDecodeVariants = kNumDecodeConfigs + 1;
// The configuration a plan's variant runs for a head_dim.
constexpr int decode_config(int variant, int head_dim) {
  return head_dim != 128 ? 0 : variant == 0 ? kDefaultDecodeConfig : variant - 1;
}
// Bytes of the K/V pipeline of tok-token tiles over `stages` stages: 16-bit tiles with rows padded by 16 bytes
// for ldmatrix, or (fp8) the one-byte tiles with rows padded by 16 bytes, plus (wide) one padded 16-bit K/V pair
// that each stage is widened into before use. The head-major decode kernels read fp8 tiles directly (no wide pair).
constexpr size_t kv_pipeline_bytes(int tok, int stages, int D, bool fp8, bool wide = true) {
  const size_t pair16 = static_cast<size_t>(2) * tok * (D + 8) * 2;
  return fp8 ? static_cast<size_t>(stages) * 2 * tok * (D + 16) + (wide ? pair16 : 0) : stages * pair16;
}
// Dynamic shared memory of a decode configuration (head_dim D, 16-bit compute; fp8: an fp8 KV cache).
constexpr size_t decode_smem_bytes(const DecodeConfig& c, int D, bool fp8 = false) {
  return static_cast<size_t>(c.head_major ? 0 : 16 * (D + 8) * 2) +
         static_cast<size_t>(c.warps) * kv_pipeline_bytes(c.tok, c.stages, D, fp8, !c.head_major);
}
// Over an fp8 KV cache every decode configuration has an instance, but prefill only config 0 and the default
// (prefill plans for it take variant 0).

// Prefill kernel configurations: warps per CTA, keys per tile, cp.async stages (the whole CTA shares the K/V
// tiles), m-tiles per warp (16 query rows each; a warp's m-tiles share each K/V fragment it loads), the CTAs per
// SM asked of the compiler (__launch_bounds__ minBlocks: 2 caps 8-warp CTAs at 128 registers per thread, so two
// CTAs share an SM and one's softmax overlaps the other's mma), whether a warp keeps its Q fragments in registers
// (1 m-tile, head_dim <= 128) or reloads them from shared memory per tile, and `fast`: the scale folded into the
// exponent's FMA, ex2.approx.ftz, lazy rescaling (a row's reference max moves only when a tile raises it by more
// than 2^8, and a warp skips the O rescale when none of its rows moved), heaviest row tiles of all (sequence, KV
// head) pairs launched first, and all of L1 as shared memory. Configurations 8-14 (v9-v15) are the `fast` ones;
// 15-24 (v16-v25) the wgmma ones (below; 21-24 warp-specialized). Public variant v
// (PrefillPlan::variant): 0 is kDefaultPrefillConfig (kDefaultWgmmaPrefillConfig on compute capability 9.0 over a
// 16-bit cache, resolved by plan_prefill_attention), v >= 1 is config v - 1; head dims other than 128 always use
// config 0 (keys per tile 32 for head_dim 256).
struct PrefillConfig {
  int warps, tok, stages, mt;
  int min_ctas = 1;
  bool q_regs = true;
  bool fast = false;
  // > 0: the wgmma kernel (sm_90a, sm90/attn_hd128_wgmma.cu) with this many warpgroups of 64 rows (warps = 4 * wg,
  // mt = 1); q_regs then means Q's A fragments in registers (else both Q Kᵀ operands from shared memory).
  int wg = 0;
  bool pipe = false;  // wgmma: a warpgroup issues tile j's Q Kᵀ and tile j - 1's P V together (softmax overlaps P V)
  // wgmma, warp-specialized (prefill_ws_kernel; implies pipe): one more warpgroup per CTA copies the K and V tiles
  // into rings of `stages` and `v_stages` slots, handed over through mbarriers; the other warpgroups only compute.
  int v_stages = 0;
  // warp-specialized with 2 warpgroups: they take turns issuing their products (named barriers), so one's softmax
  // runs while the other's products use the tensor cores.
  bool ping = false;
};
constexpr PrefillConfig kPrefillConfigs[] = {{4, 64, 2, 1},
                                             {8, 64, 2, 1},
                                             {8, 32, 3, 1},
                                             {4, 64, 3, 1},
                                             {4, 32, 4, 1},
                                             {4, 64, 2, 2},
                                             {4, 32, 3, 2},
                                             {4, 32, 2, 2},
                                             {8, 64, 2, 1, 1, true, true},
                                             {8, 32, 3, 1, 2, false, true},
                                             {8, 32, 2, 1, 2, false, true},
                                             {4, 32, 2, 2, 1, true, true},
                                             {4, 32, 3, 2, 1, true, true},
                                             {8, 32, 2, 2, 1, true, true},
                                             {6, 32, 3, 1, 2, true, true},
                                             {8, 64, 2, 1, 1, false, true, 2},
                                             {8, 64, 3, 1, 1, true, true, 2, true},
                                             {8, 64, 3, 1, 1, false, true, 2, true},
                                             {8, 64, 4, 1, 1, false, true, 2, true},
                                             {4, 64, 3, 1, 2, false, true, 1, true},
                                             {4, 64, 3, 1, 2, true, true, 1, true},
                                             {4, 64, 3, 1, 2, true, true, 1, true, 2},
                                             {4, 64, 3, 1, 2, false, true, 1, true, 2},
                                             {8, 64, 4, 1, 1, true, true, 2, true, 4},
                                             {8, 64, 4, 1, 1, true, true, 2, true, 4, true}};
constexpr int kNumPrefillConfigs = 25;
// The mma.sync configurations come first; the wgmma ones (wg > 0, v16-v25) run on compute capability 9.0 only.
constexpr int kNumMmaPrefillConfigs = 15;
// 4 warps x 2 m-tiles, 32-key tiles, 2 stages, the fast softmax (v12): on the H200, causal 4 x 2048 232 TFLOP/s
// against 164 for the earlier default (config 1, 8 warps x 16 rows, 64-key tiles), 1 x 4096 259 against 186,
// 8 x 1024 197 against 137; slower only on a short chunk after a long prefix (1 x (3584 + 512): 153 against 171).
constexpr int kDefaultPrefillConfig = 11;
// The wgmma configuration that plan_prefill_attention's variant 0 runs on compute capability 9.0 (head_dim 128,
// 16-bit cache; KILN_PREFILL_WGMMA=0 keeps kDefaultPrefillConfig): v24, warp-specialized, two compute warpgroups of
// 64 rows and a producer warpgroup per CTA, 64-key tiles, rings of 4 K and 4 V tiles, Q in registers, P V
// overlapped with the next tile's softmax. On the H200 (docs/kernels.md), against v21 (the earlier default: one
// warpgroup, two CTAs per SM, cp.async by the computing threads) in the same call: causal 4 x 8192 386 TFLOP/s
// against 360, a 512-token chunk after 3,584 cached tokens 380 against 357, 4 x 2048 304 against 298, 8 x 1024 the
// same (217 against 218).
constexpr int kDefaultWgmmaPrefillConfig = 23;
constexpr int kNumPrefillVariants = kNumPrefillConfigs + 1;
constexpr int prefill_config(int variant, int head_dim) {
  return head_dim != 128 ? 0 : variant == 0 ? kDefaultPrefillConfig : variant - 1;
}

template <typename T, int D>
void launch_decode(const Params& p, int variant, cudaStream_t stream);
// CTAs of a decode configuration resident per multiprocessor (the occupancy API; bf16 instance).
template <typename T, int D>
int decode_ctas_per_sm(int config, bool kv_fp8);
template <typename T, int D>
void launch_prefill(const Params& p, int variant, cudaStream_t stream);
// The wgmma configurations (head_dim 128, 16-bit cache; sm90/attn_hd128_wgmma.cu, built for sm_90a).
template <typename T>
void launch_prefill_sm90(const Params& p, int config, cudaStream_t stream);

// Head dims without a tensor-core instance (any head_dim up to kGenericMaxHeadDim): one warp per (query row,
// head), scalar fp32 math. Decode when p.cu_q_lens is null (one query per sequence, q row = sequence).
constexpr int kGenericMaxHeadDim = 256;
bool has_tensor_core_instance(int head_dim);
template <typename T>
void launch_generic(const Params& p, int32_t max_q_len, cudaStream_t stream);

}  // namespace kiln::cuda::attn
