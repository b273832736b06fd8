// Summary statistics of measured samples (latencies, rates): mean, extremes and percentiles.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace kiln {

struct Summary {
  int64_t count = 0;  // 0: no samples, every other field 0
  double mean = 0.0;
  double min = 0.0;
  double max = 0.0;
  double p50 = 0.0;
  double p90 = 0.0;
  double p99 = 0.0;
};

// The p-th percentile (p in [0, 100]) of ascending `sorted`, interpolating linearly between the two
// nearest ranks (numpy's default, so p50 of {1, 2, 3, 4} is 2.5). Throws kiln::Error when empty or p is
// out of range.
double percentile_sorted(std::span<const double> sorted, double p);

// Summary of `values` (any order; NaN is refused with kiln::Error).
Summary summarize(std::vector<double> values);

}  // namespace kiln
