// GPU sampling agrees with the CPU Sampler: greedy ids, chosen and top-K log-probs; temperature draws follow
// softmax(logits / T) and repeat for the same (seed, step).
#include <gtest/gtest.h>

#include <cmath>

#include "cuda_test_util.h"
#include "runtime/sampler.h"

namespace kiln {
namespace {

using testing::DeviceBuffer;

TEST(CudaSampling, GreedyAndTopLogprobsMatchCpu) {
  KILN_REQUIRE_GPU();
  std::mt19937 rng(41);
  for (int64_t vocab : {7, 50, 1000, 128256})
    for (int64_t rows : {1, 3, 17})
      for (int k : {0, 1, 5, 20}) {
        const int64_t ld = k % 2 == 0 ? vocab : vocab + 3;  // dense rows take the float4 path when they can
        std::vector<float> logits = testing::randn(rows * ld, rng, 3.0f);
        if (rows > 2) logits[2 * ld + vocab / 2] = logits[2 * ld] = 50.0f;  // a tie: the lower id wins
        DeviceBuffer<float> dl(logits);
        DeviceBuffer<int32_t> tok(rows), top_ids(std::max<int64_t>(1, rows * k));
        DeviceBuffer<float> tok_lp(rows), top_lp(std::max<int64_t>(1, rows * k));
        tok.poison();
        cuda::SampleArgs a;
        a.logits = dl.get();
        a.rows = rows;
        a.vocab = vocab;
        a.ld = ld;
        a.top_k = k;
        a.tokens = tok.get();
        a.token_logprobs = tok_lp.get();
        a.top_ids = top_ids.get();
        a.top_logprobs = top_lp.get();
        cuda::sample(a, nullptr);
        const auto g_tok = tok.download();
        const auto g_lp = tok_lp.download();
        const auto g_ids = top_ids.download();
        const auto g_tlp = top_lp.download();
        const int kk = static_cast<int>(std::min<int64_t>(k, vocab));
        for (int64_t r = 0; r < rows; ++r) {
          SamplingParams sp;
          sp.temperature = 0.0f;
          sp.logprobs = kk;
          Sampler s(sp);
          const SampleResult want = s.sample(std::span<const float>(logits.data() + r * ld, vocab));
          ASSERT_EQ(g_tok[r], want.token) << "vocab=" << vocab << " row=" << r;
          EXPECT_NEAR(g_lp[r], want.logprob, 1e-4 + 1e-5 * std::abs(want.logprob));
          for (int j = 0; j < kk; ++j) {
            ASSERT_EQ(g_ids[r * kk + j], want.top[j].id) << "vocab=" << vocab << " row=" << r << " rank=" << j;
            EXPECT_NEAR(g_tlp[r * kk + j], want.top[j].logprob, 1e-4 + 1e-5 * std::abs(want.top[j].logprob));
          }
        }
      }
}

void check_draws(const std::vector<float>& base) {
  const int64_t vocab = static_cast<int64_t>(base.size()), rows = 20000;
  const float temp = 0.7f;
  std::vector<float> logits(rows * vocab);
  std::vector<float> temps(rows, temp);
  std::vector<uint64_t> seeds(rows), steps(rows, 3);
  for (int64_t r = 0; r < rows; ++r) {
    std::copy(base.begin(), base.end(), logits.begin() + r * vocab);
    seeds[r] = 0x9e3779b97f4a7c15ull * static_cast<uint64_t>(r + 1);
  }
  DeviceBuffer<float> dl(logits), dt(temps);
  DeviceBuffer<uint64_t> ds(seeds), dst(steps);
  DeviceBuffer<int32_t> tok(rows), tok2(rows);
  cuda::SampleArgs a;
  a.logits = dl.get();
  a.rows = rows;
  a.vocab = vocab;
  a.temperature = dt.get();
  a.seeds = ds.get();
  a.steps = dst.get();
  a.tokens = tok.get();
  cuda::sample(a, nullptr);
  a.tokens = tok2.get();
  cuda::sample(a, nullptr);
  const auto g = tok.download(), g2 = tok2.download();
  EXPECT_EQ(g, g2) << "same seeds and steps must give the same draws";
  std::vector<double> p(vocab), count(vocab, 0.0);
  double z = 0;
  for (int64_t i = 0; i < vocab; ++i) z += (p[i] = std::exp(base[i] / temp));
  for (int32_t id : g) {
    ASSERT_TRUE(id >= 0 && id < vocab);
    count[id] += 1;
  }
  for (int64_t i = 0; i < vocab; ++i) {
    const double pi = p[i] / z, sd = std::sqrt(pi * (1 - pi) / rows);
    EXPECT_NEAR(count[i] / rows, pi, 5 * sd + 1e-4) << "token " << i;
  }
  // Another step draws differently.
  std::vector<uint64_t> steps2(rows, 4);
  DeviceBuffer<uint64_t> dst2(steps2);
  a.steps = dst2.get();
  cuda::sample(a, nullptr);
  const auto g3 = tok2.download();
  int same = 0;
  for (int64_t r = 0; r < rows; ++r) same += g3[r] == g[r];
  EXPECT_LT(same, rows * 0.8);
}

TEST(CudaSampling, TemperatureDrawsFollowTheDistribution) {
  KILN_REQUIRE_GPU();
  check_draws({1.0f, 0.5f, -0.5f, 2.0f, 0.0f, -3.0f});               // scalar path
  check_draws({1.0f, 0.5f, -0.5f, 2.0f, 0.0f, -3.0f, 1.5f, -1.0f});  // float4 path
}

}  // namespace
}  // namespace kiln
