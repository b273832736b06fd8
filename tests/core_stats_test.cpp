// Summary statistics of `kiln bench`: percentiles as numpy computes them (linear between closest ranks),
// ordering, and the edge cases (one sample, none, NaN).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/stats.h"
#include "kiln/error.h"

namespace kiln {
namespace {

TEST(Stats, PercentilesInterpolateLikeNumpy) {
  // numpy.percentile([1, 2, 3, 4], [50, 90, 99]) = [2.5, 3.7, 3.97]
  const Summary s = summarize({4.0, 1.0, 3.0, 2.0});
  EXPECT_EQ(s.count, 4);
  EXPECT_DOUBLE_EQ(s.mean, 2.5);
  EXPECT_DOUBLE_EQ(s.min, 1.0);
  EXPECT_DOUBLE_EQ(s.max, 4.0);
  EXPECT_DOUBLE_EQ(s.p50, 2.5);
  EXPECT_NEAR(s.p90, 3.7, 1e-12);
  EXPECT_NEAR(s.p99, 3.97, 1e-12);
  // numpy.percentile(range(1, 101), [50, 90, 99]) = [50.5, 90.1, 99.01]
  std::vector<double> v;
  for (int i = 100; i >= 1; --i) v.push_back(i);
  const Summary h = summarize(v);
  EXPECT_NEAR(h.p50, 50.5, 1e-9);
  EXPECT_NEAR(h.p90, 90.1, 1e-9);
  EXPECT_NEAR(h.p99, 99.01, 1e-9);
  EXPECT_DOUBLE_EQ(percentile_sorted(std::vector<double>{1, 2, 3, 4}, 0), 1.0);
  EXPECT_DOUBLE_EQ(percentile_sorted(std::vector<double>{1, 2, 3, 4}, 100), 4.0);
}

TEST(Stats, OneSampleAndNone) {
  const Summary one = summarize({7.5});
  EXPECT_EQ(one.count, 1);
  EXPECT_EQ(one.mean, 7.5);
  EXPECT_EQ(one.p50, 7.5);
  EXPECT_EQ(one.p99, 7.5);
  const Summary none = summarize({});
  EXPECT_EQ(none.count, 0);
  EXPECT_EQ(none.mean, 0.0);
  EXPECT_EQ(none.p99, 0.0);
}

TEST(Stats, OrderedOnRandomSamples) {
  std::mt19937_64 rng(3);
  std::lognormal_distribution<double> d(0.0, 1.5);
  for (int n : {1, 2, 3, 10, 99, 1000}) {
    std::vector<double> v;
    for (int i = 0; i < n; ++i) v.push_back(d(rng));
    const Summary s = summarize(v);
    EXPECT_LE(s.min, s.p50);
    EXPECT_LE(s.p50, s.p90);
    EXPECT_LE(s.p90, s.p99);
    EXPECT_LE(s.p99, s.max);
    EXPECT_LE(s.min, s.mean);
    EXPECT_LE(s.mean, s.max);
  }
  // Equal samples give exactly that value everywhere, with no rounding drift.
  const Summary same = summarize(std::vector<double>(37, 0.1));
  EXPECT_EQ(same.mean, 0.1);
  EXPECT_EQ(same.p90, 0.1);
  EXPECT_EQ(same.p99, 0.1);
}

TEST(Stats, Refusals) {
  EXPECT_THROW(summarize({1.0, std::nan("")}), Error);
  EXPECT_THROW(percentile_sorted(std::vector<double>{}, 50), Error);
  EXPECT_THROW(percentile_sorted(std::vector<double>{1.0}, 101), Error);
  EXPECT_THROW(percentile_sorted(std::vector<double>{1.0}, -1), Error);
}

}  // namespace
}  // namespace kiln
