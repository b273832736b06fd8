// Attention for head dims without a tensor-core instance (the tiny test models use 8, 12 and 16): one warp
// per (query row, head) walks the visible keys 32 at a time (a key per lane for the scores, a dim per lane
// for the output) with an online softmax in fp32. Same semantics as the mma.sync kernels: paged KV through
// block tables, causal, sliding window, soft-capping, ALiBi; decode and (chunked) prefill.
#include "kernels/cuda/attention_kernels.cuh"

namespace kiln::cuda::attn {
namespace {

constexpr int kGenWarps = 4;
constexpr int kGenDims = kGenericMaxHeadDim / 32;  // output dims per lane

// A stored K/V value: T, or uint8_t for fp8 e4m3.
template <typename KV>
__device__ __forceinline__ float kv_to_f(KV v) {
  if constexpr (std::is_same_v<KV, uint8_t>) {
    return fp8_to_f(v);
  } else {
    return to_f(v);
  }
}

template <typename T, typename KV>
__global__ void __launch_bounds__(kGenWarps * 32) generic_attention_kernel(Params p) {
  __shared__ float q_s[kGenWarps][kGenericMaxHeadDim];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int D = p.head_dim;
  const int i = blockIdx.x;  // query index within its sequence
  const int hq = blockIdx.y * kGenWarps + warp;
  const int seq = blockIdx.z;
  int q_row = seq, q_len = 1;
  if (p.cu_q_lens) {
    q_row = p.cu_q_lens[seq];
    q_len = p.cu_q_lens[seq + 1] - q_row;
    q_row += i;
  }
  // Warp-uniform exits only (nothing below synchronizes the block).
  if (i >= q_len || hq >= p.num_heads) return;
  const int kvh = hq / p.group;
  const int pos = p.kv_lens[seq] - q_len + i;
  const int lo = p.window > 0 ? max(0, pos - p.window + 1) : 0;
  const int32_t* table = p.block_tables + static_cast<int64_t>(seq) * p.max_blocks_per_seq;
  const T* q = static_cast<const T*>(p.q) + static_cast<int64_t>(q_row) * p.ldq + static_cast<int64_t>(hq) * D;
  const KV* kc = static_cast<const KV*>(p.k_cache);
  const KV* vc = static_cast<const KV*>(p.v_cache);
  float* qs = q_s[warp];
  for (int d = lane; d < D; d += 32) qs[d] = to_f(q[d]);
  __syncwarp();
  const float slope = p.alibi_slopes ? p.alibi_slopes[hq] : 0.0f;

  float o[kGenDims];
#pragma unroll
  for (int r = 0; r < kGenDims; ++r) o[r] = 0.0f;
  float m = -INFINITY, l = 0.0f;
  for (int t0 = lo; t0 <= pos; t0 += 32) {
    const int t = t0 + lane;
    float s = -INFINITY;
    if (t <= pos) {
      const KV* k = kc + kv_offset(table, t, kvh, p.block_stride, p.block_size, D);
      float acc = 0.0f;
      for (int d = 0; d < D; ++d) acc += qs[d] * kv_to_f(k[d]);
      s = logit2(acc, p, slope, t, pos);
    }
    const float mx = fmaxf(m, warp_max(s));  // finite: lane 0's key is visible
    const float alpha = exp2f(m - mx);
    const float pj = exp2f(s - mx);
    l = l * alpha + warp_sum(pj);
    m = mx;
#pragma unroll
    for (int r = 0; r < kGenDims; ++r) o[r] *= alpha;
    const int n = min(32, pos - t0 + 1);
    for (int j = 0; j < n; ++j) {
      const float pb = __shfl_sync(0xffffffffu, pj, j);
      const KV* v = vc + kv_offset(table, t0 + j, kvh, p.block_stride, p.block_size, D);
#pragma unroll
      for (int r = 0; r < kGenDims; ++r) {
        const int d = lane + 32 * r;
        if (d < D) o[r] += pb * kv_to_f(v[d]);
      }
    }
  }
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
  T* out = static_cast<T*>(p.out) + static_cast<int64_t>(q_row) * p.ldo + static_cast<int64_t>(hq) * D;
#pragma unroll
  for (int r = 0; r < kGenDims; ++r) {
    const int d = lane + 32 * r;
    if (d < D) out[d] = from_f<T>(o[r] * inv);
  }
}

}  // namespace

bool has_tensor_core_instance(int head_dim) {
  return head_dim == 64 || head_dim == 80 || head_dim == 96 || head_dim == 128 || head_dim == 256;
}

template <typename T>
void launch_generic(const Params& p, int32_t max_q_len, cudaStream_t stream) {
  KILN_CHECK(p.head_dim > 0 && p.head_dim <= kGenericMaxHeadDim, "attention: head_dim {} is over {}", p.head_dim,
             kGenericMaxHeadDim);
  if (max_q_len <= 0 || p.num_seqs <= 0) return;
  const dim3 grid(static_cast<unsigned>(max_q_len), static_cast<unsigned>((p.num_heads + kGenWarps - 1) / kGenWarps),
                  static_cast<unsigned>(p.num_seqs));
  if (p.kv_fp8) {
    generic_attention_kernel<T, uint8_t><<<grid, kGenWarps * 32, 0, stream>>>(p);
  } else {
    generic_attention_kernel<T, T><<<grid, kGenWarps * 32, 0, stream>>>(p);
  }
  KILN_CUDA_LAUNCH_CHECK();
}

template void launch_generic<__nv_bfloat16>(const Params&, int32_t, cudaStream_t);
template void launch_generic<__half>(const Params&, int32_t, cudaStream_t);

}  // namespace kiln::cuda::attn
