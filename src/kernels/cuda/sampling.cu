// Sampling on the GPU, one CTA per row in one pass over the logits: log-sum-exp, greedy argmax, a
// temperature draw by the Gumbel-max trick (Philox4x32-10 counter-based numbers), and the top-K log-probs.
#include <algorithm>
#include <climits>

#include "kernels/cuda/cuda_common.cuh"

namespace kiln::cuda {
namespace {

constexpr int kSampleThreads = 512;
constexpr int kK = kMaxTopLogprobs;

// Philox4x32 with 10 rounds (Salmon et al., SC'11): four 32-bit words per counter.
__device__ __forceinline__ uint4 philox(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
#pragma unroll
  for (int r = 0; r < 10; ++r) {
    const uint32_t hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
    const uint32_t hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return make_uint4(c0, c1, c2, c3);
}

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

__global__ void __launch_bounds__(kSampleThreads) sample_kernel(SampleKernelArgs a) {
  __shared__ float s_m[32], s_s[32], s_v[32];
  __shared__ int s_id[32];
  __shared__ float s_topv[kSampleThreads / 32][kK];
  __shared__ int s_topid[kSampleThreads / 32][kK];
  const int64_t row = blockIdx.x;
  const float* x = a.logits + row * a.ld;
  const int n = static_cast<int>(a.vocab);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const float temp = a.temperature ? a.temperature[row] : 0.0f;
  const bool draw = temp > 0.0f;
  const float inv_t = draw ? 1.0f / temp : 0.0f;
  const uint64_t seed = draw ? a.seeds[row] : 0, step = draw && a.steps ? a.steps[row] : 0;
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
    if (draw) {
      const float u = (static_cast<float>(bits >> 8) + 0.5f) * (1.0f / 16777216.0f);  // (0, 1)
      const float gv = v * inv_t - __logf(-__logf(u));
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
  // (not its row, so a draw does not depend on the batch), in both paths.
  auto random4 = [&](int j) {
    return draw ? philox(static_cast<uint32_t>(j), static_cast<uint32_t>(step), static_cast<uint32_t>(step >> 32), 0u,
                         static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32))
                : make_uint4(0, 0, 0, 0);
  };
  if (a.vec4) {
    const float4* x4 = reinterpret_cast<const float4*>(x);
    for (int j = threadIdx.x; j < n / 4; j += kSampleThreads) {
      const float4 f = x4[j];
      const uint4 r = random4(j);
      consume(f.x, 4 * j, r.x);
      consume(f.y, 4 * j + 1, r.y);
      consume(f.z, 4 * j + 2, r.z);
      consume(f.w, 4 * j + 3, r.w);
    }
  } else {
    for (int i = threadIdx.x; i < n; i += kSampleThreads) {
      const uint4 r = random4(i / 4);
      const int w = i % 4;
      consume(x[i], i, w == 0 ? r.x : w == 1 ? r.y : w == 2 ? r.z : r.w);
    }
  }

  // log-sum-exp over the block.
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float om = __shfl_xor_sync(0xffffffffu, m, o), os = __shfl_xor_sync(0xffffffffu, s, o);
    const float nm = fmaxf(m, om);
    s = (nm == -INFINITY) ? 0.0f : s * __expf(m - nm) + os * __expf(om - nm);
    m = nm;
  }
  if (lane == 0) s_m[warp] = m, s_s[warp] = s;
  __syncthreads();
  if (warp == 0) {
    m = lane < kSampleThreads / 32 ? s_m[lane] : -INFINITY;
    s = lane < kSampleThreads / 32 ? s_s[lane] : 0.0f;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float om = __shfl_xor_sync(0xffffffffu, m, o), os = __shfl_xor_sync(0xffffffffu, s, o);
      const float nm = fmaxf(m, om);
      s = (nm == -INFINITY) ? 0.0f : s * __expf(m - nm) + os * __expf(om - nm);
      m = nm;
    }
    if (lane == 0) s_m[0] = m + logf(s);
  }
  __syncthreads();
  const float lse = s_m[0];

  block_best(best, best_id, s_v, s_id);
  if (draw) block_best(gbest, gbest_id, s_v, s_id);
  const int chosen = draw ? gbest_id : best_id;
  if (threadIdx.x == 0) {
    a.tokens[row] = chosen;
    if (a.token_logprobs) a.token_logprobs[row] = x[chosen] - lse;
  }

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
  KILN_CHECK(!a.temperature || a.seeds, "sample: temperature sampling needs seeds");
  KILN_CHECK(a.rows <= 0x7fffffff, "sample: too many rows");
  a.vec4 = a.vocab % 4 == 0 && a.ld % 4 == 0 && aligned16(a.logits);
  sample_kernel<<<static_cast<unsigned>(a.rows), kSampleThreads, 0, stream>>>(a);
  KILN_CUDA_LAUNCH_CHECK();
}

}  // namespace kiln::cuda
