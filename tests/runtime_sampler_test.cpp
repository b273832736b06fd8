// Sampler: greedy ties, the filters, seeds, and logprobs against a direct computation.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "kiln/error.h"
#include "runtime/sampler.h"

namespace kiln {
namespace {

TEST(Sampler, GreedyPicksArgmaxLowestIdOnTies) {
  Sampler s({0.0f});
  std::vector<float> logits = {0.5f, 2.0f, -1.0f, 2.0f};
  EXPECT_EQ(s.sample(logits).token, 1);
}

TEST(Sampler, LogprobsMatchLogSoftmax) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.logprobs = 3;
  Sampler s(p);
  std::vector<float> logits = {1.0f, 3.0f, 2.0f, -4.0f, 0.0f};
  SampleResult r = s.sample(logits);
  double z = 0;
  for (float v : logits) z += std::exp(static_cast<double>(v));
  ASSERT_EQ(r.top.size(), 3u);
  EXPECT_EQ(r.top[0].id, 1);
  EXPECT_EQ(r.top[1].id, 2);
  EXPECT_EQ(r.top[2].id, 0);
  EXPECT_NEAR(r.top[0].logprob, 3.0 - std::log(z), 1e-12);
  EXPECT_NEAR(r.logprob, r.top[0].logprob, 1e-15);
}

TEST(Sampler, TopKOneIsGreedyAndTopKRestricts) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 2;
  p.seed = 7;
  Sampler s(p);
  std::vector<float> logits = {0.0f, 5.0f, 4.9f, 4.8f};
  std::map<int, int> seen;
  for (int i = 0; i < 2000; ++i) seen[s.sample(logits).token]++;
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_GT(seen[1], 0);
  EXPECT_GT(seen[2], 0);
}

TEST(Sampler, TopPKeepsSmallestSetReachingP) {
  SamplingParams p;
  p.top_p = 0.5f;
  p.seed = 3;
  Sampler s(p);
  // probabilities 0.6, 0.3, 0.1 (logits are their logs): top-p 0.5 keeps only the first.
  std::vector<float> logits = {std::log(0.3f), std::log(0.6f), std::log(0.1f)};
  for (int i = 0; i < 500; ++i) EXPECT_EQ(s.sample(logits).token, 1);
}

TEST(Sampler, MinPDropsUnlikelyTokens) {
  SamplingParams p;
  p.min_p = 0.4f;
  p.seed = 5;
  Sampler s(p);
  std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  std::map<int, int> seen;
  for (int i = 0; i < 3000; ++i) seen[s.sample(logits).token]++;
  EXPECT_EQ(seen.count(2), 0u);
  EXPECT_EQ(seen.count(3), 0u);
  EXPECT_NEAR(seen[0] / 3000.0, 0.5 / 0.8, 0.05);
}

TEST(Sampler, SameSeedSameTokensAndFrequenciesFollowProbabilities) {
  SamplingParams p;
  p.seed = 42;
  std::vector<float> logits = {std::log(0.2f), std::log(0.5f), std::log(0.3f)};
  Sampler a(p), b(p);
  std::map<int, int> seen;
  for (int i = 0; i < 6000; ++i) {
    int t = a.sample(logits).token;
    EXPECT_EQ(t, b.sample(logits).token);
    seen[t]++;
  }
  EXPECT_NEAR(seen[0] / 6000.0, 0.2, 0.03);
  EXPECT_NEAR(seen[1] / 6000.0, 0.5, 0.03);
  EXPECT_NEAR(seen[2] / 6000.0, 0.3, 0.03);
}

TEST(Sampler, TemperatureSharpens) {
  SamplingParams p;
  p.temperature = 0.25f;
  p.seed = 11;
  Sampler s(p);
  std::vector<float> logits = {std::log(0.4f), std::log(0.6f)};
  int ones = 0;
  for (int i = 0; i < 4000; ++i) ones += s.sample(logits).token == 1;
  // p^4 normalised: 0.6^4 / (0.6^4 + 0.4^4) = 0.835
  EXPECT_NEAR(ones / 4000.0, 0.835, 0.03);
}

TEST(Sampler, RejectsBadParameters) {
  EXPECT_THROW(Sampler::validate({-1.0f}), Error);
  SamplingParams p;
  p.top_p = 0.0f;
  EXPECT_THROW(Sampler::validate(p), Error);
  p = {};
  p.top_k = -2;
  EXPECT_THROW(Sampler::validate(p), Error);
  p = {};
  p.logprobs = 100;
  EXPECT_THROW(Sampler::validate(p), Error);
}

TEST(Sampler, RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogits) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.repetition_penalty = 2.0f;
  Sampler s(p);
  // Token 0 (3.0) was seen: 1.5 < 2.0, so token 1 wins; logprobs stay those of the raw logits.
  const std::vector<float> logits = {3.0f, 2.0f, -1.0f};
  const std::vector<int32_t> prompt = {0, 0}, none = {};
  SampleResult r = s.sample(logits, prompt, none);
  EXPECT_EQ(r.token, 1);
  EXPECT_NEAR(r.logprob, log_softmax(logits)[1], 1e-12);
  // A negative logit gets more negative: -1 * 2 < -1.5.
  const std::vector<float> neg = {-1.0f, -1.5f};
  const std::vector<int32_t> seen0 = {0};
  EXPECT_EQ(s.sample(neg, seen0, none).token, 1);
  // Without history it is plain greedy.
  EXPECT_EQ(s.sample(logits, none, none).token, 0);
}

TEST(Sampler, PresenceAndFrequencyPenaltiesCountOutputTokensOnly) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.frequency_penalty = 0.6f;
  Sampler s(p);
  const std::vector<float> logits = {2.0f, 1.0f};
  const std::vector<int32_t> none = {}, once = {0}, twice = {0, 0};
  EXPECT_EQ(s.sample(logits, twice, none).token, 0);  // the prompt does not count
  EXPECT_EQ(s.sample(logits, none, once).token, 0);   // 2 - 0.6 > 1
  EXPECT_EQ(s.sample(logits, none, twice).token, 1);  // 2 - 1.2 < 1
  SamplingParams q;
  q.temperature = 0.0f;
  q.presence_penalty = 1.5f;
  Sampler t(q);
  EXPECT_EQ(t.sample(logits, none, once).token, 1);  // 2 - 1.5 < 1, once is enough
  SamplingParams bad;
  bad.presence_penalty = 3.0f;
  EXPECT_THROW(Sampler::validate(bad), Error);
  bad = {};
  bad.repetition_penalty = 0.0f;
  EXPECT_THROW(Sampler::validate(bad), Error);
}

}  // namespace
}  // namespace kiln
