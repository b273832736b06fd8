// GPU sampling agrees with the CPU Sampler: greedy ids, chosen and top-K log-probs; temperature draws follow
// softmax(logits / T) and repeat for the same (seed, step).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>

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

// ---------------------------------------------------------------- per-row parameters (the executor's path)

// The CPU Sampler's kept set for `p` (sampler.cpp, restated): candidates by logit (lower id on ties), top-k,
// probabilities at the temperature renormalized over the top-k set, top-p, min-p; each kept token with its
// renormalized probability.
std::vector<std::pair<int32_t, double>> kept_set(const std::vector<float>& l, const SamplingParams& p) {
  const int32_t n = static_cast<int32_t>(l.size());
  std::vector<int32_t> order(n);
  for (int32_t i = 0; i < n; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return l[a] > l[b]; });
  int32_t keep = p.top_k > 0 && p.top_k < n ? p.top_k : n;
  std::vector<double> pr(keep);
  double sum = 0;
  for (int32_t i = 0; i < keep; ++i) sum += pr[i] = std::exp((double(l[order[i]]) - l[order[0]]) / p.temperature);
  for (double& v : pr) v /= sum;
  if (p.top_p < 1.0f) {
    double cum = 0;
    for (int32_t i = 0; i < keep; ++i)
      if ((cum += pr[i]) >= p.top_p) {
        keep = i + 1;
        break;
      }
  }
  if (p.min_p > 0.0f) {
    int32_t cut = 1;
    while (cut < keep && pr[cut] >= p.min_p * pr[0]) ++cut;
    keep = cut;
  }
  double total = 0;
  for (int32_t i = 0; i < keep; ++i) total += pr[i];
  std::vector<std::pair<int32_t, double>> out;
  for (int32_t i = 0; i < keep; ++i) out.push_back({order[i], pr[i] / total});
  return out;
}

cuda::SampleRowParams row_params(const SamplingParams& p, uint64_t seed, uint64_t step) {
  cuda::SampleRowParams q;
  q.temperature = p.temperature;
  q.top_k = p.top_k;
  q.top_p = p.top_p;
  q.min_p = p.min_p;
  q.repetition_penalty = p.repetition_penalty;
  q.presence_penalty = p.presence_penalty;
  q.frequency_penalty = p.frequency_penalty;
  q.seed = seed;
  q.step = step;
  return q;
}

// `rows` copies of one logit row sampled with `p`, each row its own seed; the ids drawn.
std::vector<int32_t> draw_rows(const std::vector<float>& base, const SamplingParams& p, int64_t rows,
                               uint64_t step = 7) {
  const int64_t vocab = static_cast<int64_t>(base.size());
  std::vector<float> logits(rows * vocab);
  std::vector<cuda::SampleRowParams> params(rows);
  for (int64_t r = 0; r < rows; ++r) {
    std::copy(base.begin(), base.end(), logits.begin() + r * vocab);
    params[r] = row_params(p, 0x9e3779b97f4a7c15ull * static_cast<uint64_t>(r + 1), step);
  }
  DeviceBuffer<float> dl(logits);
  DeviceBuffer<cuda::SampleRowParams> dp(params);
  DeviceBuffer<int32_t> tok(rows);
  tok.poison();
  cuda::SampleArgs a;
  a.logits = dl.get();
  a.rows = rows;
  a.vocab = vocab;
  a.params = dp.get();
  a.tokens = tok.get();
  cuda::sample(a, nullptr);
  return tok.download();
}

// Every draw is in the CPU sampler's kept set, and the draws follow its renormalized probabilities (each token's
// frequency within 5 standard deviations): a kernel that ignored a filter, the temperature or the
// renormalization fails this.
void check_filtered_draws(const std::vector<float>& base, const SamplingParams& p, int64_t rows, bool frequencies) {
  const auto kept = kept_set(base, p);
  std::vector<double> want(base.size(), 0.0);
  for (const auto& [id, pr] : kept) want[id] = pr;
  // The restated reference agrees with the CPU Sampler: its draws stay inside the set.
  Sampler cpu(p);
  for (int i = 0; i < 2000; ++i) {
    const int32_t t = cpu.sample(base).token;
    ASSERT_GT(want[t], 0.0) << "the CPU sampler drew " << t << " outside the restated kept set";
  }
  const auto g = draw_rows(base, p, rows);
  std::vector<double> count(base.size(), 0.0);
  for (int32_t id : g) {
    ASSERT_TRUE(id >= 0 && id < static_cast<int32_t>(base.size())) << id;
    ASSERT_GT(want[id], 0.0) << "drew token " << id << " outside the kept set (top_k " << p.top_k << ", top_p "
                             << p.top_p << ", min_p " << p.min_p << ", " << kept.size() << " kept)";
    count[id] += 1;
  }
  if (!frequencies) return;
  for (size_t i = 0; i < base.size(); ++i) {
    const double pi = want[i], sd = std::sqrt(pi * (1 - pi) / rows);
    EXPECT_NEAR(count[i] / rows, pi, 5 * sd + 2e-4)
        << "token " << i << " (top_k " << p.top_k << ", top_p " << p.top_p << ", min_p " << p.min_p << ")";
  }
  EXPECT_EQ(g, draw_rows(base, p, rows)) << "the same seeds and step must repeat";
}

TEST(CudaSampling, TopKTopPMinPDrawFromTheCpuKeptSet) {
  KILN_REQUIRE_GPU();
  std::mt19937 rng(7);
  for (int64_t vocab : {64, 63}) {  // float4 and scalar paths
    const std::vector<float> base = testing::randn(vocab, rng, 1.5f);
    for (SamplingParams p :
         {SamplingParams{0.8f, 5}, SamplingParams{0.8f, 0, 0.7f}, SamplingParams{1.3f, 0, 1.0f, 0.2f},
          SamplingParams{0.6f, 12, 0.85f, 0.05f}, SamplingParams{1.0f, 40, 0.95f}}) {
      SCOPED_TRACE("vocab " + std::to_string(vocab));
      check_filtered_draws(base, p, 20000, true);
    }
  }
  // A full-size vocabulary (membership only).
  std::vector<float> big = testing::randn(128256, rng, 2.0f);
  for (SamplingParams p : {SamplingParams{0.7f, 50, 0.9f}, SamplingParams{1.0f, 0, 0.5f},
                           SamplingParams{1.0f, 0, 1.0f, 0.3f}, SamplingParams{0.9f, 1000}})
    check_filtered_draws(big, p, 512, false);
}

TEST(CudaSampling, TopKTiesKeepTheLowerIds) {
  KILN_REQUIRE_GPU();
  // Six tokens tie for first: top-k 3 keeps the three lowest ids (the CPU sort's order), uniformly.
  std::vector<float> base(100, -1.0f);
  for (int32_t id : {90, 11, 40, 7, 63, 25}) base[id] = 4.0f;
  SamplingParams p{1.0f, 3};
  check_filtered_draws(base, p, 20000, true);
  // And top-p over a tie: 0.5 of six equal tokens keeps the three lowest ids.
  check_filtered_draws(base, SamplingParams{1.0f, 0, 0.45f}, 20000, true);
}

TEST(CudaSampling, PenaltiesGiveTheCpuGreedyChoiceAndRawLogprobs) {
  KILN_REQUIRE_GPU();
  std::mt19937 rng(3);
  for (int64_t vocab : {1000, 999}) {
    const int64_t rows = 24;
    std::vector<float> logits = testing::randn(rows * vocab, rng, 2.0f);
    std::vector<cuda::SampleRowParams> params(rows);
    std::vector<cuda::PenaltyToken> entries;
    std::vector<std::vector<int32_t>> prompts(rows), outputs(rows);
    std::vector<SamplingParams> sps(rows);
    std::uniform_int_distribution<int32_t> any(0, static_cast<int32_t>(vocab) - 1);
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = logits.data() + r * vocab;
      std::vector<int32_t> order(vocab);
      for (int32_t i = 0; i < vocab; ++i) order[i] = i;
      std::partial_sort(order.begin(), order.begin() + 4, order.end(),
                        [&](int32_t a, int32_t b) { return row[a] > row[b]; });
      // The best tokens are in the prompt and output, so the penalties change the choice.
      prompts[r] = {order[0], any(rng), order[2], any(rng)};
      outputs[r] = {order[1], order[0], order[1], any(rng), order[3]};
      SamplingParams& sp = sps[r];
      sp.temperature = 0.0f;
      sp.repetition_penalty = r % 3 == 0 ? 1.0f : 1.5f;
      sp.presence_penalty = r % 3 == 1 ? 0.0f : 0.7f;
      sp.frequency_penalty = r % 2 ? 0.4f : -0.3f;
      sp.logprobs = 3;
      params[r] = row_params(sp, 0, 0);
      // The compact list the executor keeps: distinct tokens with their output counts.
      std::map<int32_t, std::pair<int32_t, int32_t>> stats;
      for (int32_t t : prompts[r]) stats[t].second = 1;
      for (int32_t t : outputs[r]) ++stats[t].first;
      params[r].penalty_begin = static_cast<int32_t>(entries.size());
      for (const auto& [t, st] : stats) entries.push_back({t, st.first, st.second, 0.0f});
      params[r].penalty_count = static_cast<int32_t>(entries.size()) - params[r].penalty_begin;
    }
    DeviceBuffer<float> dl(logits);
    DeviceBuffer<cuda::SampleRowParams> dp(params);
    DeviceBuffer<cuda::PenaltyToken> de(entries);
    DeviceBuffer<int32_t> tok(rows), top_ids(rows * 3);
    DeviceBuffer<float> tok_lp(rows), top_lp(rows * 3);
    cuda::SampleArgs a;
    a.logits = dl.get();
    a.rows = rows;
    a.vocab = vocab;
    a.params = dp.get();
    a.penalties = de.get();
    a.top_k = 3;
    a.tokens = tok.get();
    a.token_logprobs = tok_lp.get();
    a.top_ids = top_ids.get();
    a.top_logprobs = top_lp.get();
    cuda::sample(a, nullptr);
    const auto g_tok = tok.download();
    const auto g_lp = tok_lp.download();
    const auto g_top = top_ids.download();
    EXPECT_EQ(dl.download(), logits) << "the penalized rows must be restored";
    int changed = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const std::span<const float> row(logits.data() + r * vocab, vocab);
      Sampler cpu(sps[r]);
      const SampleResult want = cpu.sample(row, prompts[r], outputs[r]);
      ASSERT_EQ(g_tok[r], want.token) << "vocab " << vocab << " row " << r;
      EXPECT_NEAR(g_lp[r], want.logprob, 1e-4 + 1e-5 * std::abs(want.logprob));
      for (int j = 0; j < 3; ++j) EXPECT_EQ(g_top[r * 3 + j], want.top[j].id);
      Sampler plain(SamplingParams{0.0f});
      changed += plain.sample(row).token != want.token;
    }
    EXPECT_GT(changed, rows / 3) << "the penalties should change many greedy choices";
  }
}

TEST(CudaSampling, PenalizedDrawsFollowThePenalizedDistribution) {
  KILN_REQUIRE_GPU();
  // Temperature draws with a frequency penalty (and a top-p filter) follow the penalized logits.
  const std::vector<float> base = {2.0f, 1.5f, 1.0f, 0.5f, 0.0f, -0.5f, 1.8f, 0.2f};
  const int64_t rows = 20000, vocab = 8;
  for (float top_p : {1.0f, 0.8f}) {
    SamplingParams sp{0.9f, 0, top_p};
    sp.frequency_penalty = 0.6f;
    sp.repetition_penalty = 1.2f;
    const std::vector<int32_t> prompt = {3}, output = {0, 0, 6};
    std::vector<float> pen = base;
    // As the CPU sampler: repetition over prompt and output, then the frequency penalty over the output.
    for (int32_t t : {3, 0, 6}) pen[t] = pen[t] < 0 ? pen[t] * 1.2f : pen[t] / 1.2f;
    pen[0] -= 0.6f * 2;
    pen[6] -= 0.6f * 1;
    std::vector<float> logits(rows * vocab);
    std::vector<cuda::SampleRowParams> params(rows);
    std::vector<cuda::PenaltyToken> entries;
    for (int64_t r = 0; r < rows; ++r) {
      std::copy(base.begin(), base.end(), logits.begin() + r * vocab);
      params[r] = row_params(sp, 1000 + r, 1);
      params[r].penalty_begin = static_cast<int32_t>(entries.size());
      params[r].penalty_count = 3;
      entries.push_back({0, 2, 0, 0.0f});
      entries.push_back({3, 0, 1, 0.0f});
      entries.push_back({6, 1, 0, 0.0f});
    }
    DeviceBuffer<float> dl(logits);
    DeviceBuffer<cuda::SampleRowParams> dp(params);
    DeviceBuffer<cuda::PenaltyToken> de(entries);
    DeviceBuffer<int32_t> tok(rows);
    cuda::SampleArgs a;
    a.logits = dl.get();
    a.rows = rows;
    a.vocab = vocab;
    a.params = dp.get();
    a.penalties = de.get();
    a.tokens = tok.get();
    cuda::sample(a, nullptr);
    const auto g = tok.download();
    const auto kept = kept_set(pen, sp);
    std::vector<double> want(vocab, 0.0), count(vocab, 0.0);
    for (const auto& [id, pr] : kept) want[id] = pr;
    for (int32_t id : g) {
      ASSERT_GT(want[id], 0.0) << "token " << id << " is outside the kept set";
      count[id] += 1;
    }
    for (int64_t i = 0; i < vocab; ++i) {
      const double pi = want[i], sd = std::sqrt(pi * (1 - pi) / rows);
      EXPECT_NEAR(count[i] / rows, pi, 5 * sd + 2e-4) << "token " << i << " top_p " << top_p;
    }
  }
}

}  // namespace
}  // namespace kiln
