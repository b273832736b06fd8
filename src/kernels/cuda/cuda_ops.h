// The CUDA ops of the forward pass on raw device pointers: plan on the host, run on a stream, never
// allocate inside a run. C++17-clean (included by .cu files); every op is checked against kernels/cpu.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "kiln/sampling.h"

// cudaStream_t without the CUDA headers (the same typedef cuda_runtime.h makes).
struct CUstream_st;
typedef struct CUstream_st* cudaStream_t;

namespace kiln::cuda {

// Number of CUDA devices usable now (0 when there is no driver or GPU).
int device_count();
// Multiprocessors of the current device (for planning grids).
int num_sms();

// Element type of activations, weights and the KV cache (fp32 accumulation everywhere).
enum class ElemType : uint8_t { BF16, F16, F32 };

// Random weights in place (core/random_normal.h): dst[i] (type t) = round_via(float(random_normal(key, i,
// stddev))), round_via being the checkpoint's type (BF16/F16 round once more, F32 not); the values the host's
// RandomSource gives, up to the last bit of the device's double log/sin/cos in rare cases.
void fill_normal(ElemType t, void* dst, int64_t n, uint64_t key, double stddev, ElemType round_via,
                 cudaStream_t stream);
// dst[i] = value over n fp32 elements.
void fill_f32(float* dst, int64_t n, float value, cudaStream_t stream);

// ---------------------------------------------------------------------------------------------
// GEMM (cuBLASLt): y[t, o] = sum_k x[t, k] * w[o, k] (+ bias[o]) (+ residual[t, o]), as cpu::matmul.
// x and w are `in_type` (bf16/f16); y is in_type or F32. bias and residual have y's type: 16-bit with a
// 16-bit y, fp32 with an F32 y (the logits, and the fp32 residual stream: o_proj and down accumulate into it
// through the epilogue, D = C + A·B with fp32 C/D). Row strides in elements (0: dense). residual may equal y
// (in-place residual add). Calls from one thread at a time.
// The algorithm is chosen once per shape and cached: cuBLASLt's top heuristic choice, or, with tuning on, for the
// shapes whose row count T falls in a bucket (T rounded up to a power of two) of at least tuning_min_rows (GemmOptions;
// docs/kernels.md), the fastest of up to 8 heuristic candidates timed on the first call of the bucket (50-250 ms; the
// result is unchanged: an in-place residual is not accumulated more than once); later shapes of the bucket use it
// where cuBLASLt accepts it for their T. Never tunes while the stream is capturing a CUDA graph.
struct GemmOptions {
  // Autotune the buckets of at least tuning_min_rows rows. The default, from 1024 rows, tunes the prefill GEMMs
  // only: tuning gained there on the Llama-3.1-8B serving runs and lost on the batch-384 decode GEMMs, whose bucket
  // (512) was tuned at another T than they run at (docs/kernels.md). Off: the heuristic's choice, the same kernel
  // at every load (tuning picks by timing, so two loads may round a prefill GEMM differently).
  bool tuning = true;
  int64_t tuning_min_rows = 1024;  // 1: every bucket
  // One line on stderr per tuned bucket: the candidates timed and the choice.
  bool log_tuning = false;
};

class Gemm {
 public:
  // workspace: device memory cuBLASLt may use (32 MiB is plenty on Hopper); owned by the caller.
  Gemm(void* workspace, size_t workspace_bytes, const GemmOptions& options = {});
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  void run(ElemType in_type, ElemType out_type, const void* x, int64_t T, int64_t in, const void* w, int64_t out,
           const void* bias, const void* residual, void* y, cudaStream_t stream, int64_t ldx = 0, int64_t ldy = 0);
  // Shapes planned so far (for tests and logs).
  size_t cached_plans() const;
  // The options' tuning and its threshold (what a caller tunes ahead of time, as the model does at load).
  bool tuning() const;
  int64_t tuning_min_rows() const;
  // Buckets (shape, T rounded up to a power of two) tuned so far.
  size_t tuned_shapes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// ---------------------------------------------------------------------------------------------
// Activations.

enum class Act : uint8_t { SiLU, GeluTanh, GeluErf };

// out[r, i] = act(gate[r, i]) * up[r, i]; gate/up rows have stride ld_in, out rows stride n. As
// cpu::gated_activation (a fused gate_up GEMM output gives gate = buf, up = buf + n, ld_in = 2n). f16 stores
// saturate at +-65504 (NaN stays NaN), as activation_f32's.
void gated_activation(ElemType t, const void* gate, const void* up, void* out, int64_t rows, int64_t n, int64_t ld_in,
                      Act act, cudaStream_t stream);

// ---------------------------------------------------------------------------------------------
// The fp32 residual stream. CudaDecoderModel keeps x in fp32: the embedding writes it, o_proj and down add into
// it (Gemm::run with an F32 y), and the norms read it and write the 16-bit h the GEMMs read. Norm weights and
// biases here are fp32.

// y = norm(x) over fp32 rows [rows, dim]: LayerNorm ((x - mean) / sqrt(var + eps) * w + b) with layer_norm, else
// RMSNorm (x / sqrt(mean(x^2) + eps) * w, or * (1 + w) with add_one); w, b may be null. out_type bf16/f16 (h)
// or F32. accumulate (F32 only): y += norm(x) (Gemma 2's post-norms into the residual). rows_idx (device, or
// null): output row r normalizes input row rows_idx[r] (the logit rows' gather). x may equal y only when neither
// gathers nor accumulates. As cpu::layer_norm / cpu::rms_norm.
void norm_f32(ElemType out_type, bool layer_norm, const float* x, const float* w, const float* b, void* y,
              int64_t rows, int64_t dim, float eps, bool add_one, bool accumulate, const int32_t* rows_idx,
              cudaStream_t stream);

// out[t, :] = table[ids[t], :] * scale (+ pos_table[positions[t], :]) in fp32; table and pos_table are type t
// (pos_table may be null: no learned positions). An id or position out of range contributes zeros (the caller
// validates them on the host). As cpu::embedding, cpu::scale_inplace, cpu::add_position_embedding.
void embedding_f32(ElemType t, const void* table, int64_t vocab, int64_t dim, const int32_t* ids, int64_t T,
                   float scale, const void* pos_table, int64_t n_positions, const int32_t* positions, float* out,
                   cudaStream_t stream);

// out[r, i] (type t, rows of n) = act(in[r, i]) (* in[r, n + i] when gated: a fused gate|up row) from fp32 rows of
// stride ld_in (an F32 GEMM output, its bias added in the epilogue). As cpu::activation / cpu::gated_activation.
void activation_f32(ElemType t, const float* in, int64_t ld_in, void* out, int64_t rows, int64_t n, Act act, bool gated,
                    cudaStream_t stream);

// x[i] = min(max(x[i], lo), hi) over n elements of type t (MPT's clip_qkv on the fused qkv). As cpu::clamp.
void clamp(ElemType t, void* x, int64_t n, float lo, float hi, cudaStream_t stream);

// x[i] = cap * tanh(x[i] / cap) over n fp32 elements (Gemma 2's final logit soft-cap). As cpu::softcap.
void softcap(float* x, int64_t n, float cap, cudaStream_t stream);

// ---------------------------------------------------------------------------------------------
// Paged KV cache. Per layer, K and V blocks each [num_kv_heads, block_size, head_dim], block b at
// k_cache / v_cache + b * block_stride elements (block_stride 0: dense, num_kv_heads * block_size * head_dim;
// larger strides let K and V, and every layer, share one pool as cpu::PagedKvLayer does). Token slot s lives
// in block s / block_size at offset s % block_size.

// RoPE on q and k of a fused qkv buffer, fused with writing k and v into their paged slots.
// qkv: [T, ld_qkv], row t = q (num_heads * head_dim) | k (num_kv_heads * head_dim) | v (same).
// q is rotated in place (k and v in qkv are left as they were). Optional per-head RMSNorm of q and k
// before the rotation (Qwen3): q_norm / k_norm [head_dim] of type t, or null.
struct RopeKvArgs {
  int64_t num_tokens = 0;
  int32_t num_heads = 0, num_kv_heads = 0, head_dim = 0;
  int32_t rotary_dim = 0;                 // the first rotary_dim dims of each head rotate; the rest pass through
  bool interleaved = false;               // pairs (2i, 2i+1) instead of (i, i + rotary_dim/2)
  int64_t ld_qkv = 0;                     // elements between tokens (0: dense)
  const int32_t* positions = nullptr;     // [T] device
  const double* inv_freq = nullptr;       // [rotary_dim / 2] device (cpu::rope_inv_freq, scaling included)
  const int32_t* slot_mapping = nullptr;  // [T] device; < 0: do not write this token
  void* k_cache = nullptr;
  void* v_cache = nullptr;
  int32_t block_size = 16;
  int64_t block_stride = 0;  // elements between blocks (0: dense)
  const void* q_norm = nullptr;
  const void* k_norm = nullptr;
  float qk_norm_eps = 1e-6f;
  // Write K and V into an fp8 e4m3 cache (one byte each): rounded to nearest even, saturated at +-448, no scale
  // (as kiln::round_to_fp8_e4m3). q and the qkv buffer stay of type t.
  bool kv_fp8 = false;
};
void rope_kv_write(ElemType t, void* qkv, const RopeKvArgs& args, cudaStream_t stream);

// ---------------------------------------------------------------------------------------------
// Attention over the paged KV cache. Query i of a sequence with q_len new tokens and kv_len cached
// tokens (the new ones included, already written) sits at position kv_len - q_len + i and sees keys
// 0 .. its position (window > 0: only the last `window` of them), as cpu::attention.
struct PagedKv {
  const void* k_cache = nullptr;
  const void* v_cache = nullptr;
  const int32_t* block_tables = nullptr;  // [num_seqs, max_blocks_per_seq]
  int32_t max_blocks_per_seq = 0;
  int32_t block_size = 16;
  int64_t block_stride = 0;          // elements between blocks (0: dense)
  const int32_t* kv_lens = nullptr;  // [num_seqs]
};

struct AttentionShape {
  // head_dim 64, 80, 96, 128, 256 run on tensor cores; any other up to 256 on a generic scalar kernel (decode
  // and prefill alike, one warp per query row and head, no splits).
  int32_t num_heads = 0, num_kv_heads = 0, head_dim = 0;
  float scale = 1.0f;
  int32_t window = 0;                   // 0: full
  float softcap = 0.0f;                 // > 0: scores = softcap * tanh(scores / softcap) (Gemma 2)
  const float* alibi_slopes = nullptr;  // device [num_heads] (cpu::alibi_slopes), or null: no ALiBi
  // The cache holds K and V as fp8 e4m3 (one byte each, no scale; rope_kv_write's kv_fp8), widened exactly to
  // the compute type in the kernels. Strides and offsets stay in elements.
  bool kv_fp8 = false;
};

// Decode: one query per sequence, q [num_seqs, ldq] (heads packed, head_dim each), out likewise.
// Split-K over the context (flash-decoding); each CTA loads a KV tile once for all query heads of its
// KV group. Each sequence's own context is divided evenly (in whole tiles) among the splits, so a plan is
// right for any kv_len and reusable across steps and inside CUDA graphs; max_kv_len only sizes the split
// count.
struct DecodePlan {
  int32_t num_seqs = 0;
  int32_t max_kv_len = 0;
  int32_t num_splits = 1;
  int32_t split_tokens = 0;  // context tokens per split at max_kv_len
  int32_t head_chunks = 1;   // query heads of a group are done 16 at a time
  // The kernel: head-major (a warp per KV head, head_dim 128, planned when its grid fills the GPU) or split (the
  // CTA's warps share one KV head). Either computes any plan right; a caller may clear it (tests run both).
  bool head_major = false;
  size_t workspace_bytes = 0;
};
DecodePlan plan_decode_attention(const AttentionShape& shape, int32_t num_seqs, int32_t max_kv_len, int32_t num_sms,
                                 int32_t num_splits = 0 /* 0: choose */);
void decode_attention(ElemType t, const DecodePlan& plan, const AttentionShape& shape, const void* q, int64_t ldq,
                      const PagedKv& kv, void* out, int64_t ldo, void* workspace, cudaStream_t stream);

// Prefill (and chunked prefill): q [total_q, ldq] holds the new tokens of num_seqs sequences back to back,
// cu_q_lens [num_seqs + 1] (device) their offsets. Tensor cores (mma.sync; wgmma on compute capability 9.0 for
// head_dim 128 over a 16-bit cache), online softmax, causal.
struct PrefillPlan {
  int32_t num_seqs = 0;
  int32_t max_q_len = 0;
  // The wgmma kernel (planned for head_dim 128 over a 16-bit cache on compute capability 9.0), else mma.sync. A
  // caller may clear it to keep the mma.sync kernel there (tests run both).
  bool wgmma = false;
};
PrefillPlan plan_prefill_attention(const AttentionShape& shape, int32_t num_seqs, int32_t max_q_len);
void prefill_attention(ElemType t, const PrefillPlan& plan, const AttentionShape& shape, const void* q, int64_t ldq,
                       const int32_t* cu_q_lens, const PagedKv& kv, void* out, int64_t ldo, cudaStream_t stream);

// ---------------------------------------------------------------------------------------------
// Sampling on fp32 logits [rows, ld], the CPU Sampler's definition (runtime/sampler.h) in the same arithmetic
// (core/sampling_math.h). Per row, with its SamplingParams: the penalties from the row's entries of SamplePenalty
// (the statistics its Sampler keeps), then greedy (temperature 0 or top_k 1: the argmax, lowest id on ties) or a
// draw: the kept set (top-k, then the shortest prefix reaching top-p's fixed-point mass, ranked by order_key with
// the lower id first among equal keys, then min-p relative to the best token), and among it the largest
// logit / T + Gumbel noise from Philox4x32-10 keyed by the seed at counter (token / 4, step). Equal logits give the
// CPU Sampler's token up to the last ulp of logf/expf near a tie; a draw depends on (seed, step) alone, never on
// the row or the batch. Also the chosen token's log-prob and the top_k (<= 20) log-probs (best first, lower id on
// ties) of the raw (unpenalized, temperature 1) row. The kept set is found by radix selects over the row (by count
// for top-k, by mass for top-p). Penalized rows are modified in place during the call and restored before it
// returns (the raw values wait in penalty_scratch).
constexpr int kMaxTopLogprobs = 20;
// What a row carries beside its SamplingParams.
struct SampleRowInfo {
  uint64_t step = 0;          // tokens its request generated before this one (Sampler::step)
  int32_t penalty_begin = 0;  // its entries in SampleArgs::penalties
  int32_t penalty_count = 0;  // 0: no penalties
};
struct SampleArgs {
  const float* logits = nullptr;
  int64_t rows = 0, vocab = 0, ld = 0;       // ld 0: vocab
  const SamplingParams* params = nullptr;    // [rows], seeds resolved (unset: 0); null: every row greedy
  const SampleRowInfo* info = nullptr;       // [rows]; null: step 0 and no penalties
  const SamplePenalty* penalties = nullptr;  // the entries the rows' ranges index
  float* penalty_scratch = nullptr;          // as many floats as entries (device, writable)
  int32_t top_k = 0;                         // how many top log-probs to report (0..20)
  int32_t* tokens = nullptr;                 // [rows]
  float* token_logprobs = nullptr;           // [rows] or null
  int32_t* top_ids = nullptr;                // [rows, top_k]
  float* top_logprobs = nullptr;             // [rows, top_k]
};
void sample(const SampleArgs& args, cudaStream_t stream);

}  // namespace kiln::cuda
