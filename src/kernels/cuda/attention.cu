// Attention plans (split counts, grids, workspace) and dispatch to the per-head_dim kernel instances.
#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <type_traits>
#include <utility>

#include "kernels/cuda/attention_impl.h"
#include "kernels/cuda/cuda_common.cuh"

namespace kiln::cuda {
namespace {

void check_shape(const AttentionShape& s) {
  KILN_CHECK(s.head_dim > 0 && s.head_dim <= attn::kGenericMaxHeadDim,
             "attention: head_dim {} is not supported (1 to {}; 64, 80, 96, 128 and 256 on tensor cores)", s.head_dim,
             attn::kGenericMaxHeadDim);
  KILN_CHECK(s.num_heads > 0 && s.num_kv_heads > 0 && s.num_heads % s.num_kv_heads == 0,
             "attention: {} query heads are not a multiple of {} KV heads", s.num_heads, s.num_kv_heads);
  KILN_CHECK(s.window >= 0, "attention: window must be >= 0");
}

void check_kv(const AttentionShape& s, const PagedKv& kv) {
  KILN_CHECK(kv.k_cache && kv.v_cache && kv.block_tables && kv.kv_lens, "attention: KV cache pointers missing");
  KILN_CHECK(kv.block_size > 0 && kv.max_blocks_per_seq > 0, "attention: bad block size {} / blocks per sequence {}",
             kv.block_size, kv.max_blocks_per_seq);
  KILN_CHECK(!attn::has_tensor_core_instance(s.head_dim) || (aligned16(kv.k_cache) && aligned16(kv.v_cache)),
             "attention: KV caches must be 16-byte aligned");
}

attn::Params base_params(const AttentionShape& s, const void* q, int64_t ldq, const PagedKv& kv, void* out,
                         int64_t ldo) {
  attn::Params p;
  p.q = q;
  p.ldq = ldq ? ldq : static_cast<int64_t>(s.num_heads) * s.head_dim;
  p.out = out;
  p.ldo = ldo ? ldo : static_cast<int64_t>(s.num_heads) * s.head_dim;
  p.k_cache = kv.k_cache;
  p.v_cache = kv.v_cache;
  p.block_tables = kv.block_tables;
  p.max_blocks_per_seq = kv.max_blocks_per_seq;
  p.block_size = kv.block_size;
  p.block_shift = (kv.block_size & (kv.block_size - 1)) == 0 ? __builtin_ctz(static_cast<unsigned>(kv.block_size)) : -1;
  p.block_stride = kv.block_stride ? kv.block_stride : int64_t{s.num_kv_heads} * kv.block_size * s.head_dim;
  p.kv_fp8 = s.kv_fp8;
  const bool tc = attn::has_tensor_core_instance(s.head_dim);
  const int64_t align = s.kv_fp8 ? 16 : 8;  // elements of a 16-byte copy
  KILN_CHECK((!tc || p.block_stride % align == 0) &&
                 p.block_stride >= int64_t{s.num_kv_heads} * kv.block_size * s.head_dim,
             "attention: block stride {} must be a multiple of {} and hold a block", p.block_stride, align);
  p.kv_lens = kv.kv_lens;
  p.num_heads = s.num_heads;
  p.num_kv_heads = s.num_kv_heads;
  p.group = s.num_heads / s.num_kv_heads;
  p.head_dim = s.head_dim;
  p.scale = s.scale;
  p.scale_log2 = s.scale * 1.4426950408889634f;
  p.softcap = s.softcap;
  p.alibi_slopes = s.alibi_slopes;
  p.window = s.window;
  if (tc) {
    KILN_CHECK(p.ldq % 8 == 0 && aligned16(q), "attention: q must be 16-byte aligned with a row stride multiple of 8");
    KILN_CHECK(p.ldo % 2 == 0 && (reinterpret_cast<uintptr_t>(out) & 3) == 0, "attention: out must be 4-byte aligned");
  }
  return p;
}

// CTAs of the head-major decode kernel resident per multiprocessor, from the occupancy API (registers count: it
// fits 2 per SM on the H200 where shared memory alone would allow 4), cached per device; the shared-memory bound
// when no device answers.
int head_major_ctas_per_sm(bool kv_fp8) {
  int dev = -1;
  if (cudaGetDevice(&dev) != cudaSuccess) cudaGetLastError(), dev = -1;
  static std::mutex mu;
  static std::map<std::pair<int, bool>, int> cache;
  const auto key = std::make_pair(dev, kv_fp8);
  std::lock_guard lk(mu);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  int n = 0;
  if (dev >= 0) {
    try {
      n = attn::head_major_decode_ctas_per_sm(kv_fp8);
    } catch (const std::exception&) {
      cudaGetLastError();
      n = 0;
    }
  }
  if (n <= 0) {
    const attn::DecodeConfig& c = attn::kHeadMajorDecode;
    const size_t smem = attn::decode_smem_bytes(c, 128, kv_fp8) + 1024;
    n = static_cast<int>(std::max<size_t>(1, std::min<size_t>((227u << 10) / smem, 64 / c.warps)));
  }
  cache.emplace(key, n);
  return n;
}

// Whether the current device runs the sm_90a kernel (the wgmma prefill): compute capability 9.0,
// cached per device; false when no device answers.
bool device_runs_sm90a() {
  int dev = -1;
  if (cudaGetDevice(&dev) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  static std::mutex mu;
  static std::map<int, bool> cache;
  std::lock_guard lk(mu);
  auto it = cache.find(dev);
  if (it != cache.end()) return it->second;
  int major = 0, minor = 0;
  const bool ok = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess &&
                  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) == cudaSuccess;
  if (!ok) cudaGetLastError();
  return cache.emplace(dev, ok && major == 9 && minor == 0).first->second;
}

// Runs f(std::integral_constant<int, D>) for a head dim with a tensor-core instance.
template <typename F>
void with_head_dim(int head_dim, F&& f) {
  switch (head_dim) {
    case 64:
      return f(std::integral_constant<int, 64>{});
    case 80:
      return f(std::integral_constant<int, 80>{});
    case 96:
      return f(std::integral_constant<int, 96>{});
    case 128:
      return f(std::integral_constant<int, 128>{});
    case 256:
      return f(std::integral_constant<int, 256>{});
  }
  KILN_THROW("attention: no tensor-core instance for head_dim {}", head_dim);
}

}  // namespace

DecodePlan plan_decode_attention(const AttentionShape& shape, int32_t num_seqs, int32_t max_kv_len, int32_t num_sms,
                                 int32_t num_splits) {
  check_shape(shape);
  KILN_CHECK(num_seqs >= 0 && max_kv_len >= 0, "decode attention: negative sizes");
  DecodePlan plan;
  plan.num_seqs = num_seqs;
  plan.max_kv_len = max_kv_len;
  if (!attn::has_tensor_core_instance(shape.head_dim)) {
    // The generic kernel walks a row's whole context in one warp: no splits, no workspace.
    plan.split_tokens = std::max(max_kv_len, 1);
    return plan;
  }
  const int group = shape.num_heads / shape.num_kv_heads;
  plan.head_chunks = (group + 15) / 16;
  const int64_t len = std::max<int64_t>(1, shape.window > 0 ? std::min(max_kv_len, shape.window) : max_kv_len);
  // The head-major grid: CTAs per split (a warp per (KV head, chunk)), resident CTAs on the GPU, and the most splits
  // (each warp keeping at least 4 tiles).
  const attn::DecodeConfig& hm = attn::kHeadMajorDecode;
  auto hm_base = [&] {
    const int64_t units = int64_t{shape.num_kv_heads} * plan.head_chunks;
    return std::max<int64_t>(1, int64_t{num_seqs} * ((units + hm.warps - 1) / hm.warps));
  };
  auto hm_slots = [&] { return int64_t{head_major_ctas_per_sm(shape.kv_fp8)} * std::max(num_sms, 1); };
  auto hm_most = [&] { return std::max<int64_t>(1, std::min<int64_t>(1024, (len + 4 * hm.tok - 1) / (4 * hm.tok))); };
  if (shape.head_dim == 128) {
    // Head-major, unless its grid would leave resident slots empty: even at its most splits (few short sequences),
    // or at a split count the caller fixed below half of them. Then the split kernel, whose CTAs split each KV head
    // four ways more (batch 1 x 2048: 13.7 us against 15.8; batch 64 at 1 split: 73% of copy bandwidth against 51%).
    const int64_t ctas = hm_base() * (num_splits > 0 ? num_splits : hm_most());
    plan.head_major = !(num_splits > 0 ? 2 * ctas < hm_slots() : ctas < hm_slots());
  }
  const attn::DecodeConfig& cfg = plan.head_major ? attn::kHeadMajorDecode : attn::kSplitDecode;
  if (num_splits <= 0 && plan.head_major) {
    // The split count that wastes the least: a partial last wave of CTAs leaves resident slots idle (batch 320 x
    // 2112 on the H200, 2 CTAs per SM: 1 split is 2.4 waves at 73% of copy bandwidth, 2 splits 4.8 waves at 92%),
    // and each further split costs about 1.5% (shorter streams per warp, the merge; batch 384 x 2000: 94.7%,
    // 91.9%, 90.6% for 1, 2, 3 splits). Splits keep at least 4 tiles per warp.
    const int64_t base = hm_base(), slots = hm_slots(), most = hm_most();
    double best = 0.0;
    for (int64_t n = 1; n <= most; ++n) {
      const double penalty = 1.0 + 0.015 * static_cast<double>(n - 1);
      if (n > 1 && penalty >= best) break;
      const double waves = static_cast<double>(base * n) / static_cast<double>(slots);
      const double cost = std::ceil(waves) / waves * penalty;
      if (n == 1 || cost < best) best = cost, num_splits = static_cast<int32_t>(n);
    }
  } else if (num_splits <= 0) {
    // Enough CTAs for two per multiprocessor, but every split keeps at least one tile per warp.
    const int per_cta = cfg.tok * cfg.warps;
    const int64_t base = std::max<int64_t>(1, int64_t{num_seqs} * shape.num_kv_heads * plan.head_chunks);
    const int64_t want = (2 * int64_t{std::max(num_sms, 1)} + base - 1) / base;
    const int64_t most = (len + per_cta - 1) / per_cta;
    num_splits = static_cast<int32_t>(std::clamp<int64_t>(want, 1, std::max<int64_t>(1, most)));
  }
  num_splits = std::min<int32_t>(num_splits, 65535);
  plan.num_splits = num_splits;
  plan.split_tokens = static_cast<int32_t>((len + num_splits - 1) / num_splits);
  if (num_splits > 1)
    plan.workspace_bytes =
        static_cast<size_t>(num_seqs) * shape.num_heads * num_splits * (shape.head_dim + 1) * sizeof(float);
  return plan;
}

void decode_attention(ElemType t, const DecodePlan& plan, const AttentionShape& shape, const void* q, int64_t ldq,
                      const PagedKv& kv, void* out, int64_t ldo, void* workspace, cudaStream_t stream) {
  if (plan.num_seqs == 0) return;
  check_shape(shape);
  check_kv(shape, kv);
  attn::Params p = base_params(shape, q, ldq, kv, out, ldo);
  p.num_seqs = plan.num_seqs;
  p.num_splits = plan.num_splits;
  p.head_chunks = plan.head_chunks;
  KILN_CHECK(plan.num_splits == 1 || workspace, "decode attention: the plan needs {} bytes of workspace",
             plan.workspace_bytes);
  KILN_CHECK(plan.num_seqs <= 65535 && int64_t{shape.num_kv_heads} * plan.head_chunks <= 65535,
             "decode attention: grid too large");
  if (plan.num_splits > 1) {
    p.part_o = static_cast<float*>(workspace);
    p.part_lse = p.part_o + static_cast<size_t>(plan.num_seqs) * shape.num_heads * plan.num_splits * shape.head_dim;
  }
  if (!attn::has_tensor_core_instance(shape.head_dim)) {
    p.num_splits = 1;
    KILN_DISPATCH_16(t, T, attn::launch_generic<T>(p, 1, stream));
    return;
  }
  KILN_CHECK(!plan.head_major || shape.head_dim == 128, "decode attention: the head-major kernel takes head_dim 128");
  KILN_DISPATCH_16(t, T, with_head_dim(shape.head_dim, [&](auto d) {
                     attn::launch_decode<T, decltype(d)::value>(p, plan.head_major, stream);
                   }));
}

PrefillPlan plan_prefill_attention(const AttentionShape& shape, int32_t num_seqs, int32_t max_q_len) {
  check_shape(shape);
  KILN_CHECK(num_seqs >= 0 && max_q_len >= 0, "prefill attention: negative sizes");
  PrefillPlan plan;
  plan.num_seqs = num_seqs;
  plan.max_q_len = max_q_len;
  plan.wgmma = shape.head_dim == 128 && !shape.kv_fp8 && device_runs_sm90a();
  return plan;
}

void prefill_attention(ElemType t, const PrefillPlan& plan, const AttentionShape& shape, const void* q, int64_t ldq,
                       const int32_t* cu_q_lens, const PagedKv& kv, void* out, int64_t ldo, cudaStream_t stream) {
  if (plan.num_seqs == 0 || plan.max_q_len == 0) return;
  check_shape(shape);
  check_kv(shape, kv);
  KILN_CHECK(cu_q_lens, "prefill attention: cu_q_lens missing");
  KILN_CHECK(plan.num_seqs <= 65535 && shape.num_kv_heads <= 65535, "prefill attention: grid too large");
  attn::Params p = base_params(shape, q, ldq, kv, out, ldo);
  p.num_seqs = plan.num_seqs;
  p.cu_q_lens = cu_q_lens;
  if (!attn::has_tensor_core_instance(shape.head_dim)) {
    KILN_DISPATCH_16(t, T, attn::launch_generic<T>(p, plan.max_q_len, stream));
    return;
  }
  KILN_CHECK(!plan.wgmma || (shape.head_dim == 128 && !shape.kv_fp8),
             "prefill attention: the wgmma kernel takes head_dim 128 over a 16-bit cache");
  // CTAs per (sequence, KV head): the rows of (token, head of the group) pairs over the kernel's rows per CTA.
  const int64_t rows = int64_t{plan.max_q_len} * (shape.num_heads / shape.num_kv_heads);
  const int64_t per_cta = attn::prefill_rows_per_cta(shape.head_dim, plan.wgmma);
  p.row_tiles = static_cast<int32_t>((rows + per_cta - 1) / per_cta);
  KILN_DISPATCH_16(t, T, with_head_dim(shape.head_dim, [&](auto d) {
                     attn::launch_prefill<T, decltype(d)::value>(p, plan.wgmma, stream);
                   }));
}

}  // namespace kiln::cuda
