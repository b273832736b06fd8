// CPU kernels (fp32, multi-threaded on ThreadPool::global()) for the decoder forward pass.
#pragma once

#include <cstdint>
#include <vector>

#include "model/model_config.h"

namespace kiln::cpu {

// y[t, o] = sum_k x[t, k] * w[o, k] (+ bias[o]) for x [T, in] and w [out, in], both row-major.
// ldx / ldy are row strides of x and y in elements (0: dense, i.e. in / out).
void matmul(const float* x, int64_t T, int64_t in, const float* w, int64_t out, const float* bias, float* y,
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
void attention(const float* q, int64_t ldq, int64_t T, int64_t n_heads, int64_t head_dim, const float* k_cache,
               const float* v_cache, int64_t n_kv_heads, int64_t capacity, int64_t pos0, int64_t window,
               float scale, float* out, int64_t ldo);

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

// Row-wise softmax and log-softmax, in place.
void softmax(float* x, int64_t rows, int64_t n);
void log_softmax(float* x, int64_t rows, int64_t n);

}  // namespace kiln::cpu
