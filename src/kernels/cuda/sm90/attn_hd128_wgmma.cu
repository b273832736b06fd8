// Prefill attention on Hopper's warpgroup MMA (wgmma, sm_90a only: this file is built for that target alone and
// launched only on compute capability 9.0), head_dim 128 over a 16-bit paged KV cache.
//
// Same semantics, rows and launch order as prefill_kernel's `fast` configurations (attention_kernels.cuh): rows
// are (token, head of the group) pairs, each of the CTA's NWG warpgroups owns 64 of them, and the CTA walks the
// keys its rows can see in tiles of TOK through a STAGES-deep cp.async pipeline with one barrier per tile. What
// changes is the product: each K/V tile (and Q) sits in shared memory in wgmma's 128-byte swizzled layout, S = Q Kᵀ
// is a warpgroup-wide 64 x TOK product per 16 dims with K read by the tensor cores straight from shared memory (Q
// too, or from registers with QREG), and O += P V takes P from registers (the score accumulators, converted as for
// mma.sync) and V straight from its [key][dim] tile as an MN-major operand: no ldmatrix or register copy of K or V.
// With PIPE a warpgroup issues tile j's Q Kᵀ and tile j - 1's P V back to back, so P V runs during tile j's
// softmax. The softmax, masking and output are the mma.sync kernel's helpers: wgmma's accumulators have the m16n8k16
// C layout per warp. Measured against the mma.sync configurations in docs/kernels.md.
#include "kernels/cuda/attention_kernels.cuh"
#include "kernels/cuda/sm90/wgmma.cuh"

namespace kiln::cuda::attn {
namespace {

// Makes this thread's generic-proxy writes to shared memory (cp.async, landed) visible to wgmma's reads.
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

template <int NWG, int TOK, int STAGES>
struct WgCfg {
  static constexpr int kRows = 64 * NWG;
  static constexpr uint32_t kQBytes = kRows * 256;  // NWG blocks of 64 rows x 256 bytes
  static constexpr uint32_t kTileBytes = TOK * 256;
  static constexpr size_t kSmem = kQBytes + STAGES * 2 * kTileBytes + 1024;  // + slack to align the base to 1024
};

template <typename T, int NWG, int TOK, int STAGES, int MINB, bool PIPE, bool QREG>
__global__ void __launch_bounds__(NWG * 128, MINB) prefill_wg_kernel(Params p) {
  constexpr int D = 128;
  using Cfg = WgCfg<NWG, TOK, STAGES>;
  using MmaS = sm90::Wgmma<T, TOK>;
  using MmaO = sm90::Wgmma<T, D>;
  constexpr int kThreads = NWG * 128;
  // Tiles loaded ahead: PIPE keeps tile j - 1's V in use while tile j is computed, so one stage fewer is ahead.
  constexpr int kAhead = PIPE ? STAGES - 2 : STAGES - 1;
  static_assert(kAhead >= 1, "too few stages");
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* const sm = smem_raw + ((1024u - (smem_addr(smem_raw) & 1023u)) & 1023u);
  const uint32_t q_s = smem_addr(sm);
  auto k_tile = [&](int st) { return reinterpret_cast<T*>(sm + Cfg::kQBytes + st * 2 * Cfg::kTileBytes); };
  auto v_tile = [&](int st) { return reinterpret_cast<T*>(sm + Cfg::kQBytes + (st * 2 + 1) * Cfg::kTileBytes); };

  // Heaviest row tiles of every (sequence, KV head) first, as prefill_kernel's fast configurations.
  PrefillTile pt;
  if (!prefill_tile(p, Cfg::kRows, true, pt)) return;
  const int kvh = pt.kvh, q_start = pt.q_start, row0 = pt.row0, last_row = pt.last_row, pos0 = pt.pos0;
  const int lo = pt.lo, hi = pt.hi;
  const int32_t* table = pt.table;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, wg = warp >> 2;

  // Query rows (zeros past the sequence): CTA row r in warpgroup r / 64's block, swizzled.
  {
    const T* q = static_cast<const T*>(p.q);
    for (int c = threadIdx.x; c < Cfg::kRows * 16; c += kThreads) {
      const int r = c >> 4, chunk = c & 15;
      const int row = row0 + r;
      const bool valid = row <= last_row;
      const int i = valid ? row / p.group : 0, hq = kvh * p.group + (valid ? row % p.group : 0);
      const T* src = q + static_cast<int64_t>(q_start + i) * p.ldq + static_cast<int64_t>(hq) * D + chunk * 8;
      cp_async16(q_s + static_cast<uint32_t>((r >> 6) * 16384) + sw128_offset(r & 63, chunk, 64), src,
                 valid ? 16 : 0);
    }
    cp_async_commit();
  }
  const int ntiles = hi > lo ? (hi - lo + TOK - 1) / TOK : 0;
#pragma unroll
  for (int st = 0; st < kAhead; ++st) {
    if (st < ntiles)
      load_kv_rows<T, D, TOK, kThreads, true>(p, table, kvh, lo + st * TOK, hi, smem_addr(k_tile(st)),
                                              smem_addr(v_tile(st)), threadIdx.x);
    cp_async_commit();
  }

  // This warpgroup's rows decide which tiles it computes (wgmma is warpgroup-wide); each warp's 16 rows decide
  // its masking.
  const int wg_first = row0 + wg * 64, wg_last = min(wg_first + 63, last_row);
  const int wg_pos_min = wg_first <= last_row ? pos0 + wg_first / p.group : -1;
  const int wg_pos_max = wg_first <= last_row ? pos0 + wg_last / p.group : -1;
  const int w_first = row0 + warp * 16, w_last = min(w_first + 15, last_row);
  const int wpos_min = w_first <= last_row ? pos0 + w_first / p.group : -1;
  const int wpos_max = w_first <= last_row ? pos0 + w_last / p.group : -1;
  const uint32_t q_wg = q_s + static_cast<uint32_t>(wg * 16384);
  // QREG: this warp's Q rows as A fragments in registers for the whole loop (S then reads only K from shared
  // memory), loaded once Q has landed.
  uint32_t qf[QREG ? D / 16 : 1][4];
  if constexpr (QREG) {
    cp_async_wait<kAhead>();
    __syncthreads();
    const int r = (warp & 3) * 16 + (lane & 15);
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) ldmatrix_x4(qf[ks], q_wg + sw128_offset(r, 2 * ks + (lane >> 4), 64));
  }

  float o[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  // P of the last computed tile as the A fragments of its P V. With PIPE its product is issued with the next
  // tile's scores; before the first tile P is zero (O += 0 V, over the first tile's V: the mma.sync kernels also
  // multiply zero probabilities by the V rows of masked keys).
  uint32_t a[TOK / 16][4];
#pragma unroll
  for (int kk = 0; kk < TOK / 16; ++kk) a[kk][0] = a[kk][1] = a[kk][2] = a[kk][3] = 0u;
  // O += P V: P from registers, 16 keys per product; V [key][dim] is the MN-major B operand (its two 64-dim halves
  // TOK * 128 bytes apart, 8-key groups 1024 bytes apart).
  auto issue_pv = [&](int st) {
    const uint32_t v_addr = smem_addr(v_tile(st));
#pragma unroll
    for (int kk = 0; kk < TOK / 16; ++kk) MmaO::rs_mn(o, a[kk], sm90::sw128_desc(v_addr + kk * 2048, TOK * 128));
  };

  int prev_st = 0;
  for (int it = 0; it < ntiles; ++it) {
    // Tile it (and Q) landed for this thread; the barrier makes it everyone's and frees the stage last read by a
    // finished product (tile it - 1, or it - 2 with PIPE), which load_ahead refills.
    cp_async_wait<kAhead - 1>();
    fence_proxy_async();
    __syncthreads();
    // The copies of tile it + kAhead, issued once this warpgroup's products are under way: their block-table reads
    // then wait behind the tensor cores instead of in front of them.
    auto load_ahead = [&] {
      const int nxt = it + kAhead;
      if (nxt < ntiles)
        load_kv_rows<T, D, TOK, kThreads, true>(p, table, kvh, lo + nxt * TOK, hi, smem_addr(k_tile(nxt % STAGES)),
                                                smem_addr(v_tile(nxt % STAGES)), threadIdx.x);
      cp_async_commit();
    };
    const int st = it % STAGES;
    const int t0 = lo + it * TOK;
    // Without PIPE a warpgroup skips the tiles none of its rows can see. With PIPE every warpgroup computes every
    // tile of the CTA's range (at most one more each, all masked), so that no product sits on a divergent path.
    if constexpr (!PIPE) {
      const bool visible = wg_pos_max >= t0 && (p.window <= 0 || t0 + TOK - 1 > wg_pos_min - p.window);
      if (!visible) {
        load_ahead();
        continue;
      }
    }

    // S = Q Kᵀ: 16 dims per product, both operands K-major (Q and K rows hold their dims contiguously); with PIPE
    // the previous tile's P V follows as a group of its own and runs during this tile's softmax.
    float s[TOK / 8][4];
    const uint32_t k_addr = smem_addr(k_tile(st));
    sm90::wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
      const uint64_t kd = sm90::sw128_desc(k_addr + (ks >> 2) * (TOK * 128) + (ks & 3) * 32, 0);
      if constexpr (QREG) {
        MmaS::rs_k(s, qf[ks], kd, ks > 0);
      } else {
        MmaS::ss(s, sm90::sw128_desc(q_wg + (ks >> 2) * 8192 + (ks & 3) * 32, 0), kd, ks > 0);
      }
    }
    sm90::wgmma_commit();
    if constexpr (PIPE) {
      issue_pv(it == 0 ? st : prev_st);
      sm90::wgmma_commit();
      load_ahead();
      sm90::wgmma_wait<1>();
    } else {
      load_ahead();
      sm90::wgmma_wait<0>();
    }
    sm90::fence_acc(s);

    const bool full = t0 + TOK - 1 <= wpos_min && t0 + TOK <= hi && (p.window <= 0 || t0 > wpos_max - p.window) &&
                      w_last - w_first == 15;
    const bool plain = full && p.softcap <= 0.0f && p.alibi_slopes == nullptr && p.scale_log2 > 0.0f;
    if (!plain) prefill_logits<TOK>(s, p, kvh, w_first, last_row, pos0, t0, full, lane);
    float alpha[2];
    const bool moved = softmax_scores_lazy<TOK>(s, m, l, alpha, plain ? p.scale_log2 : 1.0f);
    if constexpr (PIPE) {
      sm90::wgmma_wait<0>();
      sm90::fence_acc(o);
    }
    if (moved) rescale_o<D>(o, alpha);
#pragma unroll
    for (int kk = 0; kk < TOK / 16; ++kk) p_frag<T, TOK>(a[kk], s, kk);
    if constexpr (PIPE) {
      prev_st = st;
    } else {
      sm90::wgmma_fence();
      issue_pv(st);
      sm90::wgmma_commit();
      sm90::wgmma_wait<0>();
      sm90::fence_acc(o);
    }
  }
  if constexpr (PIPE) {
    // The last tile's P V (a CTA with rows always has a tile: lo <= its first row's position < hi).
    sm90::wgmma_fence();
    issue_pv(prev_st);
    sm90::wgmma_commit();
    sm90::wgmma_wait<0>();
    sm90::fence_acc(o);
  }
  cp_async_wait<0>();
  store_prefill_rows<T, D>(o, l, p, kvh, w_first, last_row, q_start, lane);
}

template <typename T, int C>
void run_prefill_wg(const Params& p, cudaStream_t stream) {
  constexpr PrefillConfig c = kPrefillConfigs[C];
  static_assert(c.wg > 0 && c.warps == 4 * c.wg, "a wgmma configuration has 4 warps per warpgroup");
  launch_prefill_grid<prefill_wg_kernel<T, c.wg, c.tok, c.stages, c.min_ctas, c.pipe, c.q_regs>>(
      p, c.warps * 32, WgCfg<c.wg, c.tok, c.stages>::kSmem, true, stream);
}

}  // namespace

template <typename T>
void launch_prefill_sm90(const Params& p, int config, cudaStream_t stream) {
  KILN_CHECK(!p.kv_fp8, "prefill attention: the wgmma configurations read a 16-bit KV cache only");
  static_assert(kNumPrefillConfigs == 21, "add the new wgmma configurations below");
  switch (config) {
    case 15:
      return run_prefill_wg<T, 15>(p, stream);
    case 16:
      return run_prefill_wg<T, 16>(p, stream);
    case 17:
      return run_prefill_wg<T, 17>(p, stream);
    case 18:
      return run_prefill_wg<T, 18>(p, stream);
    case 19:
      return run_prefill_wg<T, 19>(p, stream);
    case 20:
      return run_prefill_wg<T, 20>(p, stream);
    default:
      KILN_CHECK(false, "prefill attention: configuration {} is not a wgmma one", config);
  }
}

template void launch_prefill_sm90<__nv_bfloat16>(const Params&, int, cudaStream_t);
template void launch_prefill_sm90<__half>(const Params&, int, cudaStream_t);

}  // namespace kiln::cuda::attn
