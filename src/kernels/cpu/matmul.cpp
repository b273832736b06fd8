// fp32 matmul y = x·Wᵀ (+bias), gemm_panel (its single-threaded kernel) and dot: register-tiled microkernels,
// AVX2/FMA when the CPU has it (a larger tile of the same arithmetic when it also has AVX-512VL's 32 registers),
// portable otherwise.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <vector>

#include "core/thread_pool.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/simd.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define KILN_X86 1
#endif

namespace kiln::cpu {
namespace {

// Rows of x (MR) by rows of w (NR) per microkernel call of the portable and unpacked paths. 4x3 keeps 12
// accumulators + 4 operands in the 16 AVX2 registers. x rows are processed in blocks that stay in L2 (kTBlock
// on the portable path; on the vectorized one a block packed into about kPackBytes) while the matching rows of w
// are streamed once per block.
constexpr int kMR = 4;
constexpr int kNR = 3;
constexpr int kMaxTile = 8;  // the packed tiles' largest side
constexpr int64_t kTBlock = 64;
constexpr int64_t kPackBytes = 512 * 1024;
constexpr int64_t kPanelRows = 96;  // rows of w per matmul task (a multiple of every packed tile's width)

using TileFn = void (*)(const float* x, int64_t ldx, const float* w, int64_t ldw, int64_t K, float* y, int64_t ldy,
                        const float* bias);
// A tile over packed x (pack_rows): a group of rows interleaved in 8-float steps, one sequential stream.
using PackedTileFn = void (*)(const float* xp, const float* w, int64_t ldw, int64_t K, const float* acc_in,
                              float* acc_out, float* y, int64_t ldy, const float* bias);

// Packs rows [0, rows) of x for the packed tiles: each group of `group` rows is ceil(K / 8) steps of group x 8
// floats (row i's elements k .. k + 7 at step k / 8, slot i), zeros past K and past the last row. The values are
// copied, not changed, so a packed tile computes what the unpacked one does.
void pack_rows(const float* x, int64_t ldx, int64_t rows, int64_t K, int group, float* xp) {
  const int64_t steps = (K + 7) / 8, body = K / 8;
  for (int64_t g = 0; g < rows; g += group) {
    float* dst = xp + g / group * steps * group * 8;
    for (int i = 0; i < group; ++i) {
      if (g + i >= rows) {
        for (int64_t st = 0; st < steps; ++st) std::fill_n(dst + (st * group + i) * 8, 8, 0.0f);
        continue;
      }
      const float* src = x + (g + i) * ldx;
      for (int64_t st = 0; st < body; ++st) std::memcpy(dst + (st * group + i) * 8, src + st * 8, 8 * sizeof(float));
      if (body < steps) {
        float* d = dst + (body * group + i) * 8;
        std::fill_n(d, 8, 0.0f);
        std::copy(src + body * 8, src + K, d);
      }
    }
  }
}

// No FMA contraction here: contraction would depend on how each tile shape is compiled, and a row must
// give the same bits in every tile shape.
template <int MR, int NR>
__attribute__((optimize("fp-contract=off"))) void tile_generic(const float* x, int64_t ldx, const float* w, int64_t ldw, int64_t K, float* y, int64_t ldy,
                  const float* bias) {
  // Four partial sums per output so the compiler can keep independent chains without reassociating.
  float acc[MR][NR][4] = {};
  int64_t k = 0;
  for (; k + 4 <= K; k += 4) {
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j)
        for (int l = 0; l < 4; ++l) acc[i][j][l] += x[i * ldx + k + l] * w[j * ldw + k + l];
  }
  for (; k < K; ++k)
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) acc[i][j][0] += x[i * ldx + k] * w[j * ldw + k];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j)
      y[i * ldy + j] = (acc[i][j][0] + acc[i][j][1]) + (acc[i][j][2] + acc[i][j][3]) + (bias ? bias[j] : 0.0f);
}

float dot_generic(const float* a, const float* b, int64_t n) {
  float acc[4] = {};
  int64_t k = 0;
  for (; k + 4 <= n; k += 4)
    for (int l = 0; l < 4; ++l) acc[l] += a[k + l] * b[k + l];
  for (; k < n; ++k) acc[0] += a[k] * b[k];
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

#ifdef KILN_X86
#pragma GCC push_options
#pragma GCC target("avx2,fma")

inline float hsum256(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v);
  __m128 hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  __m128 sh = _mm_movehdup_ps(lo);
  lo = _mm_add_ps(lo, sh);
  sh = _mm_movehl_ps(sh, lo);
  lo = _mm_add_ss(lo, sh);
  return _mm_cvtss_f32(lo);
}

// Lanes [0, n) of a load mask, for the last K % 8 elements of a row: masked-out lanes read as 0, so the tail
// goes into the same accumulator as the body and every output is hsum(acc) (+ bias), whatever the tile.
inline __m256i tail_mask(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

template <int MR, int NR>
void tile_avx2(const float* x, int64_t ldx, const float* w, int64_t ldw, int64_t K, float* y, int64_t ldy,
               const float* bias) {
  __m256 acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    __m256 wv[NR];
    for (int j = 0; j < NR; ++j) wv[j] = _mm256_loadu_ps(w + j * ldw + k);
    for (int i = 0; i < MR; ++i) {
      const __m256 xv = _mm256_loadu_ps(x + i * ldx + k);
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  }
  if (k < K) {
    const __m256i m = tail_mask(K - k);
    __m256 wv[NR];
    for (int j = 0; j < NR; ++j) wv[j] = _mm256_maskload_ps(w + j * ldw + k, m);
    for (int i = 0; i < MR; ++i) {
      const __m256 xv = _mm256_maskload_ps(x + i * ldx + k, m);
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) y[i * ldy + j] = hsum256(acc[i][j]) + (bias ? bias[j] : 0.0f);
}

// Matrix-vector rows, one row of w at a time: the weights are then read as one sequential stream, which
// the hardware prefetcher follows far better than several short row streams. One accumulator per row, in
// the order tile_avx2 uses, so that a row's result is bitwise the same whether it is computed alone
// (T == 1) or inside a larger batch: batched decoding must not change a sequence's arithmetic. Streaming
// from memory, a single FMA chain keeps up with the memory bandwidth.
void gemv_rows_avx2(const float* x, const float* w, int64_t K, float* y, const float* bias, int64_t rows) {
  const int64_t body = K / 8 * 8;
  const __m256i m = tail_mask(K - body);
  const __m256 x_tail = _mm256_maskload_ps(x + body, m);
  for (int64_t r = 0; r < rows; ++r) {
    const float* wr = w + r * K;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t k = 0; k < body; k += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(x + k), _mm256_loadu_ps(wr + k), acc);
    if (body < K) acc = _mm256_fmadd_ps(x_tail, _mm256_maskload_ps(wr + body, m), acc);
    y[r] = hsum256(acc) + (bias ? bias[r] : 0.0f);
  }
}

float dot_avx2(const float* a, const float* b, int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= n; k += 16) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 8), _mm256_loadu_ps(b + k + 8), a1);
  }
  for (; k + 8 <= n; k += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), a0);
  float t = 0;
  for (; k < n; ++k) t += a[k] * b[k];
  return hsum256(_mm256_add_ps(a0, a1)) + t;
}

namespace avx2 {
constexpr int kPackedMR = 4, kPackedNR = 3;
#include "kernels/cpu/matmul_packed.inc"
}  // namespace avx2

#pragma GCC pop_options

// The same tiles with AVX-512VL's 32 ymm registers (EVEX encodings of the same 8-lane instructions): 3x8, so
// each x load serves 8 FMAs and each w load 3.
#pragma GCC push_options
#pragma GCC target("avx2,fma,avx512f,avx512vl")
namespace wide {
constexpr int kPackedMR = 3, kPackedNR = 8;
#include "kernels/cpu/matmul_packed.inc"
}  // namespace wide
#pragma GCC pop_options
#endif

struct Kernels {
  TileFn tiles[kMR + 1][kNR + 1] = {};
  // Vectorized path: tiles over x packed in groups of packed_mr rows, up to packed_mr x packed_nr, and how many
  // 8-float steps of K one chunk holds (so a chunk of packed_nr rows of w stays in L1).
  PackedTileFn packed[kMaxTile + 1][kMaxTile + 1] = {};
  int packed_mr = 0, packed_nr = 0;
  int64_t chunk_steps = 0;
  void (*gemv)(const float*, const float*, int64_t, float*, const float*, int64_t) = nullptr;
  float (*dot)(const float*, const float*, int64_t) = dot_generic;
  SimdLevel level = SimdLevel::Portable;
};

SimdLevel cpu_level() {
#ifdef KILN_X86
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return SimdLevel::Portable;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")) return SimdLevel::Avx2Wide;
  return SimdLevel::Avx2;
#else
  return SimdLevel::Portable;
#endif
}

Kernels make_kernels(SimdLevel want) {
  Kernels k;
  k.level = std::min(want, cpu_level());
  if (k.level != SimdLevel::Portable) {
#ifdef KILN_X86
    if (k.level == SimdLevel::Avx2Wide) {
      wide::fill_packed<wide::kPackedMR, wide::kPackedMR, wide::kPackedNR>(k.packed);
      k.packed_mr = wide::kPackedMR;
      k.packed_nr = wide::kPackedNR;
      k.chunk_steps = 72;  // 11 rows of 576 floats: 25 KB of the 32 KB L1
    } else {
      avx2::fill_packed<avx2::kPackedMR, avx2::kPackedMR, avx2::kPackedNR>(k.packed);
      k.packed_mr = avx2::kPackedMR;
      k.packed_nr = avx2::kPackedNR;
      k.chunk_steps = 80;  // 7 rows of 640 floats
    }
    k.tiles[1][1] = tile_avx2<1, 1>; k.tiles[1][2] = tile_avx2<1, 2>; k.tiles[1][3] = tile_avx2<1, 3>;
    k.tiles[2][1] = tile_avx2<2, 1>; k.tiles[2][2] = tile_avx2<2, 2>; k.tiles[2][3] = tile_avx2<2, 3>;
    k.tiles[3][1] = tile_avx2<3, 1>; k.tiles[3][2] = tile_avx2<3, 2>; k.tiles[3][3] = tile_avx2<3, 3>;
    k.tiles[4][1] = tile_avx2<4, 1>; k.tiles[4][2] = tile_avx2<4, 2>; k.tiles[4][3] = tile_avx2<4, 3>;
    k.gemv = gemv_rows_avx2;
    k.dot = dot_avx2;
#endif
  } else {
    k.tiles[1][1] = tile_generic<1, 1>; k.tiles[1][2] = tile_generic<1, 2>; k.tiles[1][3] = tile_generic<1, 3>;
    k.tiles[2][1] = tile_generic<2, 1>; k.tiles[2][2] = tile_generic<2, 2>; k.tiles[2][3] = tile_generic<2, 3>;
    k.tiles[3][1] = tile_generic<3, 1>; k.tiles[3][2] = tile_generic<3, 2>; k.tiles[3][3] = tile_generic<3, 3>;
    k.tiles[4][1] = tile_generic<4, 1>; k.tiles[4][2] = tile_generic<4, 2>; k.tiles[4][3] = tile_generic<4, 3>;
  }
  return k;
}

Kernels& kernels_mut() {
  static Kernels k = make_kernels(SimdLevel::Avx2Wide);
  return k;
}

const Kernels& kernels() { return kernels_mut(); }

// One output row of x against rows [o0, o1) of w: the decode path.
void gemv_rows(const Kernels& kn, const float* x, const float* w, int64_t in, const float* bias, float* y, int64_t o0,
               int64_t o1) {
  if (kn.gemv) {
    kn.gemv(x, w + o0 * in, in, y + o0, bias ? bias + o0 : nullptr, o1 - o0);
    return;
  }
  for (int64_t o = o0; o < o1; o += kNR) {
    const int nr = static_cast<int>(std::min<int64_t>(kNR, o1 - o));
    kn.tiles[1][nr](x, in, w + o * in, in, in, y + o, 0, bias ? bias + o : nullptr);
  }
}

// How the packed path cuts a product with T rows of x and K columns: blocks of `block` rows of x packed into
// block_floats floats (about kPackBytes), and K in chunks of `chunk` elements (whole 8-float steps) so that a
// chunk of the tile's rows of w stays in L1 while a block's rows pass.
struct PackedPlan {
  PackedPlan(const Kernels& kn, int64_t T, int64_t K) {
    const int pm = kn.packed_mr;
    steps = (K + 7) / 8;
    block = std::clamp<int64_t>(kPackBytes / (steps * 8 * static_cast<int64_t>(sizeof(float))) / pm * pm, pm, 64 * pm);
    block = std::min(block, (T + pm - 1) / pm * pm);
    block_floats = block * steps * 8;
    acc_floats = block * kn.packed_nr * 8;
    const int64_t chunks = (steps + kn.chunk_steps - 1) / kn.chunk_steps;
    chunk = (steps + chunks - 1) / chunks * 8;
    this->K = K;
  }
  int64_t K, steps, block, block_floats, acc_floats, chunk;
};

// Rows [0, rows) of a packed block of x against rows [o0, o1) of w (row-major, K columns): y[t, o] for those,
// y pointing at the block's first row. acc holds plan.acc_floats floats (the accumulators between K-chunks,
// stored and reloaded exactly).
void packed_block(const Kernels& kn, const PackedPlan& plan, const float* xp, int64_t rows, const float* w, int64_t o0,
                  int64_t o1, const float* bias, float* y, int64_t ldy, float* acc) {
  const int pm = kn.packed_mr, pn = kn.packed_nr;
  const int64_t K = plan.K;
  for (int64_t o = o0; o < o1; o += pn) {
    const int nr = static_cast<int>(std::min<int64_t>(pn, o1 - o));
    const float* wo = w + o * K;
    const float* bo = bias ? bias + o : nullptr;
    for (int64_t k0 = 0; k0 < K; k0 += plan.chunk) {
      const int64_t len = std::min(plan.chunk, K - k0);
      const bool first = k0 == 0, last = k0 + len == K;
      for (int64_t t = 0; t < rows; t += pm) {
        const int mr = static_cast<int>(std::min<int64_t>(pm, rows - t));
        float* a = acc + t * pn * 8;
        kn.packed[mr][nr](xp + t * plan.steps * 8 + k0 * pm, wo + k0, K, len, first ? nullptr : a, last ? nullptr : a,
                          y + t * ldy + o, ldy, bo);
      }
    }
  }
}

}  // namespace

float dot(const float* a, const float* b, int64_t n) { return kernels().dot(a, b, n); }

bool set_simd(bool enabled) {
  return set_simd_level(enabled ? SimdLevel::Avx2Wide : SimdLevel::Portable) != SimdLevel::Portable;
}

SimdLevel set_simd_level(SimdLevel most) {
  kernels_mut() = make_kernels(most);
  return kernels().level;
}

SimdLevel simd_level() { return kernels().level; }

bool simd_enabled() { return kernels().level != SimdLevel::Portable; }

void gemm_panel(const float* x, int64_t T, int64_t K, const float* w, int64_t n, const float* bias, float* y,
                int64_t ldx, int64_t ldy) {
  if (T <= 0 || n <= 0) return;
  if (ldx == 0) ldx = K;
  if (ldy == 0) ldy = n;
  if (K == 0) {
    for (int64_t t = 0; t < T; ++t)
      for (int64_t o = 0; o < n; ++o) y[t * ldy + o] = bias ? bias[o] : 0.0f;
    return;
  }
  const Kernels& kn = kernels();
  if (T == 1) {
    gemv_rows(kn, x, w, K, bias, y, 0, n);
    return;
  }
  // x rows in blocks (kept in L2), each against every row of the panel, a few rows of w (in L1) at a time. Every
  // output is one tile's accumulator, so its bits do not depend on T, n or the tile it falls in.
  if (kn.packed_mr > 0) {
    const PackedPlan plan(kn, T, K);
    thread_local std::vector<float> xp, acc;
    xp.resize(static_cast<size_t>(plan.block_floats));
    acc.resize(static_cast<size_t>(plan.acc_floats));
    for (int64_t t0 = 0; t0 < T; t0 += plan.block) {
      const int64_t rows = std::min(plan.block, T - t0);
      pack_rows(x + t0 * ldx, ldx, rows, K, kn.packed_mr, xp.data());
      packed_block(kn, plan, xp.data(), rows, w, 0, n, bias, y + t0 * ldy, ldy, acc.data());
    }
    return;
  }
  for (int64_t t0 = 0; t0 < T; t0 += kTBlock) {
    const int64_t t1 = std::min(T, t0 + kTBlock);
    for (int64_t o = 0; o < n; o += kNR) {
      const int nr = static_cast<int>(std::min<int64_t>(kNR, n - o));
      const float* wo = w + o * K;
      const float* bo = bias ? bias + o : nullptr;
      for (int64_t t = t0; t < t1; t += kMR) {
        const int mr = static_cast<int>(std::min<int64_t>(kMR, t1 - t));
        kn.tiles[mr][nr](x + t * ldx, ldx, wo, K, K, y + t * ldy + o, ldy, bo);
      }
    }
  }
}

void matmul(const float* x, int64_t T, int64_t in, const float* w, int64_t out, const float* bias, float* y,
            int64_t ldx, int64_t ldy) {
  if (T <= 0 || out <= 0) return;
  if (ldx == 0) ldx = in;
  if (ldy == 0) ldy = out;
  const Kernels& kn = kernels();
  ThreadPool& pool = ThreadPool::global();
  if (T >= 2 && in > 0 && kn.packed_mr > 0 && pool.size() > 1) {
    // x is packed once, block by block, for every thread; then tasks of (block, panel of kPanelRows rows of w) go to
    // whichever thread is free, blocks in order (a thread's next task mostly reuses the x block in its cache).
    // Each task is what gemm_panel does for those rows, so the outputs are its bits.
    const PackedPlan plan(kn, T, in);
    const int64_t blocks = (T + plan.block - 1) / plan.block;
    const int64_t panels = (out + kPanelRows - 1) / kPanelRows;
    static std::vector<float> xp;  // matmul is not reentrant: parallel_for serves one caller at a time
    static std::mutex xp_mu;
    std::lock_guard lk(xp_mu);
    xp.resize(static_cast<size_t>(blocks * plan.block_floats));
    pool.parallel_for(blocks, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b)
        pack_rows(x + b * plan.block * ldx, ldx, std::min(plan.block, T - b * plan.block), in, kn.packed_mr,
                  xp.data() + b * plan.block_floats);
    });
    std::atomic<int64_t> next{0};
    const int64_t tasks = blocks * panels;
    pool.parallel_for(pool.size(), 1, [&](int64_t, int64_t) {
      thread_local std::vector<float> acc;
      acc.resize(static_cast<size_t>(plan.acc_floats));
      for (int64_t i = next.fetch_add(1); i < tasks; i = next.fetch_add(1)) {
        const int64_t b = i / panels, o0 = i % panels * kPanelRows, o1 = std::min(out, o0 + kPanelRows);
        const int64_t t0 = b * plan.block;
        packed_block(kn, plan, xp.data() + b * plan.block_floats, std::min(plan.block, T - t0), w, o0, o1, bias,
                     y + t0 * ldy, ldy, acc.data());
      }
    });
    return;
  }
  // Decode (one row) and the portable path: panels of 12 rows of w (a multiple of kNR), so every thread reads a
  // disjoint, contiguous slice of the weights; each panel is gemm_panel's, so a row's result is gemm_panel's for
  // that row whatever the split.
  constexpr int64_t kGroup = 12;
  const int64_t groups = (out + kGroup - 1) / kGroup;
  const int64_t flops_per_group = kGroup * std::max<int64_t>(1, in) * T;
  const int64_t grain = std::max<int64_t>(1, (1 << 16) / flops_per_group);
  pool.parallel_for(groups, grain, [&](int64_t g0, int64_t g1) {
    const int64_t o_begin = g0 * kGroup;
    const int64_t o_end = std::min(out, g1 * kGroup);
    gemm_panel(x, T, in, w + o_begin * in, o_end - o_begin, bias ? bias + o_begin : nullptr, y + o_begin, ldx, ldy);
  });
}

}  // namespace kiln::cpu
