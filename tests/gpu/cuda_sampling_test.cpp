// GPU sampling agrees with the CPU Sampler: greedy ids, chosen and top-K log-probs; temperature draws follow
// softmax(logits / T) and repeat for the same (seed, step); the same seeded rows draw the CPU Sampler's tokens
// wherever no near tie decides them, from equal logits and from a model on each backend.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <numeric>

#include "core/sampling_math.h"
#include "cuda_test_util.h"
#include "kiln/executor.h"
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
  std::vector<SamplingParams> params(rows);
  std::vector<cuda::SampleRowInfo> info(rows);
  for (int64_t r = 0; r < rows; ++r) {
    std::copy(base.begin(), base.end(), logits.begin() + r * vocab);
    params[r].temperature = temp;
    params[r].seed = 0x9e3779b97f4a7c15ull * static_cast<uint64_t>(r + 1);
    info[r].step = 3;
  }
  DeviceBuffer<float> dl(logits);
  DeviceBuffer<SamplingParams> dp(params);
  DeviceBuffer<cuda::SampleRowInfo> di(info);
  DeviceBuffer<int32_t> tok(rows), tok2(rows);
  cuda::SampleArgs a;
  a.logits = dl.get();
  a.rows = rows;
  a.vocab = vocab;
  a.params = dp.get();
  a.info = di.get();
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
  for (cuda::SampleRowInfo& i : info) i.step = 4;
  DeviceBuffer<cuda::SampleRowInfo> di2(info);
  a.info = di2.get();
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

// The CPU Sampler's kept set for `p` (sampler.h, restated in double precision): candidates by logit (lower id on
// ties), top-k, probabilities at the temperature relative to the best, the shortest top-p prefix, min-p; each kept
// token's renormalized probability. near_boundary: a filter's boundary lies within rounding of a candidate (float
// logits with libm's or CUDA's expf may then keep one token more or less), so that row is not compared exactly.
struct KeptSet {
  std::vector<double> prob;  // [vocab], 0 outside the set
  bool near_boundary = false;
};
KeptSet kept_set(const std::vector<float>& l, const SamplingParams& p) {
  constexpr double kNear = 1e-5;
  const int32_t n = static_cast<int32_t>(l.size());
  std::vector<int32_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return l[a] > l[b]; });
  KeptSet k;
  int32_t keep = p.top_k > 0 && p.top_k < n ? p.top_k : n;
  if (keep < n) {
    const float a = l[order[keep - 1]], b = l[order[keep]];
    k.near_boundary |= a != b && std::abs(a - b) <= kNear * std::max(1.0f, std::abs(a));
  }
  std::vector<double> pr(keep);
  double sum = 0;
  for (int32_t i = 0; i < keep; ++i) sum += pr[i] = std::exp((double(l[order[i]]) - l[order[0]]) / p.temperature);
  if (p.top_p < 1.0f) {
    double cum = 0;
    for (int32_t i = 0; i < keep; ++i) {
      cum += pr[i];
      k.near_boundary |= std::abs(cum / sum - p.top_p) <= kNear;
      if (cum >= p.top_p * sum) {
        keep = i + 1;
        break;
      }
    }
  }
  k.prob.assign(n, 0.0);
  double total = 0;
  for (int32_t i = 0; i < keep; ++i) {
    if (p.min_p > 0.0f) k.near_boundary |= i > 0 && std::abs(pr[i] / p.min_p - 1.0) <= kNear;
    if (i == 0 || pr[i] >= p.min_p) total += k.prob[order[i]] = pr[i];
  }
  for (double& v : k.prob) v /= total;
  return k;
}

SamplingParams with_seed(SamplingParams p, uint64_t seed) {
  p.seed = seed;
  return p;
}

// `rows` copies of one logit row sampled with `p`, each row its own seed; the ids drawn.
std::vector<int32_t> draw_rows(const std::vector<float>& base, const SamplingParams& p, int64_t rows,
                               uint64_t step = 7) {
  const int64_t vocab = static_cast<int64_t>(base.size());
  std::vector<float> logits(rows * vocab);
  std::vector<SamplingParams> params(rows);
  std::vector<cuda::SampleRowInfo> info(rows);
  for (int64_t r = 0; r < rows; ++r) {
    std::copy(base.begin(), base.end(), logits.begin() + r * vocab);
    params[r] = with_seed(p, 0x9e3779b97f4a7c15ull * static_cast<uint64_t>(r + 1));
    info[r].step = step;
  }
  DeviceBuffer<float> dl(logits);
  DeviceBuffer<SamplingParams> dp(params);
  DeviceBuffer<cuda::SampleRowInfo> di(info);
  DeviceBuffer<int32_t> tok(rows);
  tok.poison();
  cuda::SampleArgs a;
  a.logits = dl.get();
  a.rows = rows;
  a.vocab = vocab;
  a.params = dp.get();
  a.info = di.get();
  a.tokens = tok.get();
  cuda::sample(a, nullptr);
  return tok.download();
}

// Every draw is in the CPU sampler's kept set, and the draws follow its renormalized probabilities (each token's
// frequency within 5 standard deviations): a kernel that ignored a filter, the temperature or the
// renormalization fails this.
void check_filtered_draws(const std::vector<float>& base, const SamplingParams& p, int64_t rows, bool frequencies) {
  const KeptSet kept = kept_set(base, p);
  const std::vector<double>& want = kept.prob;
  // The restated reference agrees with the CPU Sampler: its draws stay inside the set.
  Sampler cpu(p);
  for (int i = 0; i < 2000; ++i) {
    const int32_t t = cpu.sample(base).token;
    ASSERT_GT(want[t], 0.0) << "the CPU sampler drew " << t << " outside the restated kept set";
    cpu.accept(t);
  }
  const auto g = draw_rows(base, p, rows);
  std::vector<double> count(base.size(), 0.0);
  for (int32_t id : g) {
    ASSERT_TRUE(id >= 0 && id < static_cast<int32_t>(base.size())) << id;
    ASSERT_GT(want[id], 0.0) << "drew token " << id << " outside the kept set (top_k " << p.top_k << ", top_p "
                             << p.top_p << ", min_p " << p.min_p << ")";
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

// Rows as the CUDA model hands them to the kernel: each row's SamplingParams, its step and its Sampler's penalty
// entries (the list the CPU path reads too).
struct GpuRows {
  std::vector<SamplingParams> params;
  std::vector<cuda::SampleRowInfo> info;
  std::vector<SamplePenalty> entries;
  void add(const Sampler& s) {
    cuda::SampleRowInfo i;
    i.step = s.step();
    if (s.has_penalties() && !s.penalties().empty()) {
      i.penalty_begin = static_cast<int32_t>(entries.size());
      i.penalty_count = static_cast<int32_t>(s.penalties().size());
      entries.insert(entries.end(), s.penalties().begin(), s.penalties().end());
    }
    params.push_back(s.params());
    info.push_back(i);
  }
};
struct GpuOut {
  std::vector<int32_t> tokens, top_ids;
  std::vector<float> logprobs;
};
// Samples [rows, vocab] logits on the GPU; the rows must come back unchanged (penalized rows are restored).
GpuOut sample_on_gpu(const std::vector<float>& logits, int64_t vocab, const GpuRows& g, int32_t top_k = 0) {
  const int64_t rows = static_cast<int64_t>(g.params.size());
  DeviceBuffer<float> dl(logits);
  DeviceBuffer<SamplingParams> dp(g.params);
  DeviceBuffer<cuda::SampleRowInfo> di(g.info);
  DeviceBuffer<SamplePenalty> de(g.entries);
  DeviceBuffer<float> scratch(std::max<size_t>(1, g.entries.size()));
  DeviceBuffer<int32_t> tok(rows), top_ids(std::max<int64_t>(1, rows * top_k));
  DeviceBuffer<float> tok_lp(rows), top_lp(std::max<int64_t>(1, rows * top_k));
  tok.poison();
  cuda::SampleArgs a;
  a.logits = dl.get();
  a.rows = rows;
  a.vocab = vocab;
  a.params = dp.get();
  a.info = di.get();
  a.penalties = g.entries.empty() ? nullptr : de.get();
  a.penalty_scratch = scratch.get();
  a.top_k = top_k;
  a.tokens = tok.get();
  a.token_logprobs = tok_lp.get();
  a.top_ids = top_ids.get();
  a.top_logprobs = top_lp.get();
  cuda::sample(a, nullptr);
  GpuOut out{tok.download(), top_ids.download(), tok_lp.download()};
  EXPECT_EQ(dl.download(), logits) << "the penalized rows must be restored";
  return out;
}

// A row's logits with its sampler's penalties, as both paths compute them.
std::vector<float> penalized(std::span<const float> row, const Sampler& s) {
  std::vector<float> x(row.begin(), row.end());
  for (const SamplePenalty& e : s.penalties()) x[e.token] = sampling::penalized_logit(x[e.token], s.params(), e);
  return x;
}

TEST(CudaSampling, PenaltiesGiveTheCpuGreedyChoiceAndRawLogprobs) {
  KILN_REQUIRE_GPU();
  std::mt19937 rng(3);
  for (int64_t vocab : {1000, 999}) {
    const int64_t rows = 24;
    std::vector<float> logits = testing::randn(rows * vocab, rng, 2.0f);
    std::vector<Sampler> cpu;
    GpuRows g;
    std::uniform_int_distribution<int32_t> any(0, static_cast<int32_t>(vocab) - 1);
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = logits.data() + r * vocab;
      std::vector<int32_t> order(vocab);
      for (int32_t i = 0; i < vocab; ++i) order[i] = i;
      std::partial_sort(order.begin(), order.begin() + 4, order.end(),
                        [&](int32_t a, int32_t b) { return row[a] > row[b]; });
      SamplingParams sp;
      sp.temperature = 0.0f;
      sp.repetition_penalty = r % 3 == 0 ? 1.0f : 1.5f;
      sp.presence_penalty = r % 3 == 1 ? 0.0f : 0.7f;
      sp.frequency_penalty = r % 2 ? 0.4f : -0.3f;
      sp.logprobs = 3;
      // The best tokens are in the prompt and output, so the penalties change the choice.
      cpu.emplace_back(sp);
      cpu.back().add_prompt(std::vector<int32_t>{order[0], any(rng), order[2], any(rng)});
      for (int32_t t : {order[1], order[0], order[1], any(rng), order[3]}) cpu.back().accept(t);
      g.add(cpu.back());
    }
    const GpuOut out = sample_on_gpu(logits, vocab, g, 3);
    int changed = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const std::span<const float> row(logits.data() + r * vocab, vocab);
      const SampleResult want = cpu[r].sample(row);
      ASSERT_EQ(out.tokens[r], want.token) << "vocab " << vocab << " row " << r;
      EXPECT_NEAR(out.logprobs[r], want.logprob, 1e-4 + 1e-5 * std::abs(want.logprob));
      for (int j = 0; j < 3; ++j) EXPECT_EQ(out.top_ids[r * 3 + j], want.top[j].id);
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
    std::vector<float> pen = base;
    // Repetition over prompt and output, then the frequency penalty over the output.
    for (int32_t t : {3, 0, 6}) pen[t] = pen[t] < 0 ? pen[t] * 1.2f : pen[t] / 1.2f;
    pen[0] -= 0.6f * 2;
    pen[6] -= 0.6f * 1;
    std::vector<float> logits(rows * vocab);
    GpuRows g;
    for (int64_t r = 0; r < rows; ++r) {
      std::copy(base.begin(), base.end(), logits.begin() + r * vocab);
      Sampler s(with_seed(sp, 1000 + r));
      s.add_prompt(std::vector<int32_t>{3});
      for (int32_t t : {0, 0, 6}) s.accept(t);
      g.add(s);
    }
    const std::vector<int32_t> got = sample_on_gpu(logits, vocab, g).tokens;
    const std::vector<double> want = kept_set(pen, sp).prob;
    std::vector<double> count(vocab, 0.0);
    for (int32_t id : got) {
      ASSERT_GT(want[id], 0.0) << "token " << id << " is outside the kept set";
      count[id] += 1;
    }
    for (int64_t i = 0; i < vocab; ++i) {
      const double pi = want[i], sd = std::sqrt(pi * (1 - pi) / rows);
      EXPECT_NEAR(count[i] / rows, pi, 5 * sd + 2e-4) << "token " << i << " top_p " << top_p;
    }
  }
}

// One RNG on both paths: the same seeded rows from equal logits draw the CPU Sampler's tokens on the GPU, for every
// kind of row (plain temperature, top-k, top-p, min-p, penalties, at many steps). A row is left out only where
// rounding may decide it: the two best perturbed scores of the kept set within 1e-4 (relative), or a filter's
// boundary within 1e-5 of a candidate; at least 95% of the rows are compared.
TEST(CudaSampling, SeededRowsDrawTheCpuSamplersTokens) {
  KILN_REQUIRE_GPU();
  std::mt19937 rng(29);
  const std::vector<SamplingParams> kinds = {{1.0f},
                                             {0.6f},
                                             {1.5f},
                                             {0.8f, 50},
                                             {1.0f, 5},
                                             {0.9f, 0, 0.9f},
                                             {1.2f, 0, 0.5f},
                                             {1.0f, 0, 1.0f, 0.05f},
                                             {0.7f, 40, 0.95f, 0.02f}};
  for (int64_t vocab : {1000, 1003, 32000}) {
    const int64_t rows = vocab > 2000 ? 256 : 2048;
    const std::vector<float> logits = testing::randn(rows * vocab, rng, vocab > 2000 ? 3.0f : 1.5f);
    std::uniform_int_distribution<int32_t> any(0, static_cast<int32_t>(vocab) - 1);
    std::vector<Sampler> cpu;
    GpuRows g;
    for (int64_t r = 0; r < rows; ++r) {
      SamplingParams p = kinds[r % kinds.size()];
      p.seed = (static_cast<uint64_t>(rng()) << 32) | rng();
      if (r % 3 == 1) p.repetition_penalty = 1.2f, p.frequency_penalty = 0.3f, p.presence_penalty = -0.2f;
      cpu.emplace_back(p);
      std::vector<int32_t> prompt(5);
      for (int32_t& t : prompt) t = any(rng);
      cpu.back().add_prompt(prompt);
      for (int64_t k = 0; k < r % 17; ++k) cpu.back().accept(any(rng));
      g.add(cpu.back());
    }
    const std::vector<int32_t> got = sample_on_gpu(logits, vocab, g).tokens;
    int64_t compared = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const std::span<const float> row(logits.data() + r * vocab, vocab);
      const int32_t want = cpu[r].sample(row).token;
      const SamplingParams& p = cpu[r].params();
      const std::vector<float> x = penalized(row, cpu[r]);
      const KeptSet kept = kept_set(x, p);
      ASSERT_GT(kept.prob[want], 0.0) << "the CPU sampler drew outside the restated kept set, row " << r;
      // The two best perturbed scores over the kept set.
      const float inv_t = sampling::inverse_temperature(p.temperature);
      float s1 = -INFINITY, s2 = -INFINITY;
      for (int32_t i = 0; i < vocab; ++i) {
        if (kept.prob[i] == 0.0) continue;
        const float sc = sampling::perturbed_score(x[i], inv_t, sampling::random_bits(*p.seed, cpu[r].step(), i));
        if (sc > s1)
          s2 = s1, s1 = sc;
        else if (sc > s2)
          s2 = sc;
      }
      if (kept.near_boundary || s1 - s2 <= 1e-4f * std::max(1.0f, std::abs(s1))) continue;
      ++compared;
      EXPECT_EQ(got[r], want) << "vocab " << vocab << " row " << r << " (temperature " << p.temperature << ", top_k "
                              << p.top_k << ", top_p " << p.top_p << ", min_p " << p.min_p << ", step " << cpu[r].step()
                              << ")";
    }
    EXPECT_GE(compared, rows * 95 / 100) << "vocab " << vocab;
    std::printf("  [vocab %lld: %lld of %lld rows compared]\n", static_cast<long long>(vocab),
                static_cast<long long>(compared), static_cast<long long>(rows));
  }
}

// KILN_MODEL_FIXTURES points the test at the fixtures where the source tree is elsewhere (the GPU machine).
std::filesystem::path fixtures_dir() {
  const char* env = std::getenv("KILN_MODEL_FIXTURES");
  return env != nullptr ? std::filesystem::path(env)
                        : std::filesystem::path(KILN_SOURCE_DIR) / "tests" / "fixtures" / "models";
}

std::vector<std::vector<int32_t>> run_requests(std::shared_ptr<const Model> m, const std::vector<Request>& reqs) {
  ExecutorConfig c;
  c.kv_cache_bytes = 4 << 20;
  c.max_num_tokens = 64;
  c.max_batch_size = 16;
  c.block_size = 8;
  Executor ex(std::move(m), nullptr, c);
  std::vector<RequestId> ids;
  for (const Request& r : reqs) ids.push_back(ex.enqueue(r));
  std::vector<std::vector<int32_t>> out;
  for (RequestId id : ids) {
    std::vector<int32_t> tokens;
    for (bool done = false; !done;)
      for (const Response& r : ex.await_responses(id, std::chrono::milliseconds(10000))) {
        EXPECT_NE(r.finish_reason, FinishReason::Error) << r.error;
        tokens.insert(tokens.end(), r.token_ids.begin(), r.token_ids.end());
        done |= r.finished;
      }
    out.push_back(tokens);
  }
  return out;
}

// The same seeded requests on the CPU backend and on CUDA (sampling on the device) from one checkpoint give the same
// tokens up to the first step where the backends' logits, f32 against f16, may decide differently. Each token's
// log-prob is within 0.05 of the float64 reference on this fixture in f16 (cuda_fixtures_test), so a difference of
// two logits within 0.1, and within 0.12 after a repetition penalty of 1.2: a request may part only where the CPU's
// perturbed scores of the two tokens are within 0.12 / T, or one of them is within 0.12 of the CPU's top-k boundary.
// There the CPU's decision is recomputed (the CPU model's logits, a Sampler replayed to that step), which also checks
// that the executor samples as a lone Sampler does.
TEST(CudaSampling, SeededRequestsSampleTheSameTokensOnCpuAndCuda) {
  KILN_REQUIRE_GPU();
  constexpr double kLogitTol = 0.12;
  const std::string path = (fixtures_dir() / "llama3-gqa-bf16").string();
  LoadOptions on_gpu;
  on_gpu.device = Device::CUDA;
  const std::shared_ptr<const Model> cpu_model = Model::load(path), gpu_model = Model::load(path, on_gpu);
  const int32_t vocab = static_cast<int32_t>(cpu_model->config().vocab_size);
  std::mt19937 rng(31);
  std::vector<Request> reqs;
  for (int i = 0; i < 12; ++i) {
    Request r;
    r.prompt_ids = {1};
    for (int n = 4 + static_cast<int>(rng() % 26); static_cast<int>(r.prompt_ids.size()) < n;)
      r.prompt_ids.push_back(3 + static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab - 3)));
    r.max_tokens = 24;
    r.ignore_eos = true;
    r.sampling.temperature = i % 3 == 0 ? 0.7f : i % 3 == 1 ? 1.0f : 1.3f;
    r.sampling.seed = 4242 + i;
    if (i % 4 == 1) r.sampling.top_k = 40;
    if (i % 4 == 2) r.sampling.repetition_penalty = 1.2f, r.sampling.frequency_penalty = 0.3f;
    reqs.push_back(r);
  }
  const auto on_cpu = run_requests(cpu_model, reqs), on_cuda = run_requests(gpu_model, reqs);
  size_t matched = 0, total = 0;
  int parted = 0;
  for (size_t i = 0; i < reqs.size(); ++i) {
    const std::vector<int32_t>&c = on_cpu[i], &g = on_cuda[i];
    ASSERT_EQ(c.size(), 24u);
    ASSERT_EQ(g.size(), 24u);
    size_t t = 0;
    while (t < c.size() && c[t] == g[t]) ++t;
    matched += t;
    total += c.size();
    if (t == c.size()) continue;
    ++parted;
    const Request& r = reqs[i];
    std::vector<int32_t> seq = r.prompt_ids;
    seq.insert(seq.end(), c.begin(), c.begin() + static_cast<std::ptrdiff_t>(t));
    std::unique_ptr<KvState> state = cpu_model->new_state(static_cast<int64_t>(seq.size()) + 1);
    std::vector<float> logits;
    cpu_model->forward(*state, seq, logits);
    Sampler s(r.sampling);
    s.add_prompt(r.prompt_ids);
    for (size_t k = 0; k < t; ++k) s.accept(c[k]);
    ASSERT_EQ(s.sample(logits).token, c[t]) << "request " << i << ": the replayed CPU decision at token " << t;
    const std::vector<float> x = penalized(logits, s);
    const float inv_t = sampling::inverse_temperature(r.sampling.temperature);
    auto score = [&](int32_t id) {
      return sampling::perturbed_score(x[id], inv_t, sampling::random_bits(*r.sampling.seed, t, id));
    };
    const double margin = static_cast<double>(score(c[t])) - score(g[t]);
    bool at_boundary = false;
    if (r.sampling.top_k > 0) {
      std::vector<float> sorted = x;
      std::sort(sorted.begin(), sorted.end(), std::greater<float>());
      const float kth = sorted[r.sampling.top_k - 1], next = sorted[r.sampling.top_k];
      at_boundary = (x[g[t]] < kth && kth - x[g[t]] <= kLogitTol) || x[c[t]] - next <= kLogitTol;
    }
    EXPECT_TRUE(margin <= kLogitTol / r.sampling.temperature || at_boundary)
        << "request " << i << " token " << t << ": CUDA drew " << g[t] << ", the CPU " << c[t]
        << ", whose perturbed score led by " << margin;
  }
  std::printf("  [%zu of %zu tokens equal before the requests parted; %d of %zu requests parted at a near tie]\n",
              matched, total, parted, reqs.size());
  EXPECT_GE(matched * 2, total) << "most tokens should be drawn alike";
}

}  // namespace
}  // namespace kiln
