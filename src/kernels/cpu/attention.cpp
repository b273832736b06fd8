// Causal (optionally sliding-window) attention with GQA/MQA over a paged KV cache (a contiguous one is a
// single block), and the write of new K/V rows into their paged slots.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/thread_pool.h"
#include "kernels/cpu/ops.h"
#include "kiln/dtype.h"
#include "kiln/error.h"

namespace kiln::cpu {

namespace {

// One query row of one head, at position p, against the keys at positions lo .. p: the scoring shared by
// the contiguous and the paged paths. key_at(j) / value_at(j) give the rows of position j; scores has room
// for p - lo + 1 floats. The arithmetic depends only on this row and its keys, never on the batch.
template <class KeyAt, class ValueAt>
void attend_row(const float* qv, int64_t head_dim, int64_t lo, int64_t p, float scale, const KeyAt& key_at,
                const ValueAt& value_at, float* scores, float* o, float slope = 0.0f, float softcap = 0.0f) {
  const int64_t n = p - lo + 1;
  float mx = -INFINITY;
  for (int64_t j = 0; j < n; ++j) {
    float sc = dot(qv, key_at(lo + j), head_dim) * scale;
    if (softcap > 0) sc = softcap * std::tanh(sc / softcap);
    // ALiBi: the bias slope * (key position - query position), <= 0; softmax ignores any per-row constant,
    // so this equals HF's slope * key position (BLOOM) and slope * (key - last) (MPT).
    if (slope != 0) sc += slope * static_cast<float>(lo + j - p);
    scores[j] = sc;
    mx = std::max(mx, sc);
  }
  double sum = 0.0;
  for (int64_t j = 0; j < n; ++j) {
    scores[j] = std::exp(scores[j] - mx);
    sum += scores[j];
  }
  const float inv = static_cast<float>(1.0 / sum);
  std::fill_n(o, head_dim, 0.0f);
  for (int64_t j = 0; j < n; ++j) {
    const float w = scores[j] * inv;
    const float* vv = value_at(lo + j);
    for (int64_t d = 0; d < head_dim; ++d) o[d] += w * vv[d];
  }
}

}  // namespace

void paged_attention(const float* q, int64_t ldq, std::span<const PagedSeq> seqs, int64_t n_heads, int64_t head_dim,
                     const PagedKvLayer& kv, int64_t n_kv_heads, int64_t window, float scale, float* out,
                     int64_t ldo, const float* alibi_slopes, float softcap) {
  KILN_ASSERT(n_kv_heads > 0 && n_heads % n_kv_heads == 0 && kv.block_size > 0);
  if (seqs.empty()) return;
  const int64_t group = n_heads / n_kv_heads;
  const int64_t rows = seqs.back().q_begin + seqs.back().q_len;
  int64_t keys_max = 0, keys_sum = 0;
  for (const PagedSeq& s : seqs) {
    KILN_ASSERT(s.q_len >= 0 && s.q_len <= s.context_len);
    keys_max = std::max(keys_max, s.context_len);
    keys_sum += std::min(s.context_len, window > 0 ? window : s.context_len) * s.q_len;
  }
  const int64_t cost = std::max<int64_t>(1, keys_sum / std::max<int64_t>(1, rows) * head_dim * 2);
  const int64_t bs = kv.block_size;
  ThreadPool::global().parallel_for(rows * n_heads, std::max<int64_t>(1, 16384 / cost), [&](int64_t i0, int64_t i1) {
    std::vector<float> scores(static_cast<size_t>(keys_max));
    // Tasks are (row, head), rows in sequence order: find the first task's sequence once, then walk.
    size_t si = static_cast<size_t>(
        std::upper_bound(seqs.begin(), seqs.end(), i0 / n_heads,
                         [](int64_t r, const PagedSeq& s) { return r < s.q_begin; }) -
        seqs.begin() - 1);
    for (int64_t task = i0; task < i1; ++task) {
      const int64_t r = task / n_heads;
      while (r >= seqs[si].q_begin + seqs[si].q_len) ++si;
      const PagedSeq& s = seqs[si];
      const int64_t h = task % n_heads;
      const int64_t kvh = h / group;
      const int64_t p = s.context_len - s.q_len + (r - s.q_begin);
      const int64_t lo = window > 0 ? std::max<int64_t>(0, p - window + 1) : 0;
      const int64_t head_off = kvh * bs * head_dim;
      const int32_t* table = s.block_table;
      auto key_at = [&](int64_t j) { return kv.k + table[j / bs] * kv.block_stride + head_off + (j % bs) * head_dim; };
      auto value_at = [&](int64_t j) { return kv.v + table[j / bs] * kv.block_stride + head_off + (j % bs) * head_dim; };
      attend_row(q + r * ldq + h * head_dim, head_dim, lo, p, scale, key_at, value_at, scores.data(),
                 out + r * ldo + h * head_dim, alibi_slopes ? alibi_slopes[h] : 0.0f, softcap);
    }
  });
}

void attention(const float* q, int64_t ldq, int64_t T, int64_t n_heads, int64_t head_dim, const float* k_cache,
               const float* v_cache, int64_t n_kv_heads, int64_t capacity, int64_t pos0, int64_t window,
               float scale, float* out, int64_t ldo, const float* alibi_slopes, float softcap) {
  KILN_ASSERT(pos0 + T <= capacity);
  // A contiguous cache is a paged one with a single block of `capacity` slots.
  const int32_t block0 = 0;
  const PagedSeq seq{0, T, pos0 + T, &block0};
  const PagedKvLayer kv{k_cache, v_cache, 0, capacity};
  paged_attention(q, ldq, {&seq, 1}, n_heads, head_dim, kv, n_kv_heads, window, scale, out, ldo, alibi_slopes,
                  softcap);
}

void paged_kv_write(const float* k, const float* v, int64_t ld, int64_t T, const int64_t* slots, int64_t n_kv_heads,
                    int64_t head_dim, float* k_pool, float* v_pool, int64_t block_stride, int64_t block_size,
                    bool fp8) {
  for (int64_t t = 0; t < T; ++t) {
    const int64_t b = slots[t] / block_size, s = slots[t] % block_size;
    for (int64_t g = 0; g < n_kv_heads; ++g) {
      const int64_t off = b * block_stride + (g * block_size + s) * head_dim;
      const float* ks = k + t * ld + g * head_dim;
      const float* vs = v + t * ld + g * head_dim;
      if (fp8) {
        std::transform(ks, ks + head_dim, k_pool + off, round_to_fp8_e4m3);
        std::transform(vs, vs + head_dim, v_pool + off, round_to_fp8_e4m3);
      } else {
        std::copy_n(ks, head_dim, k_pool + off);
        std::copy_n(vs, head_dim, v_pool + off);
      }
    }
  }
}

}  // namespace kiln::cpu
