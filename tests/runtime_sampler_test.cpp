// Sampler: greedy ties, the filters, seeds, logprobs against a direct computation, the penalties' statistics, and
// the draw itself: Philox's known answers, a function of (seed, step) alone, and chi-square tests that draws follow
// softmax(logits / T) over the kept set.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <random>
#include <thread>

#include "core/philox.h"
#include "core/sampling_math.h"
#include "kiln/error.h"
#include "runtime/sampler.h"

namespace kiln {
namespace {

// `n` draws from one sampler, one per step (each token accepted, as a generation loop does).
std::map<int32_t, int> draw_many(Sampler& s, const std::vector<float>& logits, int n) {
  std::map<int32_t, int> seen;
  for (int i = 0; i < n; ++i) {
    const int32_t t = s.sample(logits).token;
    s.accept(t);
    seen[t]++;
  }
  return seen;
}

// Pearson's chi-square of observed counts against expected probabilities (every expected count must be >= 5).
double chi_square(const std::vector<double>& counts, const std::vector<double>& probs) {
  double n = 0.0;
  for (double c : counts) n += c;
  double chi = 0.0;
  for (size_t i = 0; i < counts.size(); ++i) {
    const double e = n * probs[i];
    EXPECT_GE(e, 5.0) << "bin " << i << " is too small for the test";
    chi += (counts[i] - e) * (counts[i] - e) / e;
  }
  return chi;
}

// The 0.999 quantile of chi-square with `dof` degrees of freedom (Wilson-Hilferty; within 1% for dof >= 3).
double chi_square_999(int dof) {
  const double z = 3.090232, k = dof, c = 2.0 / (9.0 * k);
  return k * std::pow(1.0 - c + z * std::sqrt(c), 3.0);
}

std::vector<double> softmax_at(const std::vector<float>& logits, double temperature) {
  std::vector<double> p(logits.size());
  const double mx = *std::max_element(logits.begin(), logits.end());
  double z = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) z += p[i] = std::exp((logits[i] - mx) / temperature);
  for (double& v : p) v /= z;
  return p;
}

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
  std::map<int32_t, int> seen = draw_many(s, logits, 2000);
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_GT(seen[1], 0);
  EXPECT_GT(seen[2], 0);
  p.top_k = 1;
  Sampler one(p);
  seen = draw_many(one, logits, 200);
  EXPECT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[1], 200);
}

TEST(Sampler, TopPKeepsSmallestSetReachingP) {
  SamplingParams p;
  p.top_p = 0.5f;
  p.seed = 3;
  Sampler s(p);
  // probabilities 0.6, 0.3, 0.1 (logits are their logs): top-p 0.5 keeps only the first.
  std::vector<float> logits = {std::log(0.3f), std::log(0.6f), std::log(0.1f)};
  EXPECT_EQ(draw_many(s, logits, 500)[1], 500);
  // top-p 0.8 keeps the first two, in proportion 2:1.
  p.top_p = 0.8f;
  Sampler two(p);
  std::map<int32_t, int> seen = draw_many(two, logits, 6000);
  EXPECT_EQ(seen.count(2), 0u);
  EXPECT_NEAR(seen[1] / 6000.0, 2.0 / 3.0, 0.03);
}

TEST(Sampler, MinPDropsUnlikelyTokens) {
  SamplingParams p;
  p.min_p = 0.4f;
  p.seed = 5;
  Sampler s(p);
  std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  std::map<int32_t, int> seen = draw_many(s, logits, 3000);
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
    const int32_t t = a.sample(logits).token;
    EXPECT_EQ(t, b.sample(logits).token);
    a.accept(t);
    b.accept(t);
    seen[t]++;
  }
  EXPECT_NEAR(seen[0] / 6000.0, 0.2, 0.03);
  EXPECT_NEAR(seen[1] / 6000.0, 0.5, 0.03);
  EXPECT_NEAR(seen[2] / 6000.0, 0.3, 0.03);
}

TEST(Sampler, OtherSeedsDrawOtherTokens) {
  const std::vector<float> logits = {0.1f, 0.0f, -0.2f, 0.3f, 0.05f, -0.1f, 0.2f, 0.0f};
  auto tokens = [&](uint64_t seed) {
    SamplingParams p;
    p.seed = seed;
    Sampler s(p);
    std::vector<int32_t> out;
    for (int i = 0; i < 64; ++i) {
      out.push_back(s.sample(logits).token);
      s.accept(out.back());
    }
    return out;
  };
  const std::vector<int32_t> a = tokens(1), b = tokens(2);
  EXPECT_EQ(a, tokens(1));
  int same = 0;
  for (size_t i = 0; i < a.size(); ++i) same += a[i] == b[i];
  EXPECT_LT(same, 32) << "two seeds should agree about as often as chance (about 1 in 7 here)";
}

TEST(Sampler, TemperatureSharpens) {
  SamplingParams p;
  p.temperature = 0.25f;
  p.seed = 11;
  Sampler s(p);
  std::vector<float> logits = {std::log(0.4f), std::log(0.6f)};
  // p^4 normalised: 0.6^4 / (0.6^4 + 0.4^4) = 0.835
  EXPECT_NEAR(draw_many(s, logits, 4000)[1] / 4000.0, 0.835, 0.03);
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

TEST(Sampler, SeedBehavesAsAnOptional) {
  SamplingParams p;
  EXPECT_FALSE(p.seed);
  EXPECT_FALSE(p.seed.has_value());
  p.seed = 0;  // zero is a seed like any other
  EXPECT_TRUE(p.seed);
  EXPECT_EQ(*p.seed, 0u);
  p.seed = 0xfedcba9876543210ull;
  EXPECT_EQ(*p.seed, 0xfedcba9876543210ull);
  p.seed = std::nullopt;
  EXPECT_FALSE(p.seed);
  EXPECT_EQ(p.seed.value_or(5), 5u);
  // An unset seed samples as seed 0 does.
  const std::vector<float> logits = {0.3f, 0.1f, 0.0f, 0.2f, -0.1f};
  SamplingParams zero;
  zero.seed = 0;
  Sampler a(p), b(zero);
  for (int i = 0; i < 50; ++i) {
    const int32_t t = a.sample(logits).token;
    ASSERT_EQ(t, b.sample(logits).token);
    a.accept(t);
    b.accept(t);
  }
}

TEST(Sampler, RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogits) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.repetition_penalty = 2.0f;
  // Token 0 (3.0) was seen: 1.5 < 2.0, so token 1 wins; logprobs stay those of the raw logits.
  const std::vector<float> logits = {3.0f, 2.0f, -1.0f};
  Sampler s(p);
  s.add_prompt(std::vector<int32_t>{0, 0});
  SampleResult r = s.sample(logits);
  EXPECT_EQ(r.token, 1);
  EXPECT_NEAR(r.logprob, log_softmax(logits)[1], 1e-12);
  // A negative logit gets more negative: -1 * 2 < -1.5.
  const std::vector<float> neg = {-1.0f, -1.5f};
  Sampler t(p);
  t.add_prompt(std::vector<int32_t>{0});
  EXPECT_EQ(t.sample(neg).token, 1);
  // Without history it is plain greedy.
  EXPECT_EQ(Sampler(p).sample(logits).token, 0);
  // Output tokens count too.
  Sampler u(p);
  u.accept(0);
  EXPECT_EQ(u.sample(logits).token, 1);
}

TEST(Sampler, PresenceAndFrequencyPenaltiesCountOutputTokensOnly) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.frequency_penalty = 0.6f;
  const std::vector<float> logits = {2.0f, 1.0f};
  Sampler s(p);
  s.add_prompt(std::vector<int32_t>{0, 0});
  EXPECT_EQ(s.sample(logits).token, 0);  // the prompt does not count
  s.accept(0);
  EXPECT_EQ(s.sample(logits).token, 0);  // 2 - 0.6 > 1
  s.accept(0);
  EXPECT_EQ(s.sample(logits).token, 1);  // 2 - 1.2 < 1
  SamplingParams q;
  q.temperature = 0.0f;
  q.presence_penalty = 1.5f;
  Sampler t(q);
  t.accept(0);
  EXPECT_EQ(t.sample(logits).token, 1);  // 2 - 1.5 < 1, once is enough
  SamplingParams bad;
  bad.presence_penalty = 3.0f;
  EXPECT_THROW(Sampler::validate(bad), Error);
  bad = {};
  bad.repetition_penalty = 0.0f;
  EXPECT_THROW(Sampler::validate(bad), Error);
}

TEST(Sampler, KeepsPenaltyStatisticsIncrementally) {
  SamplingParams p;
  p.frequency_penalty = 0.5f;
  Sampler s(p);
  s.add_prompt(std::vector<int32_t>{5, 3, 5});
  for (int32_t t : {3, 9, 9, 5, 9}) s.accept(t);
  EXPECT_EQ(s.step(), 5u);
  const std::span<const SamplePenalty> e = s.penalties();
  ASSERT_EQ(e.size(), 3u);  // distinct tokens in order of first appearance
  EXPECT_EQ(e[0].token, 5);
  EXPECT_EQ(e[0].in_prompt, 1);
  EXPECT_EQ(e[0].output_count, 1);
  EXPECT_EQ(e[1].token, 3);
  EXPECT_EQ(e[1].in_prompt, 1);
  EXPECT_EQ(e[1].output_count, 1);
  EXPECT_EQ(e[2].token, 9);
  EXPECT_EQ(e[2].in_prompt, 0);
  EXPECT_EQ(e[2].output_count, 3);
  // Without a penalty nothing is kept (no per-token work for requests that never read it), but the step advances.
  Sampler plain(SamplingParams{});
  plain.add_prompt(std::vector<int32_t>{1, 2, 3});
  plain.accept(4);
  EXPECT_TRUE(plain.penalties().empty());
  EXPECT_EQ(plain.step(), 1u);
}

// A penalized draw is the unpenalized draw of the penalized logits at the same seed and step: the penalties change
// the logits and nothing else.
TEST(Sampler, PenalizedDrawsAreDrawsOfThePenalizedLogits) {
  std::mt19937 rng(17);
  std::normal_distribution<float> normal(0.0f, 1.5f);
  std::uniform_int_distribution<int32_t> any(0, 39);
  SamplingParams p;
  p.temperature = 0.9f;
  p.top_p = 0.9f;
  p.seed = 77;
  p.repetition_penalty = 1.3f;
  p.presence_penalty = 0.4f;
  p.frequency_penalty = -0.3f;
  SamplingParams plain_params = p;
  plain_params.repetition_penalty = 1.0f, plain_params.presence_penalty = 0.0f, plain_params.frequency_penalty = 0.0f;
  Sampler pen(p), plain(plain_params);
  std::vector<int32_t> prompt = {1, 4, 4, 7, 30};
  pen.add_prompt(prompt);
  std::map<int32_t, std::pair<int32_t, int32_t>> stats;  // token -> (in prompt, output count)
  for (int32_t t : prompt) stats[t].first = 1;
  int differs = 0;
  for (int step = 0; step < 300; ++step) {
    std::vector<float> logits(40);
    for (float& v : logits) v = normal(rng);
    std::vector<float> manual = logits;
    for (const auto& [t, st] : stats) {
      float& v = manual[t];
      v = v < 0.0f ? v * 1.3f : v / 1.3f;
      if (st.second > 0) v -= -0.3f * static_cast<float>(st.second) + 0.4f;
    }
    const int32_t got = pen.sample(logits).token;
    ASSERT_EQ(got, plain.sample(manual).token) << "step " << step;
    differs += got != plain.sample(logits).token;
    const int32_t next = step % 3 == 0 ? any(rng) : got;  // feed other tokens too
    pen.accept(next);
    plain.accept(next);
    ++stats[next].second;
  }
  EXPECT_GT(differs, 10) << "the penalties should change some draws";
}

// Random123's published known-answer vectors for Philox4x32-10: the generator is the standard one.
TEST(Sampler, PhiloxKnownAnswers) {
  auto check = [](Philox4 got, uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
    EXPECT_EQ(got.x, a);
    EXPECT_EQ(got.y, b);
    EXPECT_EQ(got.z, c);
    EXPECT_EQ(got.w, d);
  };
  check(philox4x32_10(0, 0, 0, 0, 0, 0), 0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u);
  check(philox4x32_10(~0u, ~0u, ~0u, ~0u, ~0u, ~0u), 0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu);
  check(philox4x32_10(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u), 0xd16cfe09u,
        0x94fdccebu, 0x5001e420u, 0x24126ea1u);
}

// The draw at a step is a function of the seed, the step and the logits alone: not of what was sampled before, how
// often, or beside which other requests; and it is the Gumbel-max of Philox numbers as defined.
TEST(Sampler, DrawsAreAFunctionOfSeedAndStep) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int kVocab = 37, kSteps = 40, kRequests = 6;
  std::vector<std::vector<float>> logits(kSteps, std::vector<float>(kVocab));  // the same row at a step for all
  for (auto& row : logits)
    for (float& v : row) v = normal(rng);
  SamplingParams p;
  p.temperature = 0.8f;
  p.seed = 1234;

  // The definition, restated: argmax over ids of logit / T + gumbel(word id % 4 of Philox(id / 4, step; seed)).
  auto reference = [&](const std::vector<float>& row, uint64_t seed, uint64_t step) {
    const float inv_t = 1.0f / p.temperature;
    int32_t best = 0;
    double top = -INFINITY;
    for (int32_t i = 0; i < kVocab; ++i) {
      const Philox4 r =
          philox4x32_10(static_cast<uint32_t>(i / 4), static_cast<uint32_t>(step), static_cast<uint32_t>(step >> 32), 0,
                        static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
      const float s = sampling::mul_rn(row[i], inv_t) + sampling::gumbel_noise(r.word(i % 4));
      if (s > top) top = s, best = i;
    }
    return best;
  };

  // Alone, one step after another.
  std::vector<int32_t> alone;
  {
    Sampler s(p);
    for (int t = 0; t < kSteps; ++t) {
      alone.push_back(s.sample(logits[t]).token);
      EXPECT_EQ(alone.back(), reference(logits[t], 1234, t)) << "step " << t;
      s.accept(alone.back());
    }
  }
  // Sampled again and again at each step, and given other tokens than it drew: the same draw at each step.
  {
    Sampler s(p);
    for (int t = 0; t < kSteps; ++t) {
      for (int again = 0; again < 3; ++again) ASSERT_EQ(s.sample(logits[t]).token, alone[t]) << "step " << t;
      s.accept((alone[t] + 1) % kVocab);
    }
  }
  // In a batch of requests with other seeds that join at other steps, rows sampled in a shuffled order on several
  // threads at once (as the executor's rows are): the request with seed 1234 draws what it drew alone.
  std::vector<Sampler> batch;
  std::vector<int> joined;
  for (int r = 0; r < kRequests; ++r) {
    SamplingParams q = p;
    q.seed = r == 2 ? 1234 : 1000 + r;
    batch.emplace_back(q);
    joined.push_back(r == 2 ? 0 : 3 * r);
  }
  std::vector<std::vector<int32_t>> drawn(kRequests);
  for (int t = 0; t < kSteps + 3 * kRequests; ++t) {
    std::vector<int> rows;
    for (int r = 0; r < kRequests; ++r)
      if (t >= joined[r] && t - joined[r] < kSteps) rows.push_back(r);
    std::shuffle(rows.begin(), rows.end(), rng);
    std::vector<int32_t> got(rows.size());
    std::vector<std::thread> threads;
    for (size_t j = 0; j < rows.size(); ++j)
      threads.emplace_back([&, j] { got[j] = batch[rows[j]].sample(logits[t - joined[rows[j]]]).token; });
    for (std::thread& th : threads) th.join();
    for (size_t j = 0; j < rows.size(); ++j) {
      batch[rows[j]].accept(got[j]);
      drawn[rows[j]].push_back(got[j]);
    }
  }
  EXPECT_EQ(drawn[2], alone);
  for (int r = 0; r < kRequests; ++r) {
    ASSERT_EQ(drawn[r].size(), static_cast<size_t>(kSteps));
    if (r != 2) EXPECT_NE(drawn[r], alone) << "request " << r << " has another seed";
  }
}

// Temperature draws reproduce softmax(logits / T): a chi-square test over many draws (different steps and seeds)
// on a small vocabulary, at the 0.999 quantile (the draws are deterministic, so the test passes or fails for good).
TEST(Sampler, TemperatureDrawsFollowSoftmaxChiSquare) {
  const std::vector<float> logits = {1.0f, 0.5f, -0.5f, 2.0f, 0.0f, -1.5f, 1.5f, -1.0f};
  for (float temperature : {1.0f, 0.7f, 1.6f}) {
    const std::vector<double> want = softmax_at(logits, temperature);
    std::vector<double> counts(logits.size(), 0.0);
    for (uint64_t seed = 0; seed < 40; ++seed) {
      SamplingParams p;
      p.temperature = temperature;
      p.seed = seed * 0x9e3779b97f4a7c15ull;
      Sampler s(p);
      for (const auto& [t, c] : draw_many(s, logits, 5000)) counts[t] += c;
    }
    const double chi = chi_square(counts, want);
    EXPECT_LT(chi, chi_square_999(static_cast<int>(logits.size()) - 1)) << "temperature " << temperature;
    // And the test has power: the draws do not also fit a slightly different temperature.
    const std::vector<double> off = softmax_at(logits, temperature * 1.05);
    EXPECT_GT(chi_square(counts, off), chi_square_999(static_cast<int>(logits.size()) - 1))
        << "temperature " << temperature;
  }
}

// Over a larger vocabulary the argmax is decided among the largest Gumbel noises (the tail of the noise): grouped
// into bins of about equal probability, the draws still follow the softmax.
TEST(Sampler, TemperatureDrawsFollowSoftmaxOverALargerVocabulary) {
  std::mt19937 rng(9);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> logits(1024);
  for (float& v : logits) v = normal(rng);
  const std::vector<double> p = softmax_at(logits, 1.0);
  // Bins: tokens by decreasing probability, a new bin each time one reaches 1/16 of the mass.
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return p[a] > p[b]; });
  std::vector<int> bin_of(logits.size());
  std::vector<double> bin_p(1, 0.0);
  for (int32_t t : order) {
    if (bin_p.back() >= 1.0 / 16) bin_p.push_back(0.0);
    bin_of[t] = static_cast<int>(bin_p.size()) - 1;
    bin_p.back() += p[t];
  }
  if (bin_p.size() > 1 && bin_p.back() < 1.0 / 32) {  // a small remainder joins the bin before it
    for (int& b : bin_of) b = std::min(b, static_cast<int>(bin_p.size()) - 2);
    bin_p[bin_p.size() - 2] += bin_p.back();
    bin_p.pop_back();
  }
  std::vector<double> counts(bin_p.size(), 0.0);
  for (uint64_t seed = 1; seed <= 8; ++seed) {
    SamplingParams sp;
    sp.seed = seed;
    Sampler s(sp);
    for (const auto& [t, c] : draw_many(s, logits, 4000)) counts[bin_of[t]] += c;
  }
  EXPECT_LT(chi_square(counts, bin_p), chi_square_999(static_cast<int>(bin_p.size()) - 1));
}

// The kept set: the reference below restates the definition in double precision; draws stay inside it and follow
// its renormalized probabilities (chi-square).
std::vector<double> kept_probabilities(const std::vector<float>& l, const SamplingParams& p) {
  const int32_t n = static_cast<int32_t>(l.size());
  std::vector<int32_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return l[a] > l[b]; });
  int32_t keep = p.top_k > 0 && p.top_k < n ? p.top_k : n;
  std::vector<double> pr(keep);
  double sum = 0;
  for (int32_t i = 0; i < keep; ++i) sum += pr[i] = std::exp((double(l[order[i]]) - l[order[0]]) / p.temperature);
  if (p.top_p < 1.0f) {
    double cum = 0;
    for (int32_t i = 0; i < keep; ++i)
      if ((cum += pr[i]) >= p.top_p * sum) {
        keep = i + 1;
        break;
      }
  }
  std::vector<double> out(n, 0.0);
  double total = 0;
  for (int32_t i = 0; i < keep; ++i)
    if (i == 0 || pr[i] >= p.min_p) total += out[order[i]] = pr[i];
  for (double& v : out) v /= total;
  return out;
}

TEST(Sampler, FilteredDrawsFollowTheKeptSetChiSquare) {
  const std::vector<float> logits = {0.2f, 1.7f, -0.4f, 1.1f, 0.9f, -2.0f, 1.4f, 0.0f, 0.6f, -1.0f, 1.6f, 0.3f};
  std::vector<SamplingParams> cases = {{0.8f, 5}, {1.0f, 0, 0.75f}, {1.2f, 0, 1.0f, 0.3f}, {0.7f, 6, 0.8f, 0.1f}};
  for (const SamplingParams& base : cases) {
    const std::vector<double> want = kept_probabilities(logits, base);
    std::vector<double> counts(logits.size(), 0.0);
    for (uint64_t seed = 0; seed < 10; ++seed) {
      SamplingParams p = base;
      p.seed = 555 + seed;
      Sampler s(p);
      for (const auto& [t, c] : draw_many(s, logits, 4000)) {
        ASSERT_GT(want[t], 0.0) << "drew " << t << " outside the kept set (top_k " << p.top_k << ", top_p " << p.top_p
                                << ", min_p " << p.min_p << ")";
        counts[t] += c;
      }
    }
    std::vector<double> kc, kp;
    for (size_t i = 0; i < logits.size(); ++i)
      if (want[i] > 0.0) kc.push_back(counts[i]), kp.push_back(want[i]);
    ASSERT_GE(kc.size(), 3u);
    EXPECT_LT(chi_square(kc, kp), chi_square_999(static_cast<int>(kc.size()) - 1))
        << "top_k " << base.top_k << ", top_p " << base.top_p << ", min_p " << base.min_p;
  }
}

TEST(Sampler, TiesAtTheFilterBoundaryKeepTheLowerIds) {
  // Six tokens tie for first: top-k 3 keeps the three lowest ids, uniformly; top-p 0.45 of them too (each holds
  // about 0.15 of the mass, the three reach 0.45).
  std::vector<float> logits(100, -1.0f);
  for (int32_t id : {90, 11, 40, 7, 63, 25}) logits[id] = 4.0f;
  for (const SamplingParams& base : {SamplingParams{1.0f, 3}, SamplingParams{1.0f, 0, 0.45f}}) {
    SamplingParams p = base;
    p.seed = 8;
    Sampler s(p);
    std::map<int32_t, int> seen = draw_many(s, logits, 3000);
    ASSERT_EQ(seen.size(), 3u);
    for (int32_t id : {7, 11, 25}) EXPECT_NEAR(seen[id] / 3000.0, 1.0 / 3, 0.04) << id;
  }
}

}  // namespace
}  // namespace kiln
