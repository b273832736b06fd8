// Causal (optionally sliding-window) attention with GQA/MQA over a contiguous per-sequence KV cache.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/thread_pool.h"
#include "kernels/cpu/ops.h"
#include "kiln/error.h"

namespace kiln::cpu {

void attention(const float* q, int64_t ldq, int64_t T, int64_t n_heads, int64_t head_dim, const float* k_cache,
               const float* v_cache, int64_t n_kv_heads, int64_t capacity, int64_t pos0, int64_t window,
               float scale, float* out, int64_t ldo) {
  KILN_ASSERT(n_kv_heads > 0 && n_heads % n_kv_heads == 0);
  KILN_ASSERT(pos0 + T <= capacity);
  const int64_t group = n_heads / n_kv_heads;
  const int64_t tasks = T * n_heads;
  const int64_t keys_max = pos0 + T;
  const int64_t cost = std::max<int64_t>(1, std::min(keys_max, window > 0 ? window : keys_max) * head_dim * 2);
  ThreadPool::global().parallel_for(tasks, std::max<int64_t>(1, 16384 / cost), [&](int64_t i0, int64_t i1) {
    std::vector<float> scores(static_cast<size_t>(keys_max));
    for (int64_t task = i0; task < i1; ++task) {
      const int64_t t = task / n_heads;
      const int64_t h = task % n_heads;
      const int64_t kvh = h / group;
      const int64_t p = pos0 + t;
      const int64_t lo = window > 0 ? std::max<int64_t>(0, p - window + 1) : 0;
      const float* qv = q + t * ldq + h * head_dim;
      const float* kb = k_cache + kvh * capacity * head_dim;
      const float* vb = v_cache + kvh * capacity * head_dim;
      const int64_t n = p - lo + 1;
      float mx = -INFINITY;
      for (int64_t j = 0; j < n; ++j) {
        const float sc = dot(qv, kb + (lo + j) * head_dim, head_dim) * scale;
        scores[j] = sc;
        mx = std::max(mx, sc);
      }
      double sum = 0.0;
      for (int64_t j = 0; j < n; ++j) {
        scores[j] = std::exp(scores[j] - mx);
        sum += scores[j];
      }
      const float inv = static_cast<float>(1.0 / sum);
      float* o = out + t * ldo + h * head_dim;
      std::fill_n(o, head_dim, 0.0f);
      for (int64_t j = 0; j < n; ++j) {
        const float w = scores[j] * inv;
        const float* vv = vb + (lo + j) * head_dim;
        for (int64_t d = 0; d < head_dim; ++d) o[d] += w * vv[d];
      }
    }
  });
}

}  // namespace kiln::cpu
