// fp32 matmul y = x·Wᵀ (+bias) and dot: register-tiled microkernels (AVX2/FMA when the CPU has it).
#include <algorithm>
#include <cstring>

#include "core/thread_pool.h"
#include "kernels/cpu/ops.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define KILN_X86 1
#endif

namespace kiln::cpu {
namespace {

// Rows of x (MR) by rows of w (NR) per microkernel call. 4x3 keeps 12 accumulators + 4 operands in the
// 16 AVX2 registers. x rows are processed in blocks of kTBlock so that block stays in L2 while the
// matching rows of w are streamed once per block.
constexpr int kMR = 4;
constexpr int kNR = 3;
constexpr int64_t kTBlock = 64;

using TileFn = void (*)(const float* x, int64_t ldx, const float* w, int64_t ldw, int64_t K, float* y, int64_t ldy,
                        const float* bias);

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

#pragma GCC pop_options
#endif

struct Kernels {
  TileFn tiles[kMR + 1][kNR + 1] = {};
  void (*gemv)(const float*, const float*, int64_t, float*, const float*, int64_t) = nullptr;
  float (*dot)(const float*, const float*, int64_t) = dot_generic;
};

bool cpu_has_avx2() {
#ifdef KILN_X86
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

Kernels make_kernels(bool simd) {
  Kernels k;
  if (simd && cpu_has_avx2()) {
#ifdef KILN_X86
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
  static Kernels k = make_kernels(true);
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

}  // namespace

float dot(const float* a, const float* b, int64_t n) { return kernels().dot(a, b, n); }

bool set_simd(bool enabled) {
  kernels_mut() = make_kernels(enabled);
  return enabled && cpu_has_avx2();
}

void matmul(const float* x, int64_t T, int64_t in, const float* w, int64_t out, const float* bias, float* y,
            int64_t ldx, int64_t ldy) {
  if (T <= 0 || out <= 0) return;
  if (ldx == 0) ldx = in;
  if (ldy == 0) ldy = out;
  const Kernels& kn = kernels();
  if (in == 0) {
    for (int64_t t = 0; t < T; ++t)
      for (int64_t o = 0; o < out; ++o) y[t * ldy + o] = bias ? bias[o] : 0.0f;
    return;
  }
  // Work is split over rows of w in groups of 12 (a multiple of kNR), so every thread reads a disjoint,
  // contiguous slice of the weights.
  constexpr int64_t kGroup = 12;
  const int64_t groups = (out + kGroup - 1) / kGroup;
  const int64_t flops_per_group = kGroup * in * T;
  const int64_t grain = std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(1, flops_per_group));
  ThreadPool::global().parallel_for(groups, grain, [&](int64_t g0, int64_t g1) {
    const int64_t o_begin = g0 * kGroup;
    const int64_t o_end = std::min(out, g1 * kGroup);
    if (T == 1) {
      gemv_rows(kn, x, w, in, bias, y, o_begin, o_end);
      return;
    }
    for (int64_t t0 = 0; t0 < T; t0 += kTBlock) {
      const int64_t t1 = std::min(T, t0 + kTBlock);
      for (int64_t o = o_begin; o < o_end; o += kNR) {
        const int nr = static_cast<int>(std::min<int64_t>(kNR, o_end - o));
        const float* wo = w + o * in;
        const float* bo = bias ? bias + o : nullptr;
        for (int64_t t = t0; t < t1; t += kMR) {
          const int mr = static_cast<int>(std::min<int64_t>(kMR, t1 - t));
          kn.tiles[mr][nr](x + t * ldx, ldx, wo, in, in, y + t * ldy + o, ldy, bo);
        }
      }
    }
  });
}

}  // namespace kiln::cpu
