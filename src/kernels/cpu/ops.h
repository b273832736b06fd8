// CPU kernels (fp32, multi-threaded on ThreadPool::global()) for the decoder forward pass.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kiln/model_config.h"

namespace kiln::cpu {

// y[t, o] = sum_k x[t, k] * w[o, k] (+ bias[o]) for x [T, in] and w [out, in], both row-major.
// ldx / ldy are row strides of x and y in elements (0: dense, i.e. in / out). Runs on ThreadPool::global(),
// each thread calling gemm_panel on its own panels of rows of w.
void matmul(const float* x, int64_t T, int64_t in, const float* w, int64_t out, const float* bias, float* y,
            int64_t ldx = 0, int64_t ldy = 0);

// The single-threaded kernel under matmul, for callers that parallelize (or produce weights) panel by panel:
// y[t, j] = sum_k x[t, k] * w[j, k] (+ bias[j]) for t < T, j < n, with w [n, K] row-major (a panel of rows of
// a larger weight; bias, when not null, its n values) and row strides ldx / ldy (0: K / n). It starts no
// threads. Every output element is bitwise what cpu::matmul computes for the same row of x and row of w,
// whatever T, n, or how a weight is cut into panels (each element is one accumulator over k in a fixed order,
// plus the bias), on the same kernels (set_simd).
void gemm_panel(const float* x, int64_t T, int64_t K, const float* w, int64_t n, const float* bias, float* y,
                int64_t ldx = 0, int64_t ldy = 0);

// Selects the vectorized (AVX2/FMA, when the CPU has it) or the portable kernels; returns whether the
// vectorized ones are now in use. For tests of the fallback path; not thread-safe against running kernels.
bool set_simd(bool enabled);

// Dot product of two fp32 vectors (vectorized; fp32 accumulation in several lanes).
float dot(const float* a, const float* b, int64_t n);

// y = x / sqrt(mean(x^2) + eps) * w per row of `dim` elements; with add_one the scale is (1 + w)
// (Gemma style). w may be null (no scale). x and y may alias.
void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t dim, float eps, bool add_one = false,
              int64_t ldx = 0, int64_t ldy = 0);

// y = (x - mean) / sqrt(var + eps) * w + b per row (w, b may be null). x and y may alias.
void layer_norm(const float* x, const float* w, const float* b, float* y, int64_t rows, int64_t dim, float eps);

// Inverse frequencies (rotary_dim / 2 of them) of a rotary embedding, with linear or llama3 scaling
// applied as Hugging Face computes them, and any per-pair divisors in `rope.freq_factors`.
std::vector<double> rope_inv_freq(const RopeConfig& rope, int64_t rotary_dim);

// cos/sin tables [T, half] for the given positions (angles computed in double).
void rope_tables(const std::vector<double>& inv_freq, const int64_t* positions, int64_t T, float* cos_out,
                 float* sin_out);

// Rotates the first `rotary_dim` dims of every head of x, laid out [T, n_heads, head_dim] with row stride
// `ld` (elements between tokens). Pairs are (i, i + rotary_dim/2) (HF half-split) or (2i, 2i+1) when
// interleaved. cos/sin are [T, rotary_dim/2] from rope_tables.
void rope(float* x, int64_t T, int64_t n_heads, int64_t head_dim, int64_t rotary_dim, bool interleaved,
          const float* cos, const float* sin, int64_t ld);

// Causal attention of T new queries against a contiguous KV cache.
// q: [T, n_heads, head_dim] with row stride ldq; the query of row t sits at position pos0 + t.
// k_cache, v_cache: [n_kv_heads, capacity, head_dim] (head stride = capacity * head_dim), holding keys
// for positions 0 .. pos0 + T - 1. n_heads must be a multiple of n_kv_heads (GQA / MQA).
// window > 0: a query at position p sees keys p - window + 1 .. p only (HF sliding-window semantics).
// out: [T, n_heads, head_dim] with row stride ldo.
// alibi_slopes (n_heads values, or null): adds slope[h] * (key position - query position) to each score.
// softcap > 0: scores (after scaling) become softcap * tanh(score / softcap) (Gemma 2).
void attention(const float* q, int64_t ldq, int64_t T, int64_t n_heads, int64_t head_dim, const float* k_cache,
               const float* v_cache, int64_t n_kv_heads, int64_t capacity, int64_t pos0, int64_t window,
               float scale, float* out, int64_t ldo, const float* alibi_slopes = nullptr, float softcap = 0.0f);

// ALiBi slopes of n_heads heads as MPT defines them: 2^(-bias_max * i / N) for i = 1..N, N the power of two
// at or above n_heads, taking the odd i first, then the even ones, when n_heads is not a power of two.
// With bias_max 8 these are BLOOM's slopes too.
std::vector<float> alibi_slopes(int64_t n_heads, double bias_max);

// x[t, :] += table[positions[t], :] (learned absolute positions, GPT-2); throws kiln::Error when a
// position is outside [0, n_positions).
void add_position_embedding(const float* table, int64_t n_positions, int64_t dim, const int64_t* positions,
                            int64_t T, float* x);

// A paged KV cache, one layer of it: the key of (block b, kv head g, slot s) is the head_dim floats at
// k + b * block_stride + (g * block_size + s) * head_dim; values likewise from v.
struct PagedKvLayer {
  const float* k = nullptr;
  const float* v = nullptr;
  int64_t block_stride = 0;  // floats between blocks
  int64_t block_size = 0;    // slots (tokens) per block
};

// One sequence of a packed batch: its queries are rows [q_begin, q_begin + q_len) of q, at positions
// context_len - q_len .. context_len - 1; its keys 0 .. context_len - 1 are read through block_table
// (position j lives in block block_table[j / block_size], slot j % block_size).
struct PagedSeq {
  int64_t q_begin = 0;
  int64_t q_len = 0;
  int64_t context_len = 0;
  const int32_t* block_table = nullptr;
};

// Causal attention of a packed batch over a paged KV cache, the sequences' rows in order and contiguous
// (seqs[i + 1].q_begin == seqs[i].q_begin + seqs[i].q_len). Cache-blocked (flash-attention tiles of keys at
// fixed absolute positions, an online softmax) and vectorized across query rows; each (row, head) gets the
// same arithmetic whatever else is in the batch, the chunk its keys arrived in, or the threads, so a row's
// result does not depend on any of them, and `attention` is this on a single block.
void paged_attention(const float* q, int64_t ldq, std::span<const PagedSeq> seqs, int64_t n_heads, int64_t head_dim,
                     const PagedKvLayer& kv, int64_t n_kv_heads, int64_t window, float scale, float* out,
                     int64_t ldo, const float* alibi_slopes = nullptr, float softcap = 0.0f);

// Copies the K and V rows of T tokens (k, v: [T, n_kv_heads, head_dim], row stride ld) into their slots
// (slot = block * block_size + offset) of a paged cache laid out as in PagedKvLayer. fp8: each value is stored
// rounded to fp8 e4m3 (kiln::round_to_fp8_e4m3), the values an fp8 KV cache on the GPU holds.
void paged_kv_write(const float* k, const float* v, int64_t ld, int64_t T, const int64_t* slots, int64_t n_kv_heads,
                    int64_t head_dim, float* k_pool, float* v_pool, int64_t block_stride, int64_t block_size,
                    bool fp8 = false);

enum class Activation : uint8_t { SiLU, GeluTanh, GeluErf };

// out[t, i] = act(x[t, i]) in place over rows*n elements.
void activation(float* x, int64_t n, Activation act);

// out[t, i] = act(gate[t, i]) * up[t, i]; gate and up rows have stride ld_in, out rows stride n.
void gated_activation(const float* gate, const float* up, float* out, int64_t rows, int64_t n, int64_t ld_in,
                      Activation act);

// out[t, :] = table[ids[t], :]; throws kiln::Error when an id is outside [0, vocab).
void embedding(const float* table, int64_t vocab, int64_t dim, const int32_t* ids, int64_t T, float* out);

// x += y over n elements.
void add_inplace(float* x, const float* y, int64_t n);

// x *= s over n elements.
void scale_inplace(float* x, int64_t n, float s);

// x clamped to [lo, hi] over n elements (MPT clip_qkv).
void clamp(float* x, int64_t n, float lo, float hi);

// x = cap * tanh(x / cap) over n elements (logit soft-capping).
void softcap(float* x, int64_t n, float cap);

// Row-wise softmax and log-softmax, in place.
void softmax(float* x, int64_t rows, int64_t n);
void log_softmax(float* x, int64_t rows, int64_t n);

}  // namespace kiln::cpu
