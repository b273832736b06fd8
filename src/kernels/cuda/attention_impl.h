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
  int64_t block_stride = 0;  // elements between blocks
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
  int32_t split_tokens = 0;
  int32_t head_chunks = 1;
  float* part_o = nullptr;    // [num_seqs, num_heads, num_splits, head_dim]
  float* part_lse = nullptr;  // [num_seqs, num_heads, num_splits] (log2 domain)
  // prefill
  int32_t row_tiles = 0;
};

// Decode kernel configurations: warps per CTA, tokens per tile, cp.async pipeline stages per warp.
// Variant 0 serves every head_dim; head_dim 128 also carries the others (benchmarked in cuda_bench_test).
struct DecodeConfig {
  int warps, tok, stages;
};
constexpr DecodeConfig kDecodeConfigs[] = {{4, 16, 3}, {4, 32, 2}, {8, 16, 2}, {4, 16, 4}, {2, 16, 4}, {4, 32, 3}};
constexpr int kNumDecodeVariants = 6;

template <typename T, int D>
void launch_decode(const Params& p, int variant, cudaStream_t stream);
template <typename T, int D>
void launch_prefill(const Params& p, cudaStream_t stream);

// Head dims without a tensor-core instance (any head_dim up to kGenericMaxHeadDim): one warp per (query row,
// head), scalar fp32 math. Decode when p.cu_q_lens is null (one query per sequence, q row = sequence).
constexpr int kGenericMaxHeadDim = 256;
bool has_tensor_core_instance(int head_dim);
template <typename T>
void launch_generic(const Params& p, int32_t max_q_len, cudaStream_t stream);

}  // namespace kiln::cuda::attn
