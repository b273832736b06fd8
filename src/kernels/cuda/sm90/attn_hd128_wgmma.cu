// Prefill attention on Hopper's warpgroup MMA (wgmma, sm_90a only: this file is built for that target alone and
// launched only on compute capability 9.0), head_dim 128 over a 16-bit paged KV cache.
//
// Same semantics, rows and launch order as prefill_kernel's `fast` configuration (attention_kernels.cuh): rows are
// (token, head of the group) pairs, each of the CTA's compute warpgroups owns 64 of them, and the CTA walks the keys
// its rows can see in tiles of TOK. What changes is the product: each K/V tile (and Q) sits in shared memory in
// wgmma's 128-byte swizzled layout, S = Q Kᵀ is a warpgroup-wide 64 x TOK product per 16 dims with Q from registers
// and K read by the tensor cores straight from shared memory, and O += P V takes P from registers (the score
// accumulators, converted as for mma.sync) and V straight from its [key][dim] tile as an MN-major operand: no
// ldmatrix or register copy of K or V. A warpgroup issues tile j's Q Kᵀ and tile j - 1's P V back to back, so P V
// runs during tile j's softmax. The softmax, masking and output are the mma.sync kernel's helpers: wgmma's
// accumulators have the m16n8k16 C layout per warp. Measured against the mma.sync kernel and against other wgmma
// configurations (since removed) in docs/kernels.md.
#include "kernels/cuda/attention_kernels.cuh"
#include "kernels/cuda/sm90/wgmma.cuh"

namespace kiln::cuda::attn {
namespace {

// Makes this thread's generic-proxy writes to shared memory (cp.async, landed) visible to wgmma's reads.
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// ---------------------------------------------------------------------------------------------
// The pieces of the kernel below (head_dim 128, rows of 64 per warpgroup).

// Query rows [row0, row0 + NWG * 64) of the CTA (zeros past last_row) into q_s, swizzled: CTA row r in warpgroup
// r / 64's block; spread over NTHREADS threads, of which this is `tid`. Copies only (the caller commits).
template <typename T, int NWG, int NTHREADS>
__device__ __forceinline__ void load_q_rows(const Params& p, int kvh, int q_start, int row0, int last_row,
                                            uint32_t q_s, int tid) {
  constexpr int D = 128;
  const T* q = static_cast<const T*>(p.q);
  for (int c = tid; c < NWG * 64 * 16; c += NTHREADS) {
    const int r = c >> 4, chunk = c & 15;
    const int row = row0 + r;
    const bool valid = row <= last_row;
    const int i = valid ? row / p.group : 0, hq = kvh * p.group + (valid ? row % p.group : 0);
    const T* src = q + static_cast<int64_t>(q_start + i) * p.ldq + static_cast<int64_t>(hq) * D + chunk * 8;
    cp_async16(q_s + static_cast<uint32_t>((r >> 6) * 16384) + sw128_offset(r & 63, chunk, 64), src,
               valid ? 16 : 0);
  }
}

// This warp's 16 rows of its warpgroup's Q block (q_wg, landed) as the A fragments of Q Kᵀ, per 16 dims.
__device__ __forceinline__ void load_q_frags(uint32_t (&qf)[8][4], uint32_t q_wg, int warp, int lane) {
  const int r = (warp & 3) * 16 + (lane & 15);
#pragma unroll
  for (int ks = 0; ks < 8; ++ks) ldmatrix_x4(qf[ks], q_wg + sw128_offset(r, 2 * ks + (lane >> 4), 64));
}

// Zeroed O accumulators and P fragments (the online softmax's start: P V before the first tile adds nothing).
template <int TOK>
__device__ __forceinline__ void zero_o_and_p(float (&o)[16][4], uint32_t (&a)[TOK / 16][4]) {
#pragma unroll
  for (int i = 0; i < 16; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
#pragma unroll
  for (int kk = 0; kk < TOK / 16; ++kk) a[kk][0] = a[kk][1] = a[kk][2] = a[kk][3] = 0u;
}

// The rows of a warp (row0 + 16 warp, 16 of them, none past last_row) and their tokens' positions (-1: none).
struct WarpRows {
  int first, last, pos_min, pos_max;
};
__device__ __forceinline__ WarpRows warp_rows(const Params& p, int row0, int warp, int last_row, int pos0) {
  WarpRows w;
  w.first = row0 + warp * 16, w.last = min(w.first + 15, last_row);
  w.pos_min = w.first <= last_row ? pos0 + w.first / p.group : -1;
  w.pos_max = w.first <= last_row ? pos0 + w.last / p.group : -1;
  return w;
}

// The online softmax over the scores s (Q Kᵀ) of the tile of keys [t0, t0 + TOK) for the warp's rows w: masked,
// soft-capped and given ALiBi as the shape asks, unless all 16 rows see the whole tile under plain scaling. True
// when a running maximum moved (O is then rescaled by alpha).
template <int TOK>
__device__ __forceinline__ bool tile_softmax(float (&s)[TOK / 8][4], float (&m)[2], float (&l)[2], float (&alpha)[2],
                                            const Params& p, int kvh, const WarpRows& w, int last_row, int pos0,
                                            int t0, int hi, int lane) {
  const bool full = t0 + TOK - 1 <= w.pos_min && t0 + TOK <= hi && (p.window <= 0 || t0 > w.pos_max - p.window) &&
                    w.last - w.first == 15;
  const bool plain = full && p.softcap <= 0.0f && p.alibi_slopes == nullptr && p.scale_log2 > 0.0f;
  if (!plain) prefill_logits<TOK>(s, p, kvh, w.first, last_row, pos0, t0, full, lane);
  return softmax_scores_lazy<TOK>(s, m, l, alpha, plain ? p.scale_log2 : 1.0f);
}

// Issues S = Q Kᵀ for the K tile at k_addr (keys [key][dim], 64-dim halves TOK * 128 bytes apart): 16 dims per
// product, Q from registers, K K-major.
template <typename T, int TOK>
__device__ __forceinline__ void issue_qk(float (&s)[TOK / 8][4], const uint32_t (&qf)[8][4], uint32_t k_addr) {
#pragma unroll
  for (int ks = 0; ks < 8; ++ks)
    sm90::Wgmma<T, TOK>::rs_k(s, qf[ks], sm90::sw128_desc(k_addr + (ks >> 2) * (TOK * 128) + (ks & 3) * 32, 0), ks > 0);
}

// Issues O += P V: P from registers, 16 keys per product; V [key][dim] at v_addr is the MN-major B operand (its
// two 64-dim halves TOK * 128 bytes apart, 8-key groups 1024 bytes apart).
template <typename T, int TOK>
__device__ __forceinline__ void issue_pv(float (&o)[16][4], const uint32_t (&a)[TOK / 16][4], uint32_t v_addr) {
#pragma unroll
  for (int kk = 0; kk < TOK / 16; ++kk)
    sm90::Wgmma<T, 128>::rs_mn(o, a[kk], sm90::sw128_desc(v_addr + kk * 2048, TOK * 128));
}

// ---------------------------------------------------------------------------------------------
// Warp-specialized: the CTA's NWG warpgroups only compute, and one more warpgroup (the producer, with setmaxnreg's
// registers moved to the others) copies the K and V tiles with cp.async into two rings, KST slots for K and VST for
// V. Each slot has a `full` mbarrier, completed by the producer's 128 threads as their copies land
// (cp.async.mbarrier.arrive.noinc), and an `empty` one, completed by the 4 * NWG compute warps once their products
// have read it: K(j) after tile j's Q Kᵀ, V(j) after its P V (issued with tile j + 1's Q Kᵀ). No CTA-wide barrier
// inside the loop, and no copy or block-table read on the compute warps' path.

__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// Arrives on bar once all of this thread's earlier cp.async copies have landed (the barrier's count includes it).
__device__ __forceinline__ void cp_async_mbar_arrive(uint32_t bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
// Waits until the barrier's phase of this parity has completed.
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred done;\nWAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT;\n}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}
// Barrier 1 over the compute warps alone (barrier 0 is __syncthreads).
__device__ __forceinline__ void compute_sync(int threads) {
  asm volatile("bar.sync 1, %0;\n" ::"r"(threads) : "memory");
}
// This warpgroup's registers per thread (warpgroup-wide; ptxas allocates the code after it within the new count).
template <int R>
__device__ __forceinline__ void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(R));
}
template <int R>
__device__ __forceinline__ void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(R));
}

template <int NWG, int TOK, int KST, int VST>
struct WsCfg {
  static constexpr int kRows = 64 * NWG;
  static constexpr uint32_t kQBytes = kRows * 256;
  static constexpr uint32_t kTileBytes = TOK * 256;
  static constexpr uint32_t kVOffset = kQBytes + KST * kTileBytes;
  static constexpr uint32_t kBarBytes = 16 * (KST + VST);  // full and empty per slot
  // The barriers, then (aligned to 1024) Q, the K ring and the V ring.
  static constexpr size_t kSmem = kBarBytes + 1024 + kVOffset + VST * kTileBytes;
  // Registers per thread: the producer's few, the rest of the SM's 64 K (one CTA per SM) to the compute
  // warpgroups, in steps of 8.
  static constexpr int kProducerRegs = 40;
  static constexpr int kComputeRegs = ((65536 / 128 - kProducerRegs) / NWG) & ~7;
  static_assert(kComputeRegs <= 256, "setmaxnreg takes at most 256");
};

template <typename T, int NWG, int TOK, int KST, int VST>
__global__ void __launch_bounds__((NWG + 1) * 128, 1) prefill_ws_kernel(Params p) {
  constexpr int D = 128;
  using Cfg = WsCfg<NWG, TOK, KST, VST>;
  constexpr int kCompute = NWG * 128;
  extern __shared__ __align__(16) unsigned char smem_ws[];
  const uint32_t bar0 = smem_addr(smem_ws);  // full K, full V, empty K, empty V slots
  const uint32_t q_s = (bar0 + Cfg::kBarBytes + 1023u) & ~1023u;
  const uint32_t k_s = q_s + Cfg::kQBytes, v_s = q_s + Cfg::kVOffset;
  auto k_full = [&](int st) { return bar0 + 8u * st; };
  auto v_full = [&](int st) { return bar0 + 8u * (KST + st); };
  auto k_empty = [&](int st) { return bar0 + 8u * (KST + VST + st); };
  auto v_empty = [&](int st) { return bar0 + 8u * (2 * KST + VST + st); };

  PrefillTile pt;
  if (!prefill_tile(p, Cfg::kRows, true, pt)) return;
  const int kvh = pt.kvh, q_start = pt.q_start, row0 = pt.row0, last_row = pt.last_row, pos0 = pt.pos0;
  const int lo = pt.lo, hi = pt.hi;
  const int ntiles = hi > lo ? (hi - lo + TOK - 1) / TOK : 0;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, wg = warp >> 2;
  if (threadIdx.x == 0) {
    for (int st = 0; st < KST; ++st) mbar_init(k_full(st), 128), mbar_init(k_empty(st), 4 * NWG);
    for (int st = 0; st < VST; ++st) mbar_init(v_full(st), 128), mbar_init(v_empty(st), 4 * NWG);
  }
  __syncthreads();

  if (wg == NWG) {
    // The producer: tile j's K into slot j % KST once K(j - KST) is released, then its V likewise.
    setmaxnreg_dec<Cfg::kProducerRegs>();
    const int tid = threadIdx.x - kCompute;
    const T* const kc[1] = {static_cast<const T*>(p.k_cache)};
    const T* const vc[1] = {static_cast<const T*>(p.v_cache)};
    for (int j = 0; j < ntiles; ++j) {
      const int t0 = lo + j * TOK;
      const int ks = j % KST, vs = j % VST;
      if (j >= KST) mbar_wait(k_empty(ks), (j / KST - 1) & 1);
      const uint32_t kd[1] = {k_s + ks * Cfg::kTileBytes};
      load_rows<T, D, TOK, 128, true, 1>(p, pt.table, kvh, t0, hi, kc, kd, tid);
      cp_async_mbar_arrive(k_full(ks));
      if (j >= VST) mbar_wait(v_empty(vs), (j / VST - 1) & 1);
      const uint32_t vd[1] = {v_s + vs * Cfg::kTileBytes};
      load_rows<T, D, TOK, 128, true, 1>(p, pt.table, kvh, t0, hi, vc, vd, tid);
      cp_async_mbar_arrive(v_full(vs));
    }
    cp_async_wait<0>();
    return;
  }
  setmaxnreg_inc<Cfg::kComputeRegs>();

  // Query rows, copied by the compute warps.
  load_q_rows<T, NWG, kCompute>(p, kvh, q_start, row0, last_row, q_s, threadIdx.x);
  cp_async_commit();
  cp_async_wait<0>();
  fence_proxy_async();
  compute_sync(kCompute);
  const WarpRows wr = warp_rows(p, row0, warp, last_row, pos0);
  const uint32_t q_wg = q_s + static_cast<uint32_t>(wg * 16384);
  uint32_t qf[D / 16][4];
  load_q_frags(qf, q_wg, warp, lane);

  float o[D / 8][4];
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  // P of the previous tile as the A fragments of its P V. Every tile issues a P V, so that no product sits on a
  // divergent path: the first one multiplies a zero P by V(0).
  uint32_t a[TOK / 16][4];
  zero_o_and_p<TOK>(o, a);
  // O += P V(j), from V's slot.
  auto issue_pv_j = [&](int j) { issue_pv<T, TOK>(o, a, v_s + (j % VST) * Cfg::kTileBytes); };

  for (int it = 0; it < ntiles; ++it) {
    const int ks = it % KST, pj = it > 0 ? it - 1 : 0;
    const int t0 = lo + it * TOK;
    // K(it) and V(pj) landed (the producer's copies, made visible to the tensor cores' reads).
    mbar_wait(k_full(ks), (it / KST) & 1);
    mbar_wait(v_full(pj % VST), (pj / VST) & 1);
    fence_proxy_async();
    // S = Q K(it)ᵀ, then the previous tile's P V as a group of its own, which runs during this tile's softmax.
    float s[TOK / 8][4];
    const uint32_t k_addr = k_s + ks * Cfg::kTileBytes;
    sm90::wgmma_fence();
    issue_qk<T, TOK>(s, qf, k_addr);
    sm90::wgmma_commit();
    issue_pv_j(pj);
    sm90::wgmma_commit();
    sm90::wgmma_wait<1>();
    sm90::fence_acc(s);
    __syncwarp();
    if (lane == 0) mbar_arrive(k_empty(ks));  // K(it) read

    float alpha[2];
    const bool moved = tile_softmax<TOK>(s, m, l, alpha, p, kvh, wr, last_row, pos0, t0, hi, lane);
    sm90::wgmma_wait<0>();
    sm90::fence_acc(o);
    __syncwarp();
    if (lane == 0 && it > 0) mbar_arrive(v_empty(pj % VST));  // V(it - 1) read
    if (moved) rescale_o<D>(o, alpha);
#pragma unroll
    for (int kk = 0; kk < TOK / 16; ++kk) p_frag<T, TOK>(a[kk], s, kk);
  }
  // The last tile's P V (a CTA with rows always has a tile: lo <= its first row's position < hi).
  const int last = ntiles - 1;
  mbar_wait(v_full(last % VST), (last / VST) & 1);
  fence_proxy_async();
  sm90::wgmma_fence();
  issue_pv_j(last);
  sm90::wgmma_commit();
  sm90::wgmma_wait<0>();
  sm90::fence_acc(o);
  store_prefill_rows<T, D>(o, l, p, kvh, wr.first, last_row, q_start, lane);
}

}  // namespace

template <typename T>
void launch_prefill_sm90(const Params& p, cudaStream_t stream) {
  KILN_CHECK(!p.kv_fp8, "prefill attention: the wgmma kernel reads a 16-bit KV cache only");
  constexpr WgmmaPrefillConfig c = kWgmmaPrefill;
  static_assert(64 * c.wg == prefill_rows_per_cta(128, true), "rows per CTA");
  launch_prefill_grid<prefill_ws_kernel<T, c.wg, c.tok, c.k_stages, c.v_stages>>(
      p, (c.wg + 1) * 128, WsCfg<c.wg, c.tok, c.k_stages, c.v_stages>::kSmem, true, stream);
}

template void launch_prefill_sm90<__nv_bfloat16>(const Params&, cudaStream_t);
template void launch_prefill_sm90<__half>(const Params&, cudaStream_t);

}  // namespace kiln::cuda::attn
