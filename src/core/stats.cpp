// Summary statistics: percentiles by linear interpolation between closest ranks.
#include "core/stats.h"

#include <algorithm>
#include <cmath>

#include "kiln/error.h"

namespace kiln {

double percentile_sorted(std::span<const double> sorted, double p) {
  KILN_CHECK(!sorted.empty(), "percentile of no samples");
  KILN_CHECK(p >= 0.0 && p <= 100.0, "percentile {} is outside [0, 100]", p);
  const double rank = p / 100.0 * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  const double frac = rank - static_cast<double>(lo);
  // Written so that equal neighbours give exactly their value and the result never leaves [lo, hi].
  return std::clamp(sorted[lo] + (sorted[hi] - sorted[lo]) * frac, sorted[lo], sorted[hi]);
}

Summary summarize(std::vector<double> values) {
  Summary s;
  if (values.empty()) return s;
  for (double v : values) KILN_CHECK(!std::isnan(v), "summary of samples with a NaN");
  std::sort(values.begin(), values.end());
  s.count = static_cast<int64_t>(values.size());
  double sum = 0.0;
  for (double v : values) sum += v;
  s.mean = std::clamp(sum / static_cast<double>(values.size()), values.front(), values.back());
  s.min = values.front();
  s.max = values.back();
  s.p50 = percentile_sorted(values, 50.0);
  s.p90 = percentile_sorted(values, 90.0);
  s.p99 = percentile_sorted(values, 99.0);
  return s;
}

}  // namespace kiln
