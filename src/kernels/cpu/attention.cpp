// Causal (optionally sliding-window) attention with GQA/MQA over a paged KV cache (a contiguous one is a
// single block), and the write of new K/V rows into their paged slots.
//
// Attention runs as flash-attention panels: a task is up to kPanelRows query rows (positions x the heads of
// one KV head's group) of one sequence, which walks the keys in tiles of kKeyTile with an online softmax, each
// K/V tile serving every row of the panel from L1. Tiles start at absolute multiples of kKeyTile, and a row's
// arithmetic (the scores' FMA chains over d, each tile's max, rescale and sum, the output's FMA chain over its
// keys in order) depends only on the row and its keys: not on the panel it is grouped in, the chunk it arrives
// in, the batch, or the thread that runs it.
#include <algorithm>
#include <atomic>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/thread_pool.h"
#include "kernels/cpu/lanes.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/simd.h"
#include "kiln/dtype.h"
#include "kiln/error.h"

namespace kiln::cpu {
namespace {

constexpr int64_t kKeyTile = 64;
constexpr int kPanelRows = 24;

// One task: its rows (lanes past `rows`, up to the vector, copy the last row's pos/lo and have slope 0), and
// the keys of its KV head.
struct PanelCtx {
  int rows = 0;
  const float* q[kPanelRows];
  float* out[kPanelRows];
  alignas(32) int32_t pos[kPanelRows];
  alignas(32) int32_t lo[kPanelRows];
  alignas(32) float slope[kPanelRows];
  int64_t lo_min = 0, lo_max = 0, pos_min = 0, pos_max = 0;
  int64_t head_dim = 0;
  float scale = 1.0f, softcap = 0.0f;
  bool alibi = false;
  const float* k = nullptr;
  const float* v = nullptr;
  int64_t block_stride = 0, block_size = 0, head_off = 0;
  const int32_t* table = nullptr;
};

struct PanelScratch {
  std::vector<float> qt, ot, s;
  std::vector<const float*> kp, vp;
  void reserve(int64_t head_dim) {
    const auto lanes = static_cast<size_t>(head_dim * kPanelRows);
    if (qt.size() < lanes) {
      qt.resize(lanes);
      ot.resize(lanes);
    }
    s.resize(static_cast<size_t>(kKeyTile * kPanelRows));
    kp.resize(static_cast<size_t>(kKeyTile));
    vp.resize(static_cast<size_t>(kKeyTile));
  }
};

namespace portable {
using Ops = PortableOps;
#include "kernels/cpu/lanes_math.inc"
// (after the lane functions it uses)
#include "kernels/cpu/attention_panel.inc"
}  // namespace portable

#ifdef KILN_LANES_X86
#pragma GCC push_options
#pragma GCC target("avx2,fma")

namespace avx2 {
using Ops = Avx2Ops;
#include "kernels/cpu/lanes_math.inc"
// (after the lane functions it uses)
#include "kernels/cpu/attention_panel.inc"
}  // namespace avx2

#pragma GCC pop_options
#endif

using PanelFn = void (*)(const PanelCtx&, PanelScratch&);

PanelFn panel_fn() {
#ifdef KILN_LANES_X86
  if (simd_enabled()) return avx2::attend_panel;
#endif
  return portable::attend_panel;
}

// A panel: rows [r0, r0 + n) of sequence `seq`'s rows for KV head g, where row r is query t = r / group of
// the sequence, head g * group + r % group.
struct PanelTask {
  int32_t seq;
  int32_t g;
  int64_t r0;
  int64_t cost;  // keys x rows, for ordering
};

}  // namespace

void paged_attention(const float* q, int64_t ldq, std::span<const PagedSeq> seqs, int64_t n_heads, int64_t head_dim,
                     const PagedKvLayer& kv, int64_t n_kv_heads, int64_t window, float scale, float* out, int64_t ldo,
                     const float* alibi_slopes, float softcap) {
  KILN_ASSERT(n_kv_heads > 0 && n_heads % n_kv_heads == 0 && kv.block_size > 0);
  if (seqs.empty()) return;
  const int64_t group = n_heads / n_kv_heads;
  std::vector<PanelTask> tasks;
  int64_t total = 0;
  for (size_t si = 0; si < seqs.size(); ++si) {
    const PagedSeq& s = seqs[si];
    KILN_ASSERT(s.q_len >= 0 && s.q_len <= s.context_len);
    KILN_ASSERT(s.context_len <= INT32_MAX);
    const int64_t rows = s.q_len * group;
    for (int64_t g = 0; g < n_kv_heads; ++g)
      for (int64_t r0 = 0; r0 < rows; r0 += kPanelRows) {
        const int64_t n = std::min<int64_t>(kPanelRows, rows - r0);
        const int64_t p_last = s.context_len - s.q_len + (r0 + n - 1) / group;
        const int64_t keys = window > 0 ? std::min(window + kPanelRows, p_last + 1) : p_last + 1;
        tasks.push_back({static_cast<int32_t>(si), static_cast<int32_t>(g), r0, keys * ((n + 7) / 8 * 8)});
        total += tasks.back().cost;
      }
  }
  // One KV head at a time, so the threads share its keys and values in cache; within it the longest first, so
  // the last tasks to start are short ones and the threads finish together.
  std::stable_sort(tasks.begin(), tasks.end(),
                   [](const PanelTask& a, const PanelTask& b) { return a.g != b.g ? a.g < b.g : a.cost > b.cost; });
  const PanelFn fn = panel_fn();
  const int64_t bs = kv.block_size;

  auto run = [&](const PanelTask& task, PanelScratch& sc) {
    const PagedSeq& s = seqs[static_cast<size_t>(task.seq)];
    PanelCtx c;
    c.rows = static_cast<int>(std::min<int64_t>(kPanelRows, s.q_len * group - task.r0));
    c.head_dim = head_dim;
    c.scale = scale;
    c.softcap = softcap;
    c.alibi = alibi_slopes != nullptr;
    c.k = kv.k;
    c.v = kv.v;
    c.block_stride = kv.block_stride;
    c.block_size = bs;
    c.head_off = task.g * bs * head_dim;
    c.table = s.block_table;
    c.lo_min = c.pos_min = INT64_MAX;
    c.lo_max = c.pos_max = -1;
    for (int i = 0; i < kPanelRows; ++i) {
      const int64_t r = task.r0 + std::min(i, c.rows - 1);
      const int64_t t = r / group, h = task.g * group + r % group;
      const int64_t p = s.context_len - s.q_len + t;
      const int64_t lo = window > 0 ? std::max<int64_t>(0, p - window + 1) : 0;
      c.pos[i] = static_cast<int32_t>(p);
      c.lo[i] = static_cast<int32_t>(lo);
      c.slope[i] = i < c.rows && alibi_slopes ? alibi_slopes[h] : 0.0f;
      if (i < c.rows) {
        c.q[i] = q + (s.q_begin + t) * ldq + h * head_dim;
        c.out[i] = out + (s.q_begin + t) * ldo + h * head_dim;
        c.lo_min = std::min(c.lo_min, lo);
        c.lo_max = std::max(c.lo_max, lo);
        c.pos_min = std::min(c.pos_min, p);
        c.pos_max = std::max(c.pos_max, p);
      }
    }
    fn(c, sc);
  };

  ThreadPool& pool = ThreadPool::global();
  const int64_t workers = std::min<int64_t>(pool.size(), static_cast<int64_t>(tasks.size()));
  // Small jobs (a decode step at short context) are not worth waking the pool.
  if (workers <= 1 || total * head_dim < (int64_t{1} << 18)) {
    PanelScratch sc;
    sc.reserve(head_dim);
    for (const PanelTask& t : tasks) run(t, sc);
    return;
  }
  std::atomic<size_t> next{0};
  pool.parallel_for(workers, 1, [&](int64_t, int64_t) {
    PanelScratch sc;
    sc.reserve(head_dim);
    for (size_t i = next.fetch_add(1); i < tasks.size(); i = next.fetch_add(1)) run(tasks[i], sc);
  });
}

void attention(const float* q, int64_t ldq, int64_t T, int64_t n_heads, int64_t head_dim, const float* k_cache,
               const float* v_cache, int64_t n_kv_heads, int64_t capacity, int64_t pos0, int64_t window, float scale,
               float* out, int64_t ldo, const float* alibi_slopes, float softcap) {
  KILN_ASSERT(pos0 + T <= capacity);
  // A contiguous cache is a paged one with a single block of `capacity` slots.
  const int32_t block0 = 0;
  const PagedSeq seq{0, T, pos0 + T, &block0};
  const PagedKvLayer kv{k_cache, v_cache, 0, capacity};
  paged_attention(q, ldq, {&seq, 1}, n_heads, head_dim, kv, n_kv_heads, window, scale, out, ldo, alibi_slopes, softcap);
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
