// Attention plans (split counts, grids, workspace) and dispatch to the per-head_dim kernel instances.
#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <tuple>

#include "core/env.h"
#include "kernels/cuda/attention_impl.h"
#include "kernels/cuda/cuda_common.cuh"

namespace kiln::cuda {
static_assert(kDecodeAttentionVariants == attn::kNumDecodeVariants, "variant counts disagree");
static_assert(kPrefillAttentionVariants == attn::kNumPrefillVariants, "variant counts disagree");
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

// CTAs of a decode configuration resident per multiprocessor, from the occupancy API (registers count: the
// head-major kernels fit 2 per SM on the H200 where shared memory alone would allow 4), cached per device;
// the shared-memory bound when no device answers.
int decode_ctas_per_sm(const attn::DecodeConfig& c, int head_dim, bool kv_fp8) {
  const int config = static_cast<int>(&c - attn::kDecodeConfigs);
  int dev = -1;
  if (cudaGetDevice(&dev) != cudaSuccess) cudaGetLastError(), dev = -1;
  static std::mutex mu;
  static std::map<std::tuple<int, int, int, bool>, int> cache;
  const auto key = std::make_tuple(dev, config, head_dim, kv_fp8);
  std::lock_guard lk(mu);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  int n = 0;
  if (dev >= 0) {
    try {
      switch (head_dim) {
        case 64: n = attn::decode_ctas_per_sm<__nv_bfloat16, 64>(config, kv_fp8); break;
        case 80: n = attn::decode_ctas_per_sm<__nv_bfloat16, 80>(config, kv_fp8); break;
        case 96: n = attn::decode_ctas_per_sm<__nv_bfloat16, 96>(config, kv_fp8); break;
        case 128: n = attn::decode_ctas_per_sm<__nv_bfloat16, 128>(config, kv_fp8); break;
        case 256: n = attn::decode_ctas_per_sm<__nv_bfloat16, 256>(config, kv_fp8); break;
        default: break;
      }
    } catch (const std::exception&) {
      cudaGetLastError();
      n = 0;
    }
  }
  if (n <= 0) {
    const size_t smem = attn::decode_smem_bytes(c, head_dim, kv_fp8) + 1024;
    n = static_cast<int>(std::max<size_t>(1, std::min<size_t>((227u << 10) / smem, 64 / c.warps)));
  }
  cache.emplace(key, n);
  return n;
}

// Whether the current device runs the sm_90a kernels (the wgmma prefill configurations): compute capability 9.0,
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

// The variant a plan's variant 0 runs for head_dim 128 over a 16-bit cache on an sm_90a device: the wgmma
// configuration kDefaultWgmmaPrefillConfig. KILN_PREFILL_WGMMA=0 keeps the mma.sync default instead, and
// KILN_PREFILL_WGMMA=<variant of a wgmma configuration> picks another one (for benchmarks).
int default_prefill_variant(const AttentionShape& shape) {
  static const int choice = static_cast<int>(env_integer(
      "KILN_PREFILL_WGMMA", attn::kDefaultWgmmaPrefillConfig + 1,
      [](long v) { return v == 0 || (v >= 1 && v < attn::kNumPrefillVariants && attn::kPrefillConfigs[v - 1].wg > 0); },
      "0 or a wgmma prefill variant"));
  if (shape.head_dim != 128 || shape.kv_fp8 || choice == 0 || !device_runs_sm90a()) return 0;
  return choice;
}

// The variant a decode plan's variant 0 starts from for head_dim 128: kDefaultDecodeConfig's, or with
// KILN_DECODE_VARIANT=<variant of a head-major configuration> another one (for benchmarks).
int default_decode_variant() {
  static const int choice = static_cast<int>(env_integer(
      "KILN_DECODE_VARIANT", attn::kDefaultDecodeConfig + 1,
      [](long v) { return v >= 1 && v < attn::kNumDecodeVariants && attn::kDecodeConfigs[v - 1].head_major; },
      "a head-major decode variant"));
  return choice;
}

}  // namespace

DecodePlan plan_decode_attention(const AttentionShape& shape, int32_t num_seqs, int32_t max_kv_len, int32_t num_sms,
                                 int32_t num_splits, int32_t variant) {
  check_shape(shape);
  KILN_CHECK(num_seqs >= 0 && max_kv_len >= 0, "decode attention: negative sizes");
  KILN_CHECK(variant >= 0 && variant < attn::kNumDecodeVariants, "decode attention: no variant {}", variant);
  if (shape.head_dim != 128) variant = 0;
  DecodePlan plan;
  plan.num_seqs = num_seqs;
  plan.max_kv_len = max_kv_len;
  plan.variant = variant;
  if (!attn::has_tensor_core_instance(shape.head_dim)) {
    // The generic kernel walks a row's whole context in one warp: no splits, no workspace.
    plan.split_tokens = std::max(max_kv_len, 1);
    return plan;
  }
  const int group = shape.num_heads / shape.num_kv_heads;
  plan.head_chunks = (group + 15) / 16;
  const int64_t len = std::max<int64_t>(1, shape.window > 0 ? std::min(max_kv_len, shape.window) : max_kv_len);
  // Head-major grids: CTAs per split (a warp per (KV head, chunk)), resident CTAs on the GPU, and the most splits
  // (each warp keeping at least 4 tiles).
  auto hm_base = [&](const attn::DecodeConfig& c) {
    const int64_t units = int64_t{shape.num_kv_heads} * plan.head_chunks;
    return std::max<int64_t>(1, int64_t{num_seqs} * ((units + c.warps - 1) / c.warps));
  };
  auto hm_slots = [&](const attn::DecodeConfig& c) {
    return int64_t{decode_ctas_per_sm(c, shape.head_dim, shape.kv_fp8)} * std::max(num_sms, 1);
  };
  auto hm_most = [&](const attn::DecodeConfig& c) {
    return std::max<int64_t>(1, std::min<int64_t>(1024, (len + 4 * c.tok - 1) / (4 * c.tok)));
  };
  if (variant == 0 && shape.head_dim == 128) {
    // The default is head-major, unless its grid would leave resident slots empty: even at its most splits (few
    // short sequences), or at a split count the caller fixed below half of them. Then config 0, whose CTAs split
    // each KV head four ways more (batch 1 x 2048: 13.7 us against 15.8; batch 64 at 1 split: 73% of copy
    // bandwidth against 51%).
    const int dv = default_decode_variant();
    const attn::DecodeConfig& c = attn::kDecodeConfigs[dv - 1];
    const int64_t ctas = hm_base(c) * (num_splits > 0 ? num_splits : hm_most(c));
    plan.variant = variant = (num_splits > 0 ? 2 * ctas < hm_slots(c) : ctas < hm_slots(c)) ? 1 : dv;
  }
  const attn::DecodeConfig& cfg = attn::kDecodeConfigs[attn::decode_config(variant, shape.head_dim)];
  if (num_splits <= 0 && cfg.head_major) {
    // The split count that wastes the least: a partial last wave of CTAs leaves resident slots idle (batch 320 x
    // 2112 on the H200, 2 CTAs per SM: 1 split is 2.4 waves at 73% of copy bandwidth, 2 splits 4.8 waves at 92%),
    // and each further split costs about 1.5% (shorter streams per warp, the merge; batch 384 x 2000: 94.7%,
    // 91.9%, 90.6% for 1, 2, 3 splits). Splits keep at least 4 tiles per warp.
    const int64_t base = hm_base(cfg), slots = hm_slots(cfg), most = hm_most(cfg);
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
  KILN_CHECK(plan.variant >= 0 && plan.variant < attn::kNumDecodeVariants, "decode attention: no variant {}",
             plan.variant);
  const int cfg = attn::decode_config(plan.variant, shape.head_dim);
  if (!attn::has_tensor_core_instance(shape.head_dim)) {
    p.num_splits = 1;
    KILN_DISPATCH_16(t, T, attn::launch_generic<T>(p, 1, stream));
    return;
  }
  KILN_DISPATCH_16(t, T, {
    switch (shape.head_dim) {
      case 64:
        attn::launch_decode<T, 64>(p, cfg, stream);
        break;
      case 80:
        attn::launch_decode<T, 80>(p, cfg, stream);
        break;
      case 96:
        attn::launch_decode<T, 96>(p, cfg, stream);
        break;
      case 128:
        attn::launch_decode<T, 128>(p, cfg, stream);
        break;
      case 256:
        attn::launch_decode<T, 256>(p, cfg, stream);
        break;
    }
  });
}

PrefillPlan plan_prefill_attention(const AttentionShape& shape, int32_t num_seqs, int32_t max_q_len, int32_t variant) {
  check_shape(shape);
  KILN_CHECK(num_seqs >= 0 && max_q_len >= 0, "prefill attention: negative sizes");
  KILN_CHECK(variant >= 0 && variant < attn::kNumPrefillVariants, "prefill attention: no variant {}", variant);
  KILN_CHECK(!shape.kv_fp8 || variant == 0, "prefill attention: an fp8 KV cache runs variant 0 only, not {}",
             variant);
  if (shape.head_dim == 128 && variant > 0 && attn::kPrefillConfigs[variant - 1].wg > 0)
    KILN_CHECK(device_runs_sm90a(), "prefill attention: variant {} (wgmma) needs a compute capability 9.0 GPU",
               variant);
  PrefillPlan plan;
  plan.num_seqs = num_seqs;
  plan.max_q_len = max_q_len;
  plan.variant = shape.head_dim != 128 ? 0 : variant == 0 ? default_prefill_variant(shape) : variant;
  const int64_t rows = int64_t{max_q_len} * (shape.num_heads / shape.num_kv_heads);
  // The generic kernel ignores row_tiles (one CTA per query); the tensor-core kernels take 16 rows per m-tile.
  const attn::PrefillConfig& cfg = attn::kPrefillConfigs[attn::prefill_config(plan.variant, shape.head_dim)];
  const int64_t per_cta = int64_t{16} * cfg.warps * cfg.mt;
  plan.row_tiles = static_cast<int32_t>((rows + per_cta - 1) / per_cta);
  return plan;
}

void prefill_attention(ElemType t, const PrefillPlan& plan, const AttentionShape& shape, const void* q, int64_t ldq,
                       const int32_t* cu_q_lens, const PagedKv& kv, void* out, int64_t ldo, cudaStream_t stream) {
  if (plan.num_seqs == 0 || plan.row_tiles == 0) return;
  check_shape(shape);
  check_kv(shape, kv);
  KILN_CHECK(cu_q_lens, "prefill attention: cu_q_lens missing");
  KILN_CHECK(plan.num_seqs <= 65535 && shape.num_kv_heads <= 65535, "prefill attention: grid too large");
  attn::Params p = base_params(shape, q, ldq, kv, out, ldo);
  p.num_seqs = plan.num_seqs;
  p.cu_q_lens = cu_q_lens;
  p.row_tiles = plan.row_tiles;
  KILN_CHECK(plan.variant >= 0 && plan.variant < attn::kNumPrefillVariants, "prefill attention: no variant {}",
             plan.variant);
  const int cfg = attn::prefill_config(plan.variant, shape.head_dim);
  if (!attn::has_tensor_core_instance(shape.head_dim)) {
    KILN_DISPATCH_16(t, T, attn::launch_generic<T>(p, plan.max_q_len, stream));
    return;
  }
  KILN_DISPATCH_16(t, T, {
    switch (shape.head_dim) {
      case 64:
        attn::launch_prefill<T, 64>(p, cfg, stream);
        break;
      case 80:
        attn::launch_prefill<T, 80>(p, cfg, stream);
        break;
      case 96:
        attn::launch_prefill<T, 96>(p, cfg, stream);
        break;
      case 128:
        attn::launch_prefill<T, 128>(p, cfg, stream);
        break;
      case 256:
        attn::launch_prefill<T, 256>(p, cfg, stream);
        break;
    }
  });
}

}  // namespace kiln::cuda
