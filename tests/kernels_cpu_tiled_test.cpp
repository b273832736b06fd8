// The cache-blocked CPU kernels: tiled attention against a naive double-precision reference across many key
// tiles; a query row's attention bitwise the same whatever chunk it arrives in, the rows it is grouped with, the
// batch, the block layout and the kernel path (portable or AVX2); vectorized SiLU; gemm_panel bitwise equal to
// matmul.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/simd.h"

namespace kiln {
namespace {

std::vector<float> random_vec(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Restores the vectorized kernels when a test leaves, whatever it selected.
struct SimdGuard {
  ~SimdGuard() { cpu::set_simd(true); }
};

struct AttnCase {
  int64_t T, heads, kv_heads, head_dim, pos0, window;
  bool alibi;
  float softcap;
};

// Contiguous attention of T queries after pos0 cached keys against float64 softmax(q k^T) v.
void check_against_naive(const AttnCase& c, uint32_t seed) {
  const int64_t capacity = c.pos0 + c.T + 5;
  const int64_t ldq = c.heads * c.head_dim + 3, ldo = c.heads * c.head_dim + 1;
  auto q = random_vec(c.T * ldq, seed);
  auto k = random_vec(c.kv_heads * capacity * c.head_dim, seed + 1);
  auto v = random_vec(c.kv_heads * capacity * c.head_dim, seed + 2);
  const std::vector<float> slopes = c.alibi ? cpu::alibi_slopes(c.heads, 8.0) : std::vector<float>{};
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  std::vector<float> out(c.T * ldo, 777.0f);
  cpu::attention(q.data(), ldq, c.T, c.heads, c.head_dim, k.data(), v.data(), c.kv_heads, capacity, c.pos0, c.window,
                 scale, out.data(), ldo, c.alibi ? slopes.data() : nullptr, c.softcap);
  const int64_t group = c.heads / c.kv_heads;
  for (int64_t t = 0; t < c.T; ++t) {
    for (int64_t h = 0; h < c.heads; ++h) {
      const int64_t g = h / group, p = c.pos0 + t;
      std::vector<double> s;
      std::vector<int64_t> js;
      for (int64_t j = 0; j <= p; ++j) {
        if (c.window > 0 && p - j >= c.window) continue;
        double d = 0;
        for (int64_t i = 0; i < c.head_dim; ++i)
          d += static_cast<double>(q[t * ldq + h * c.head_dim + i]) * k[(g * capacity + j) * c.head_dim + i];
        d *= scale;
        if (c.softcap > 0) d = c.softcap * std::tanh(d / c.softcap);
        if (c.alibi) d += slopes[h] * static_cast<double>(j - p);
        s.push_back(d);
        js.push_back(j);
      }
      double mx = -1e300, sum = 0;
      for (double x : s) mx = std::max(mx, x);
      for (double& x : s) sum += (x = std::exp(x - mx));
      for (int64_t i = 0; i < c.head_dim; ++i) {
        double ref = 0;
        for (size_t n = 0; n < s.size(); ++n) ref += s[n] / sum * v[(g * capacity + js[n]) * c.head_dim + i];
        ASSERT_NEAR(out[t * ldo + h * c.head_dim + i], ref, 2e-5)
            << "T=" << c.T << " heads=" << c.heads << "/" << c.kv_heads << " hd=" << c.head_dim << " pos0=" << c.pos0
            << " window=" << c.window << " t=" << t << " h=" << h << " i=" << i;
      }
    }
    for (int64_t i = c.heads * c.head_dim; i < ldo; ++i) ASSERT_EQ(out[t * ldo + i], 777.0f);
  }
}

TEST(KernelsCpuTiled, AttentionAcrossManyKeyTilesMatchesNaive) {
  SimdGuard guard;
  const AttnCase cases[] = {
      {150, 6, 2, 64, 37, 0, false, 0.0f},  // GQA, the first rows' keys span the first tiles
      {100, 4, 4, 80, 0, 70, false, 0.0f},  // MHA, a window shorter than the prompt, head_dim 80
      {70, 8, 1, 5, 130, 0, false, 0.0f},   // MQA, odd head_dim, a chunk after 130 cached keys
      {90, 4, 4, 16, 50, 0, true, 0.0f},    // ALiBi
      {80, 6, 3, 24, 10, 45, false, 3.0f},  // soft-capping with a window
      {1, 9, 3, 64, 300, 0, false, 0.0f},   // one decode row at a long context
      {3, 32, 4, 8, 0, 0, false, 0.0f},     // a group of 8 heads: a panel of three positions
  };
  for (cpu::SimdLevel level : {cpu::SimdLevel::Avx2Wide, cpu::SimdLevel::Avx2, cpu::SimdLevel::Portable}) {
    const bool simd = cpu::set_simd_level(level) != cpu::SimdLevel::Portable;
    uint32_t seed = 900;
    for (const AttnCase& c : cases) {
      SCOPED_TRACE(simd ? "simd" : "portable");
      check_against_naive(c, seed += 10);
    }
  }
}

// One sequence's keys in a shuffled paged cache, and helpers to run its rows in any grouping.
struct PagedFixture {
  int64_t n, heads, kv_heads, head_dim, block_size, window;
  std::vector<float> slopes;
  float softcap = 0.0f;
  std::vector<float> q, pool_k, pool_v;
  std::vector<int32_t> table;
  int64_t block_stride = 0;
  int64_t ld() const { return heads * head_dim; }

  PagedFixture(int64_t n_, int64_t heads_, int64_t kv_heads_, int64_t hd, int64_t bs, int64_t window_, bool alibi,
               float softcap_, uint32_t seed)
      : n(n_), heads(heads_), kv_heads(kv_heads_), head_dim(hd), block_size(bs), window(window_), softcap(softcap_) {
    if (alibi) slopes = cpu::alibi_slopes(heads, 8.0);
    const int64_t blocks = (n + bs - 1) / bs + 4;
    block_stride = kv_heads * bs * hd;
    pool_k = random_vec(static_cast<size_t>(blocks * block_stride), seed);
    pool_v = random_vec(static_cast<size_t>(blocks * block_stride), seed + 1);
    q = random_vec(static_cast<size_t>(n * ld()), seed + 2, 2.0f);
    std::vector<int32_t> ids(static_cast<size_t>(blocks));
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), std::mt19937(seed + 3));
    table.assign(ids.begin(), ids.begin() + (n + bs - 1) / bs);
  }

  // Rows [a, b) of the sequence (context b) in one call, packed after `before` rows of another sequence
  // (rows of zeros over a context of `before` keys of this one's cache when before > 0).
  std::vector<float> run(int64_t a, int64_t b, int64_t before = 0) const {
    const int64_t rows = before + (b - a);
    std::vector<float> qq(static_cast<size_t>(rows * ld()), 0.25f), out(static_cast<size_t>(rows * ld()), -5.0f);
    std::copy(q.begin() + a * ld(), q.begin() + b * ld(), qq.begin() + before * ld());
    std::vector<cpu::PagedSeq> seqs;
    if (before > 0) seqs.push_back({0, before, std::min<int64_t>(n, before + 3), table.data()});
    seqs.push_back({before, b - a, b, table.data()});
    const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    cpu::paged_attention(qq.data(), ld(), seqs, heads, head_dim,
                         {pool_k.data(), pool_v.data(), block_stride, block_size}, kv_heads, window, scale, out.data(),
                         ld(), slopes.empty() ? nullptr : slopes.data(), softcap);
    return {out.begin() + before * ld(), out.end()};
  }
};

TEST(KernelsCpuTiled, AttentionRowIsBitwiseTheSameInAnyChunkPanelBatchOrPath) {
  SimdGuard guard;
  struct Cfg {
    int64_t heads, kv_heads, head_dim, block_size, window;
    bool alibi;
    float softcap;
  };
  const Cfg cfgs[] = {
      {6, 2, 24, 7, 0, false, 0.0f},    // group 3: a panel holds 8 positions
      {4, 4, 16, 16, 50, false, 0.0f},  // MHA, 24 positions a panel, sliding window
      {8, 1, 8, 3, 0, true, 0.0f},      // MQA, group 8, ALiBi
      {6, 3, 12, 5, 100, false, 2.0f},  // soft-capping and a window
  };
  const int64_t n = 300;
  const int64_t chunks[] = {1, 2, 5, 8, 13, 64, 65, 100, 3, 39};
  uint32_t seed = 70;
  for (const Cfg& c : cfgs) {
    const PagedFixture f(n, c.heads, c.kv_heads, c.head_dim, c.block_size, c.window, c.alibi, c.softcap, seed += 10);
    SCOPED_TRACE("heads " + std::to_string(c.heads) + "/" + std::to_string(c.kv_heads) + " window " +
                 std::to_string(c.window));
    cpu::set_simd(true);
    const std::vector<float> ref = f.run(0, n);
    const size_t row_bytes = static_cast<size_t>(f.ld()) * sizeof(float);
    // Chunks of odd sizes (a prefix in the cache, the rows grouped into other panels).
    int64_t a = 0;
    for (size_t i = 0; a < n; ++i) {
      const int64_t b = std::min(n, a + chunks[i % std::size(chunks)]);
      const std::vector<float> got = f.run(a, b);
      ASSERT_EQ(std::memcmp(got.data(), ref.data() + a * f.ld(), (b - a) * row_bytes), 0) << "chunk " << a << ".." << b;
      a = b;
    }
    // Every row alone (decoding), and a chunk behind another sequence's rows in the same call.
    for (int64_t r = 0; r < n; r += 7) {
      const std::vector<float> got = f.run(r, r + 1);
      ASSERT_EQ(std::memcmp(got.data(), ref.data() + r * f.ld(), row_bytes), 0) << "row " << r << " alone";
    }
    for (int64_t before : {1, 11, 40}) {
      const std::vector<float> got = f.run(120, 217, before);
      ASSERT_EQ(std::memcmp(got.data(), ref.data() + 120 * f.ld(), 97 * row_bytes), 0) << "after " << before << " rows";
    }
    // Every other kernel path does the same IEEE operations per lane.
    for (cpu::SimdLevel level : {cpu::SimdLevel::Avx2, cpu::SimdLevel::Portable}) {
      cpu::set_simd_level(level);
      const std::vector<float> whole = f.run(0, n);
      ASSERT_EQ(std::memcmp(whole.data(), ref.data(), n * row_bytes), 0) << "level " << static_cast<int>(level);
      const std::vector<float> chunk = f.run(77, 150);
      ASSERT_EQ(std::memcmp(chunk.data(), ref.data() + 77 * f.ld(), 73 * row_bytes), 0);
    }
  }
}

TEST(KernelsCpuTiled, SiluGatedRowsAreTheSameOnBothPathsAndMatchNaive) {
  SimdGuard guard;
  const int64_t rows = 5, n = 1541, ld = 2 * n + 3;
  auto gu = random_vec(static_cast<size_t>(rows * ld), 61, 4.0f);
  gu[7] = 0.0f;
  gu[8] = -0.0f;
  gu[9] = 95.0f;  // e^-|x| underflows to 0 on both sides
  gu[10] = -95.0f;
  std::vector<float> simd(static_cast<size_t>(rows * n)), portable(simd.size());
  cpu::set_simd(true);
  cpu::gated_activation(gu.data(), gu.data() + n, simd.data(), rows, n, ld, cpu::Activation::SiLU);
  cpu::set_simd(false);
  cpu::gated_activation(gu.data(), gu.data() + n, portable.data(), rows, n, ld, cpu::Activation::SiLU);
  ASSERT_EQ(std::memcmp(simd.data(), portable.data(), simd.size() * sizeof(float)), 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < n; ++i) {
      const double g = gu[r * ld + i], u = gu[r * ld + n + i];
      const double want = g / (1 + std::exp(-g)) * u;
      ASSERT_NEAR(simd[r * n + i], want, 1e-6 * (1 + std::abs(want))) << "row " << r << " i " << i;
    }
}

// The two vectorized levels differ only in tile shapes (16 or 32 registers), not in any output's arithmetic.
TEST(KernelsCpuTiled, MatmulIsBitwiseTheSameOnBothVectorizedLevels) {
  SimdGuard guard;
  if (cpu::set_simd_level(cpu::SimdLevel::Avx2Wide) != cpu::SimdLevel::Avx2Wide) GTEST_SKIP() << "no AVX-512VL";
  std::mt19937 rng(9);
  for (int64_t T : {1, 2, 5, 130, 301}) {
    for (int64_t K : {7, 64, 576, 1537}) {
      const int64_t out = 77;
      auto x = random_vec(static_cast<size_t>(T * K), rng());
      auto w = random_vec(static_cast<size_t>(out * K), rng());
      auto bias = random_vec(static_cast<size_t>(out), rng());
      std::vector<float> wide(static_cast<size_t>(T * out)), narrow(wide.size());
      cpu::set_simd_level(cpu::SimdLevel::Avx2Wide);
      cpu::matmul(x.data(), T, K, w.data(), out, bias.data(), wide.data());
      cpu::set_simd_level(cpu::SimdLevel::Avx2);
      cpu::matmul(x.data(), T, K, w.data(), out, bias.data(), narrow.data());
      ASSERT_EQ(std::memcmp(wide.data(), narrow.data(), wide.size() * sizeof(float)), 0) << "T " << T << " K " << K;
    }
  }
}

// Large enough that matmul packs several blocks of x and hands (block, panel of w) tasks to both threads.
TEST(KernelsCpuTiled, MatmulOverThreadsIsGemmPanelBitwise) {
  SimdGuard guard;
  for (cpu::SimdLevel level : {cpu::SimdLevel::Avx2Wide, cpu::SimdLevel::Avx2, cpu::SimdLevel::Portable}) {
    cpu::set_simd_level(level);
    const int64_t T = 517, K = 601, out = 301;
    auto x = random_vec(static_cast<size_t>(T * K), 71);
    auto w = random_vec(static_cast<size_t>(out * K), 72);
    auto bias = random_vec(static_cast<size_t>(out), 73);
    std::vector<float> ref(static_cast<size_t>(T * out)), one(ref.size());
    cpu::matmul(x.data(), T, K, w.data(), out, bias.data(), ref.data());
    cpu::gemm_panel(x.data(), T, K, w.data(), out, bias.data(), one.data());
    ASSERT_EQ(std::memcmp(ref.data(), one.data(), ref.size() * sizeof(float)), 0) << static_cast<int>(level);
    // A panel of w and a run of rows that start inside the matmul's blocks and panels.
    const int64_t t0 = 250, rows = 111, j0 = 90, n = 107;
    std::vector<float> part(static_cast<size_t>(rows * n));
    cpu::gemm_panel(x.data() + t0 * K, rows, K, w.data() + j0 * K, n, bias.data() + j0, part.data());
    for (int64_t t = 0; t < rows; ++t)
      ASSERT_EQ(std::memcmp(part.data() + t * n, ref.data() + (t0 + t) * out + j0, n * sizeof(float)), 0) << t;
  }
}

TEST(KernelsCpuTiled, GemmPanelIsBitwiseMatmulOnAnyPanelAndRows) {
  SimdGuard guard;
  std::mt19937 rng(5);
  for (cpu::SimdLevel level : {cpu::SimdLevel::Avx2Wide, cpu::SimdLevel::Avx2, cpu::SimdLevel::Portable}) {
    const int simd = static_cast<int>(cpu::set_simd_level(level));
    for (int64_t T : {1, 2, 3, 5, 7, 67, 130}) {
      for (int64_t K : {1, 7, 8, 17, 100, 700, 1537}) {
        for (int64_t out : {1, 2, 5, 13, 37, 50}) {
          const int64_t ldx = K + 3, ldy = out + 2;
          auto x = random_vec(static_cast<size_t>(T * ldx), rng());
          auto w = random_vec(static_cast<size_t>(out * K), rng());
          auto bias = random_vec(static_cast<size_t>(out), rng());
          std::vector<float> ref(static_cast<size_t>(T * ldy), 0.0f), ref_nobias = ref;
          cpu::matmul(x.data(), T, K, w.data(), out, bias.data(), ref.data(), ldx, ldy);
          cpu::matmul(x.data(), T, K, w.data(), out, nullptr, ref_nobias.data(), ldx, ldy);
          // Panels of random widths over random row ranges, each written into its own dense buffer.
          for (int trial = 0; trial < 3; ++trial) {
            const int64_t t0 = static_cast<int64_t>(rng() % T), t1 = t0 + 1 + static_cast<int64_t>(rng() % (T - t0));
            for (int64_t j0 = 0; j0 < out;) {
              const int64_t n = std::min<int64_t>(out - j0, 1 + static_cast<int64_t>(rng() % 14));
              const bool with_bias = trial != 1;
              std::vector<float> y(static_cast<size_t>((t1 - t0) * n));
              cpu::gemm_panel(x.data() + t0 * ldx, t1 - t0, K, w.data() + j0 * K, n,
                              with_bias ? bias.data() + j0 : nullptr, y.data(), ldx, n);
              for (int64_t t = t0; t < t1; ++t)
                for (int64_t j = 0; j < n; ++j) {
                  const float want = (with_bias ? ref : ref_nobias)[t * ldy + j0 + j];
                  const float got = y[(t - t0) * n + j];
                  ASSERT_EQ(std::memcmp(&got, &want, sizeof(float)), 0)
                      << "simd " << simd << " T " << T << " K " << K << " out " << out << " row " << t << " col "
                      << j0 + j << " panel " << j0 << "+" << n;
                }
              j0 += n;
            }
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace kiln
