// Sampling on the GPU, one CTA per row, the CPU Sampler's definition in the arithmetic both share
// (core/sampling_math.h). One pass over the logits gives the log-sum-exp, greedy argmax, a plain temperature draw
// by the Gumbel-max trick (Philox4x32-10 counter-based numbers) and the top-K log-probs; rows with penalties or
// top-k/top-p/min-p take more passes (penalties in place, radix selects for the kept set, then a Gumbel-max draw
// restricted to it).
#include <algorithm>
#include <climits>

#include "core/sampling_math.h"
#include "kernels/cuda/cuda_common.cuh"

namespace kiln::cuda {
namespace {

constexpr int kSampleThreads = 512;
constexpr int kK = kMaxTopLogprobs;

using sampling::order_key;

// (value, id) ordering: larger value first, lower id on ties.
__device__ __forceinline__ bool better(float v, int id, float bv, int bid) {
  return v > bv || (v == bv && id < bid);
}

__device__ __forceinline__ void warp_best(float& v, int& id) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int oid = __shfl_xor_sync(0xffffffffu, id, o);
    if (better(ov, oid, v, id)) v = ov, id = oid;
  }
}

// Merges the lanes' online log-sum-exp states (running max m, sum s of exp(x - m)) across the warp; every lane gets
// the warp's.
__device__ __forceinline__ void warp_lse(float& m, float& s) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float om = __shfl_xor_sync(0xffffffffu, m, o), os = __shfl_xor_sync(0xffffffffu, s, o);
    const float nm = fmaxf(m, om);
    s = (nm == -INFINITY) ? 0.0f : s * __expf(m - nm) + os * __expf(om - nm);
    m = nm;
  }
}

// Best (value, id) over the block; every thread gets it.
__device__ __forceinline__ void block_best(float& v, int& id, float* sv, int* sid) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  warp_best(v, id);
  if (lane == 0) sv[warp] = v, sid[warp] = id;
  __syncthreads();
  v = lane < kSampleThreads / 32 ? sv[lane] : -INFINITY;
  id = lane < kSampleThreads / 32 ? sid[lane] : INT_MAX;
  warp_best(v, id);
  __syncthreads();
}

// Pops the best head of the per-lane sorted lists across the warp, k times; lane 0 gets the results.
__device__ __forceinline__ void warp_topk(float (&vals)[kK], int (&ids)[kK], int k, float* out_v, int* out_id) {
  const int lane = threadIdx.x & 31;
  for (int r = 0; r < k; ++r) {
    float v = vals[0];
    int id = ids[0];
    warp_best(v, id);
    if (lane == 0) out_v[r] = v, out_id[r] = id;
    if (ids[0] == id && vals[0] == v) {  // this lane held the winner: pop it
#pragma unroll
      for (int j = 0; j < kK - 1; ++j) vals[j] = vals[j + 1], ids[j] = ids[j + 1];
      vals[kK - 1] = -INFINITY;
      ids[kK - 1] = INT_MAX;
    }
  }
}

struct SampleKernelArgs : SampleArgs {
  bool vec4 = false;  // rows allow float4 loads
};

// A prefix of the row's order (larger value first, lower id on ties): every token whose key is above `key`,
// and those at `key` with an id up to id_max.
struct Cut {
  uint32_t key = 0;
  int id_max = INT_MAX;
  __device__ __forceinline__ bool keeps(uint32_t k, int i) const { return k > key || (k == key && i <= id_max); }
};

struct SelectState {
  unsigned int cnt[256];
  unsigned long long mass[256];
  uint32_t prefix;
  unsigned long long rem, above;
  unsigned int eq_cnt;
  unsigned long long eq_mass;
};

// Calls f(i, v) for every element of the row this thread owns.
template <class F>
__device__ __forceinline__ void for_row(const float* x, int n, bool vec4, F f) {
  if (vec4) {
    const float4* x4 = reinterpret_cast<const float4*>(x);
    for (int j = threadIdx.x; j < n / 4; j += kSampleThreads) {
      const float4 v = x4[j];
      f(4 * j, v.x);
      f(4 * j + 1, v.y);
      f(4 * j + 2, v.z);
      f(4 * j + 3, v.w);
    }
  } else {
    for (int i = threadIdx.x; i < n; i += kSampleThreads) f(i, x[i]);
  }
}

// Block-wide radix select, 8 bits a round from the top: the key K such that the elements of the domain
// (key_of returns false outside it) above K weigh less than `target` and those at or above K at least
// `target`, weighing each element 1 (count) or weight(v) (kMass). Leaves K in st.prefix, the weight above it
// in st.above, and the count and mass at K in st.eq_cnt / st.eq_mass. Every thread must call it.
template <bool kMass, class KeyFn, class WFn>
__device__ void radix_select(const float* x, int n, bool vec4, unsigned long long target, KeyFn key_of, WFn weight,
                             SelectState& st) {
  __syncthreads();  // the previous select's results are read before they are reset
  if (threadIdx.x == 0) st.prefix = 0, st.rem = target, st.above = 0;
  uint32_t mask = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += kSampleThreads) st.cnt[b] = 0, st.mass[b] = 0;
    __syncthreads();
    const uint32_t prefix = st.prefix;
    for_row(x, n, vec4, [&](int i, float v) {
      uint32_t k;
      if (!key_of(i, v, k) || (k & mask) != prefix) return;
      const int b = (k >> shift) & 255;
      atomicAdd(&st.cnt[b], 1u);
      if (kMass) atomicAdd(&st.mass[b], weight(v));
    });
    __syncthreads();
    if (threadIdx.x == 0) {
      unsigned long long acc = 0;
      int chosen = -1, lowest = -1;
      for (int b = 255; b >= 0; --b) {
        const unsigned long long c = kMass ? st.mass[b] : st.cnt[b];
        if (st.cnt[b] == 0) continue;
        if (acc + c >= st.rem) {
          chosen = b;
          break;
        }
        lowest = b;
        acc += c;
      }
      if (chosen < 0) {  // the target exceeds the domain (rounding): take its last element
        chosen = lowest < 0 ? 0 : lowest;
        acc -= lowest < 0 ? 0 : (kMass ? st.mass[lowest] : st.cnt[lowest]);
      }
      st.prefix |= static_cast<uint32_t>(chosen) << shift;
      st.rem -= acc;
      st.above += acc;
      st.eq_cnt = st.cnt[chosen];
      st.eq_mass = st.mass[chosen];
    }
    mask |= 255u << shift;
    __syncthreads();
  }
}

// Block-wide sum of a per-thread uint64 (every thread gets it).
__device__ __forceinline__ unsigned long long block_sum(unsigned long long v, unsigned long long* s) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (lane == 0) s[warp] = v;
  __syncthreads();
  unsigned long long t = 0;
  for (int w = 0; w < kSampleThreads / 32; ++w) t += s[w];
  __syncthreads();
  return t;
}

__global__ void __launch_bounds__(kSampleThreads) sample_kernel(SampleKernelArgs a) {
  __shared__ float s_m[32], s_s[32], s_v[32];
  __shared__ int s_id[32];
  __shared__ float s_topv[kSampleThreads / 32][kK];
  __shared__ int s_topid[kSampleThreads / 32][kK];
  __shared__ SelectState st;
  __shared__ unsigned long long s_sum[32];
  const int64_t row = blockIdx.x;
  float* x = const_cast<float*>(a.logits) + row * a.ld;
  const int n = static_cast<int>(a.vocab);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  SamplingParams p;
  if (a.params) {
    p = a.params[row];
  } else {
    p.temperature = 0.0f;
  }
  const SampleRowInfo info = a.info ? a.info[row] : SampleRowInfo{};
  const bool draw = sampling::draws(p);
  const bool pen = a.penalties && info.penalty_count > 0 && p.has_penalties();
  const bool filter = draw && sampling::filters(p, n);
  const bool plain_draw = draw && !pen && !filter;  // drawn in the first pass
  const float inv_t = draw ? sampling::inverse_temperature(p.temperature) : 0.0f;
  const uint64_t seed = p.seed.value_or(0), step = info.step;
  const int k = a.top_k;

  float m = -INFINITY, s = 0.0f;  // running max and sum of exp(x - m)
  float best = -INFINITY;         // greedy
  int best_id = INT_MAX;
  float gbest = -INFINITY;  // Gumbel-perturbed
  int gbest_id = INT_MAX;
  float vals[kK];
  int ids[kK];
#pragma unroll
  for (int j = 0; j < kK; ++j) vals[j] = -INFINITY, ids[j] = INT_MAX;

  auto gumbel = [&](float v, uint32_t bits) { return sampling::perturbed_score(v, inv_t, bits); };
  // One element: running log-sum-exp, greedy best, Gumbel-perturbed best, top-K insertion. Each thread
  // sees its ids in increasing order, so strict comparisons keep the lowest id on ties.
  auto consume = [&](float v, int i, uint32_t bits) {
    if (v > m) {
      s = s * __expf(m - v) + 1.0f;
      m = v;
    } else if (v != -INFINITY) {
      s += __expf(v - m);
    }
    if (v > best) best = v, best_id = i;
    if (plain_draw) {
      const float gv = gumbel(v, bits);
      if (gv > gbest) gbest = gv, gbest_id = i;
    }
    if (k > 0 && v > vals[kK - 1]) {
      vals[kK - 1] = v, ids[kK - 1] = i;
#pragma unroll
      for (int j = kK - 1; j > 0; --j)
        if (vals[j] > vals[j - 1]) {
          const float tv = vals[j];
          vals[j] = vals[j - 1], vals[j - 1] = tv;
          const int ti = ids[j];
          ids[j] = ids[j - 1], ids[j - 1] = ti;
        }
    }
  };
  // Element i takes word i % 4 of the Philox block of counter (i / 4, step), keyed by the request's seed
  // (not its row, so a draw does not depend on the batch), in every path.
  auto random4 = [&](int j) { return sampling::random_block(seed, step, static_cast<uint32_t>(j)); };
  auto word = [](const Philox4& r, int w) { return r.word(w); };
  if (a.vec4) {
    const float4* x4 = reinterpret_cast<const float4*>(x);
    for (int j = threadIdx.x; j < n / 4; j += kSampleThreads) {
      const float4 f = x4[j];
      const Philox4 r = plain_draw ? random4(j) : Philox4{0, 0, 0, 0};
      consume(f.x, 4 * j, r.x);
      consume(f.y, 4 * j + 1, r.y);
      consume(f.z, 4 * j + 2, r.z);
      consume(f.w, 4 * j + 3, r.w);
    }
  } else {
    for (int i = threadIdx.x; i < n; i += kSampleThreads) {
      const Philox4 r = plain_draw ? random4(i / 4) : Philox4{0, 0, 0, 0};
      consume(x[i], i, word(r, i % 4));
    }
  }

  // log-sum-exp over the block.
  warp_lse(m, s);
  if (lane == 0) s_m[warp] = m, s_s[warp] = s;
  __syncthreads();
  if (warp == 0) {
    m = lane < kSampleThreads / 32 ? s_m[lane] : -INFINITY;
    s = lane < kSampleThreads / 32 ? s_s[lane] : 0.0f;
    warp_lse(m, s);
    if (lane == 0) s_m[0] = m + logf(s);
  }
  __syncthreads();
  const float lse = s_m[0];

  block_best(best, best_id, s_v, s_id);
  if (plain_draw) block_best(gbest, gbest_id, s_v, s_id);

  if (k > 0) {
    warp_topk(vals, ids, k, s_topv[warp], s_topid[warp]);
    __syncthreads();
    if (warp == 0) {
      // Lane j holds warp j's sorted list.
#pragma unroll
      for (int j = 0; j < kK; ++j) {
        const bool have = lane < kSampleThreads / 32 && j < k;
        vals[j] = have ? s_topv[lane][j] : -INFINITY;
        ids[j] = have ? s_topid[lane][j] : INT_MAX;
      }
      __syncwarp();
      warp_topk(vals, ids, k, s_topv[0], s_topid[0]);
      __syncwarp();
      if (lane < k) {
        a.top_ids[row * k + lane] = s_topid[0][lane];
        a.top_logprobs[row * k + lane] = s_topv[0][lane] - lse;
      }
    }
    __syncthreads();
  }

  // A draw whose every score is -inf falls back to the best token, as the CPU Sampler does.
  int chosen = plain_draw && gbest_id != INT_MAX ? gbest_id : best_id;
  const SamplePenalty* pens = pen ? a.penalties + info.penalty_begin : nullptr;
  float* saved = pen ? a.penalty_scratch + info.penalty_begin : nullptr;
  if (pen) {
    // The penalties in the CPU sampler's arithmetic, each distinct token once; the raw values wait in the scratch.
    for (int e = threadIdx.x; e < info.penalty_count; e += kSampleThreads) {
      const SamplePenalty t = pens[e];
      if (t.token < 0 || t.token >= n) continue;
      const float v = x[t.token];
      saved[e] = v;
      x[t.token] = sampling::penalized_logit(v, p, t);
    }
    __syncthreads();
    // The best penalized token (greedy's choice, and the top of the order for the filters).
    best = -INFINITY, best_id = INT_MAX;
    for_row(x, n, a.vec4, [&](int i, float v) {
      if (v > best) best = v, best_id = i;
    });
    block_best(best, best_id, s_v, s_id);
    chosen = best_id;
  }
  if (draw && !plain_draw) {
    const float mx = best;
    Cut c1, c2;  // the top-k set, then its top-p prefix
    auto all = [](int, float v, uint32_t& key) {
      key = order_key(v);
      return true;
    };
    auto weight = [&](float v) { return static_cast<unsigned long long>(sampling::probability_mass(v, mx, inv_t)); };
    // The id_max of a cut whose boundary key has `eq` tokens of which the first `need` (lowest ids) stay.
    auto tie_ids = [&](const Cut& within, uint32_t key, unsigned int eq, unsigned long long need) {
      if (need >= eq) return INT_MAX;
      radix_select<false>(
          x, n, a.vec4, need,
          [&](int i, float v, uint32_t& kk) {
            const uint32_t ok = order_key(v);
            if (ok != key || !within.keeps(ok, i)) return false;
            kk = ~static_cast<uint32_t>(i);
            return true;
          },
          weight, st);
      return static_cast<int>(~st.prefix);
    };
    if (p.top_k > 0 && p.top_k < n) {
      radix_select<false>(x, n, a.vec4, static_cast<unsigned long long>(p.top_k), all, weight, st);
      const uint32_t key = st.prefix;
      const unsigned int eq = st.eq_cnt;
      const unsigned long long need = st.rem;
      c1.key = key;
      c1.id_max = tie_ids(Cut{}, key, eq, need);
      c2 = c1;
    }
    if (p.top_p < 1.0f) {
      unsigned long long z = 0;
      for_row(x, n, a.vec4, [&](int i, float v) {
        if (c1.keeps(order_key(v), i)) z += weight(v);
      });
      z = block_sum(z, s_sum);
      const unsigned long long target = sampling::top_p_target(p.top_p, z);
      radix_select<true>(
          x, n, a.vec4, target,
          [&](int i, float v, uint32_t& kk) {
            kk = order_key(v);
            return c1.keeps(kk, i);
          },
          weight, st);
      const uint32_t key = st.prefix;
      const unsigned int eq = st.eq_cnt;
      const unsigned long long w = eq ? st.eq_mass / eq : 0;
      unsigned long long need = w ? (st.rem + w - 1) / w : eq;
      need = need < 1 ? 1 : need;
      c2.key = key;
      c2.id_max = tie_ids(c1, key, eq, need);
      if (key == c1.key && c2.id_max > c1.id_max) c2.id_max = c1.id_max;
    }
    // min-p keeps tokens whose probability is at least min_p times the best's; then the draw over the set.
    const float min_p = p.min_p;
    gbest = -INFINITY, gbest_id = INT_MAX;
    auto pick = [&](int i, float v, uint32_t bits) {
      if (!c2.keeps(order_key(v), i)) return;
      if (min_p > 0.0f && i != best_id && !sampling::passes_min_p(v, mx, inv_t, min_p)) return;
      const float gv = gumbel(v, bits);
      if (gv > gbest) gbest = gv, gbest_id = i;
    };
    if (a.vec4) {
      const float4* x4 = reinterpret_cast<const float4*>(x);
      for (int j = threadIdx.x; j < n / 4; j += kSampleThreads) {
        const float4 f = x4[j];
        const Philox4 r = random4(j);
        pick(4 * j, f.x, r.x);
        pick(4 * j + 1, f.y, r.y);
        pick(4 * j + 2, f.z, r.z);
        pick(4 * j + 3, f.w, r.w);
      }
    } else {
      for (int i = threadIdx.x; i < n; i += kSampleThreads) pick(i, x[i], word(random4(i / 4), i % 4));
    }
    block_best(gbest, gbest_id, s_v, s_id);
    chosen = gbest_id == INT_MAX ? best_id : gbest_id;
  } else if (draw && pen) {
    gbest = -INFINITY, gbest_id = INT_MAX;
    if (a.vec4) {
      const float4* x4 = reinterpret_cast<const float4*>(x);
      for (int j = threadIdx.x; j < n / 4; j += kSampleThreads) {
        const float4 f = x4[j];
        const Philox4 r = random4(j);
        const float g[4] = {gumbel(f.x, r.x), gumbel(f.y, r.y), gumbel(f.z, r.z), gumbel(f.w, r.w)};
        for (int w = 0; w < 4; ++w)
          if (g[w] > gbest) gbest = g[w], gbest_id = 4 * j + w;
      }
    } else {
      for (int i = threadIdx.x; i < n; i += kSampleThreads) {
        const float gv = gumbel(x[i], word(random4(i / 4), i % 4));
        if (gv > gbest) gbest = gv, gbest_id = i;
      }
    }
    block_best(gbest, gbest_id, s_v, s_id);
    chosen = gbest_id == INT_MAX ? best_id : gbest_id;
  }
  if (pen) {
    __syncthreads();
    for (int e = threadIdx.x; e < info.penalty_count; e += kSampleThreads) {
      const int32_t t = pens[e].token;
      if (t >= 0 && t < n) x[t] = saved[e];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    a.tokens[row] = chosen;
    if (a.token_logprobs) a.token_logprobs[row] = x[chosen] - lse;
  }
}

}  // namespace

void sample(const SampleArgs& args, cudaStream_t stream) {
  if (args.rows <= 0) return;
  SampleKernelArgs a;
  static_cast<SampleArgs&>(a) = args;
  KILN_CHECK(a.logits && a.tokens, "sample: logits and tokens are required");
  KILN_CHECK(a.vocab > 0 && a.vocab <= 0x7fffffff, "sample: vocabulary size {} out of range", a.vocab);
  if (a.ld == 0) a.ld = a.vocab;
  KILN_CHECK(a.top_k >= 0 && a.top_k <= kMaxTopLogprobs, "sample: top_k {} must be in [0, {}]", a.top_k,
             kMaxTopLogprobs);
  a.top_k = static_cast<int32_t>(std::min<int64_t>(a.top_k, a.vocab));
  KILN_CHECK(a.top_k == 0 || (a.top_ids && a.top_logprobs), "sample: top-K outputs missing");
  KILN_CHECK(!a.info || !a.penalties || a.penalty_scratch, "sample: penalties need their scratch");
  KILN_CHECK(a.rows <= 0x7fffffff, "sample: too many rows");
  a.vec4 = a.vocab % 4 == 0 && a.ld % 4 == 0 && aligned16(a.logits);
  sample_kernel<<<static_cast<unsigned>(a.rows), kSampleThreads, 0, stream>>>(a);
  KILN_CUDA_LAUNCH_CHECK();
}

}  // namespace kiln::cuda
