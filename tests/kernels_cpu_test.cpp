// CPU kernels against naive double-precision loops on odd shapes.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <random>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kiln/error.h"

namespace kiln {
namespace {

std::vector<float> random_vec(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

void check_matmul_odd_shapes() {
  const int64_t Ts[] = {1, 2, 3, 4, 5, 7, 67, 130};
  const int64_t ins[] = {1, 7, 8, 17, 33, 100};
  const int64_t outs[] = {1, 2, 5, 13, 37, 50};
  uint32_t seed = 1;
  for (int64_t T : Ts)
    for (int64_t in : ins)
      for (int64_t out : outs)
        for (int with_bias = 0; with_bias < 2; ++with_bias) {
          // Strided x and y: extra columns that must be neither read into results nor written.
          const int64_t ldx = in + 3, ldy = out + 2;
          auto x = random_vec(static_cast<size_t>(T * ldx), seed++);
          auto w = random_vec(static_cast<size_t>(out * in), seed++);
          auto b = random_vec(static_cast<size_t>(out), seed++);
          std::vector<float> y(static_cast<size_t>(T * ldy), 12345.0f);
          cpu::matmul(x.data(), T, in, w.data(), out, with_bias ? b.data() : nullptr, y.data(), ldx, ldy);
          for (int64_t t = 0; t < T; ++t) {
            for (int64_t o = 0; o < out; ++o) {
              double ref = with_bias ? b[o] : 0.0, mag = std::abs(ref);
              for (int64_t k = 0; k < in; ++k) {
                ref += static_cast<double>(x[t * ldx + k]) * w[o * in + k];
                mag += std::abs(static_cast<double>(x[t * ldx + k]) * w[o * in + k]);
              }
              ASSERT_NEAR(y[t * ldy + o], ref, 1e-6 * mag + 1e-6) << "T=" << T << " in=" << in << " out=" << out;
            }
            for (int64_t o = out; o < ldy; ++o) ASSERT_EQ(y[t * ldy + o], 12345.0f);
          }
        }
}

TEST(KernelsCpu, MatmulMatchesNaiveOnOddShapes) { check_matmul_odd_shapes(); }

TEST(KernelsCpu, MatmulPortableFallback) {
  cpu::set_simd(false);
  check_matmul_odd_shapes();
  auto a = random_vec(37, 5), b = random_vec(37, 6);
  double ref = 0;
  for (int i = 0; i < 37; ++i) ref += static_cast<double>(a[i]) * b[i];
  EXPECT_NEAR(cpu::dot(a.data(), b.data(), 37), ref, 1e-5);
  cpu::set_simd(true);
}

TEST(KernelsCpu, MatmulLargeDecodeAndPrefill) {
  // Big enough to be split over threads and across T blocks.
  for (int64_t T : {1, 70}) {
    const int64_t in = 301, out = 517;
    auto x = random_vec(static_cast<size_t>(T * in), 7);
    auto w = random_vec(static_cast<size_t>(out * in), 8);
    std::vector<float> y(static_cast<size_t>(T * out));
    cpu::matmul(x.data(), T, in, w.data(), out, nullptr, y.data());
    for (int64_t t = 0; t < T; ++t)
      for (int64_t o = 0; o < out; ++o) {
        double ref = 0, mag = 0;
        for (int64_t k = 0; k < in; ++k) {
          ref += static_cast<double>(x[t * in + k]) * w[o * in + k];
          mag += std::abs(static_cast<double>(x[t * in + k]) * w[o * in + k]);
        }
        ASSERT_NEAR(y[t * out + o], ref, 1e-6 * mag + 1e-6);
      }
  }
}

TEST(KernelsCpu, Dot) {
  for (int64_t n : {0, 1, 7, 8, 9, 16, 17, 31, 100}) {
    auto a = random_vec(static_cast<size_t>(n), 3), b = random_vec(static_cast<size_t>(n), 4);
    double ref = 0, mag = 0;
    for (int64_t i = 0; i < n; ++i) {
      ref += static_cast<double>(a[i]) * b[i];
      mag += std::abs(static_cast<double>(a[i]) * b[i]);
    }
    EXPECT_NEAR(cpu::dot(a.data(), b.data(), n), ref, 1e-6 * mag + 1e-7);
  }
}

TEST(KernelsCpu, RmsNormPlainAndAddOne) {
  const int64_t rows = 5, dim = 37;
  auto x = random_vec(rows * dim, 11, 3.0f);
  auto w = random_vec(dim, 12);
  for (int add_one = 0; add_one < 2; ++add_one) {
    std::vector<float> y(rows * dim);
    cpu::rms_norm(x.data(), w.data(), y.data(), rows, dim, 1e-5f, add_one);
    for (int64_t r = 0; r < rows; ++r) {
      double ss = 0;
      for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(x[r * dim + i]) * x[r * dim + i];
      const double inv = 1.0 / std::sqrt(ss / dim + 1e-5);
      for (int64_t i = 0; i < dim; ++i) {
        const double scale = add_one ? 1.0 + w[i] : w[i];
        EXPECT_NEAR(y[r * dim + i], x[r * dim + i] * inv * scale, 1e-5);
      }
    }
  }
  // In place, no weight.
  std::vector<float> z = x;
  cpu::rms_norm(z.data(), nullptr, z.data(), rows, dim, 1e-6f);
  double ss = 0;
  for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(z[i]) * z[i];
  EXPECT_NEAR(ss / dim, 1.0, 1e-4);
}

TEST(KernelsCpu, LayerNorm) {
  const int64_t rows = 3, dim = 29;
  auto x = random_vec(rows * dim, 21, 2.0f);
  for (auto& v : x) v += 1.5f;
  auto w = random_vec(dim, 22), b = random_vec(dim, 23);
  std::vector<float> y(rows * dim);
  cpu::layer_norm(x.data(), w.data(), b.data(), y.data(), rows, dim, 1e-5f);
  for (int64_t r = 0; r < rows; ++r) {
    double mean = 0, var = 0;
    for (int64_t i = 0; i < dim; ++i) mean += x[r * dim + i];
    mean /= dim;
    for (int64_t i = 0; i < dim; ++i) var += (x[r * dim + i] - mean) * (x[r * dim + i] - mean);
    var /= dim;
    for (int64_t i = 0; i < dim; ++i)
      EXPECT_NEAR(y[r * dim + i], (x[r * dim + i] - mean) / std::sqrt(var + 1e-5) * w[i] + b[i], 1e-5);
  }
}

TEST(KernelsCpu, RopeHalfSplitInterleavedAndPartial) {
  const int64_t T = 5, heads = 3, head_dim = 12;
  const int64_t ld = heads * head_dim + 4;  // strided rows, as inside a fused qkv buffer
  const int64_t positions[T] = {0, 1, 7, 40, 1000};
  for (int64_t rotary_dim : {12, 8}) {
    for (int interleaved = 0; interleaved < 2; ++interleaved) {
      RopeConfig cfg;
      cfg.theta = 500.0;
      auto inv = cpu::rope_inv_freq(cfg, rotary_dim);
      ASSERT_EQ(static_cast<int64_t>(inv.size()), rotary_dim / 2);
      const int64_t half = rotary_dim / 2;
      std::vector<float> c(T * half), s(T * half);
      cpu::rope_tables(inv, positions, T, c.data(), s.data());
      auto x = random_vec(T * ld, 31);
      auto y = x;
      cpu::rope(y.data(), T, heads, head_dim, rotary_dim, interleaved, c.data(), s.data(), ld);
      for (int64_t t = 0; t < T; ++t)
        for (int64_t h = 0; h < heads; ++h) {
          const float* xv = x.data() + t * ld + h * head_dim;
          const float* yv = y.data() + t * ld + h * head_dim;
          for (int64_t i = 0; i < half; ++i) {
            const double freq = std::pow(500.0, -2.0 * i / rotary_dim);
            const double a = positions[t] * freq;
            const int64_t i0 = interleaved ? 2 * i : i, i1 = interleaved ? 2 * i + 1 : i + half;
            EXPECT_NEAR(yv[i0], xv[i0] * std::cos(a) - xv[i1] * std::sin(a), 2e-5);
            EXPECT_NEAR(yv[i1], xv[i1] * std::cos(a) + xv[i0] * std::sin(a), 2e-5);
          }
          for (int64_t i = rotary_dim; i < head_dim; ++i) EXPECT_EQ(yv[i], xv[i]);
        }
      for (int64_t t = 0; t < T; ++t)
        for (int64_t i = heads * head_dim; i < ld; ++i) EXPECT_EQ(y[t * ld + i], x[t * ld + i]);
    }
  }
}

TEST(KernelsCpu, RopeScaling) {
  RopeConfig base;
  base.theta = 10000.0;
  const auto plain = cpu::rope_inv_freq(base, 16);
  RopeConfig lin = base;
  lin.scaling = RopeScaling::Linear;
  lin.factor = 4.0;
  const auto linear = cpu::rope_inv_freq(lin, 16);
  for (size_t i = 0; i < plain.size(); ++i) EXPECT_DOUBLE_EQ(linear[i], plain[i] / 4.0);

  RopeConfig l3 = base;
  l3.scaling = RopeScaling::Llama3;
  l3.factor = 8.0;
  l3.low_freq_factor = 1.0;
  l3.high_freq_factor = 4.0;
  l3.original_max_position = 64;
  const auto scaled = cpu::rope_inv_freq(l3, 16);
  // Wavelengths 2*pi*10000^(2i/16): 6.28 (kept, < 64/4), 19.9 and 62.8 (blended, in [16, 64]), the rest
  // (> 64) divided by 8.
  int kept = 0, blended = 0, divided = 0;
  for (size_t i = 0; i < plain.size(); ++i) {
    const double wavelen = 2 * std::numbers::pi / plain[i];
    if (wavelen < 16) {
      EXPECT_DOUBLE_EQ(scaled[i], plain[i]);
      ++kept;
    } else if (wavelen > 64) {
      EXPECT_DOUBLE_EQ(scaled[i], plain[i] / 8.0);
      ++divided;
    } else {
      const double smooth = (64.0 / wavelen - 1.0) / 3.0;
      EXPECT_NEAR(scaled[i], (1 - smooth) * plain[i] / 8.0 + smooth * plain[i], 1e-15);
      EXPECT_LT(scaled[i], plain[i]);
      EXPECT_GT(scaled[i], plain[i] / 8.0);
      ++blended;
    }
  }
  EXPECT_EQ(kept, 1);
  EXPECT_EQ(blended, 2);
  EXPECT_EQ(divided, 5);

  RopeConfig ff = base;
  ff.freq_factors = {1, 2, 3, 4, 5, 6, 7, 8};
  const auto factored = cpu::rope_inv_freq(ff, 16);
  for (size_t i = 0; i < plain.size(); ++i) EXPECT_DOUBLE_EQ(factored[i], plain[i] / (i + 1));
  EXPECT_THROW(cpu::rope_inv_freq(ff, 12), Error);
}

// Naive attention in double for one configuration (optionally with ALiBi slopes and score soft-capping).
void check_attention(int64_t T, int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t pos0, int64_t window,
                     uint32_t seed, const std::vector<float>& slopes = {}, float softcap = 0.0f) {
  const int64_t capacity = pos0 + T + 3;
  const int64_t ldq = heads * head_dim + 5, ldo = heads * head_dim + 1;
  auto q = random_vec(T * ldq, seed);
  auto k = random_vec(kv_heads * capacity * head_dim, seed + 1);
  auto v = random_vec(kv_heads * capacity * head_dim, seed + 2);
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  std::vector<float> out(T * ldo, 777.0f);
  cpu::attention(q.data(), ldq, T, heads, head_dim, k.data(), v.data(), kv_heads, capacity, pos0, window, scale,
                 out.data(), ldo, slopes.empty() ? nullptr : slopes.data(), softcap);
  const int64_t group = heads / kv_heads;
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t kvh = h / group, p = pos0 + t;
      std::vector<double> s;
      std::vector<int64_t> js;
      for (int64_t j = 0; j <= p; ++j) {
        if (window > 0 && p - j >= window) continue;
        double d = 0;
        for (int64_t i = 0; i < head_dim; ++i)
          d += static_cast<double>(q[t * ldq + h * head_dim + i]) * k[(kvh * capacity + j) * head_dim + i];
        d *= scale;
        if (softcap > 0) d = softcap * std::tanh(d / softcap);
        if (!slopes.empty()) d += slopes[h] * static_cast<double>(j);  // any per-row offset is the same
        s.push_back(d);
        js.push_back(j);
      }
      double mx = -1e300, sum = 0;
      for (double x : s) mx = std::max(mx, x);
      for (double& x : s) sum += (x = std::exp(x - mx));
      for (int64_t i = 0; i < head_dim; ++i) {
        double ref = 0;
        for (size_t n = 0; n < s.size(); ++n) ref += s[n] / sum * v[(kvh * capacity + js[n]) * head_dim + i];
        ASSERT_NEAR(out[t * ldo + h * head_dim + i], ref, 2e-5)
            << "T=" << T << " heads=" << heads << "/" << kv_heads << " pos0=" << pos0 << " window=" << window;
      }
    }
    ASSERT_EQ(out[t * ldo + heads * head_dim], 777.0f);
  }
}

TEST(KernelsCpu, AttentionMhaGqaMqaWindow) {
  check_attention(7, 4, 4, 12, 0, 0, 100);   // MHA prefill
  check_attention(1, 6, 2, 16, 9, 0, 200);   // GQA decode
  check_attention(5, 6, 1, 8, 3, 0, 300);    // MQA chunk after a prefix
  check_attention(33, 4, 2, 12, 0, 8, 400);  // sliding window within a prefill
  check_attention(1, 4, 2, 12, 40, 8, 500);  // sliding window decode
  check_attention(3, 3, 3, 5, 2, 1, 600);    // window of one: only itself
}

TEST(KernelsCpu, AttentionAlibiAndSoftcap) {
  check_attention(9, 6, 6, 8, 0, 0, 700, cpu::alibi_slopes(6, 8.0));  // BLOOM/MPT style, 6 heads
  check_attention(1, 4, 4, 8, 20, 0, 710, cpu::alibi_slopes(4, 8.0));  // decode far from the keys
  check_attention(4, 4, 2, 16, 5, 0, 720, {}, 2.0f);                    // Gemma 2 soft-capping, GQA
  check_attention(12, 4, 2, 16, 0, 5, 730, {}, 1.5f);                   // with a sliding window
}

// MPT's slopes (bias_max 8) equal BLOOM's closed form: base 2^(-8/n') over the power of two n' <= n, then
// the odd powers of 2^(-4/n') for the remaining heads.
TEST(KernelsCpu, AlibiSlopesMatchBloomAndMpt) {
  for (int64_t n = 1; n <= 40; ++n) {
    int64_t p2 = 1;
    while (p2 * 2 <= n) p2 *= 2;
    std::vector<double> want;
    for (int64_t i = 1; i <= p2; ++i) want.push_back(std::pow(std::pow(2.0, -8.0 / p2), i));
    for (int64_t i = 1; static_cast<int64_t>(want.size()) < n; i += 2) want.push_back(std::pow(std::pow(2.0, -4.0 / p2), i));
    const auto got = cpu::alibi_slopes(n, 8.0);
    ASSERT_EQ(static_cast<int64_t>(got.size()), n);
    for (int64_t h = 0; h < n; ++h) EXPECT_FLOAT_EQ(got[h], static_cast<float>(want[h])) << "n=" << n << " h=" << h;
  }
  // Another bias_max scales the exponents: 16 heads, bias_max 4 -> 2^(-i/4).
  const auto s = cpu::alibi_slopes(16, 4.0);
  for (int64_t i = 1; i <= 16; ++i) EXPECT_FLOAT_EQ(s[i - 1], static_cast<float>(std::pow(2.0, -i / 4.0)));
}

TEST(KernelsCpu, PositionEmbeddingScaleClampSoftcap) {
  std::vector<float> table = {1, 2, 3, 10, 20, 30, 100, 200, 300};  // 3 positions of dim 3
  std::vector<float> x(6, 0.5f);
  const int64_t pos[2] = {2, 0};
  cpu::add_position_embedding(table.data(), 3, 3, pos, 2, x.data());
  EXPECT_EQ(x, (std::vector<float>{100.5f, 200.5f, 300.5f, 1.5f, 2.5f, 3.5f}));
  const int64_t bad[1] = {3};
  EXPECT_THROW(cpu::add_position_embedding(table.data(), 3, 3, bad, 1, x.data()), Error);
  std::vector<float> y = {-3, -0.5f, 0, 0.5f, 3};
  cpu::clamp(y.data(), 5, -1, 1);
  EXPECT_EQ(y, (std::vector<float>{-1, -0.5f, 0, 0.5f, 1}));
  cpu::scale_inplace(y.data(), 5, 2);
  EXPECT_EQ(y, (std::vector<float>{-2, -1, 0, 1, 2}));
  cpu::softcap(y.data(), 5, 3);
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(y[i], 3 * std::tanh((i - 2) / 3.0), 1e-6);
}

TEST(KernelsCpu, GatedActivationsAndSoftmax) {
  const int64_t rows = 3, n = 19, ld = 2 * n + 1;
  auto gu = random_vec(rows * ld, 41, 2.0f);
  for (auto act : {cpu::Activation::SiLU, cpu::Activation::GeluTanh, cpu::Activation::GeluErf}) {
    std::vector<float> out(rows * n);
    cpu::gated_activation(gu.data(), gu.data() + n, out.data(), rows, n, ld, act);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < n; ++i) {
        const double g = gu[r * ld + i], u = gu[r * ld + n + i];
        double a;
        if (act == cpu::Activation::SiLU) a = g / (1 + std::exp(-g));
        else if (act == cpu::Activation::GeluTanh)
          a = 0.5 * g * (1 + std::tanh(std::sqrt(2 / std::numbers::pi) * (g + 0.044715 * g * g * g)));
        else a = 0.5 * g * (1 + std::erf(g / std::sqrt(2.0)));
        EXPECT_NEAR(out[r * n + i], a * u, 1e-5);
      }
  }
  auto x = random_vec(rows * n, 42, 5.0f);
  auto sm = x, lsm = x;
  cpu::softmax(sm.data(), rows, n);
  cpu::log_softmax(lsm.data(), rows, n);
  for (int64_t r = 0; r < rows; ++r) {
    double mx = -1e300, sum = 0;
    for (int64_t i = 0; i < n; ++i) mx = std::max<double>(mx, x[r * n + i]);
    for (int64_t i = 0; i < n; ++i) sum += std::exp(x[r * n + i] - mx);
    for (int64_t i = 0; i < n; ++i) {
      const double lp = x[r * n + i] - mx - std::log(sum);
      EXPECT_NEAR(lsm[r * n + i], lp, 1e-5);
      EXPECT_NEAR(sm[r * n + i], std::exp(lp), 1e-6);
    }
  }
}

TEST(KernelsCpu, EmbeddingAndRangeCheck) {
  const int64_t vocab = 11, dim = 5;
  auto table = random_vec(vocab * dim, 51);
  const int32_t ids[] = {3, 0, 10, 3};
  std::vector<float> out(4 * dim);
  cpu::embedding(table.data(), vocab, dim, ids, 4, out.data());
  for (int t = 0; t < 4; ++t)
    for (int i = 0; i < dim; ++i) EXPECT_EQ(out[t * dim + i], table[ids[t] * dim + i]);
  const int32_t bad[] = {1, 11};
  EXPECT_THROW(cpu::embedding(table.data(), vocab, dim, bad, 2, out.data()), Error);
  const int32_t neg[] = {-1};
  EXPECT_THROW(cpu::embedding(table.data(), vocab, dim, neg, 1, out.data()), Error);
}

}  // namespace
}  // namespace kiln
