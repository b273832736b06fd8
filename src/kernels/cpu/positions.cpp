// Position encodings other than rotary: ALiBi slopes and learned absolute position tables.
#include <cmath>

#include "kernels/cpu/ops.h"
#include "kiln/error.h"

namespace kiln::cpu {

std::vector<float> alibi_slopes(int64_t n_heads, double bias_max) {
  KILN_CHECK(n_heads > 0 && bias_max > 0, "ALiBi: {} heads, bias_max {}", n_heads, bias_max);
  int64_t n2 = 1;
  while (n2 < n_heads) n2 *= 2;
  std::vector<double> all(static_cast<size_t>(n2));
  for (int64_t i = 1; i <= n2; ++i) all[i - 1] = std::pow(2.0, -bias_max * static_cast<double>(i) / n2);
  std::vector<float> out;
  out.reserve(static_cast<size_t>(n_heads));
  // Power of two: all in order. Otherwise the slopes of the power of two below come first (every other
  // one of the larger set, i = 2, 4, ...), then the in-between ones (i = 1, 3, ...), as many as needed.
  if (n2 == n_heads) {
    for (double s : all) out.push_back(static_cast<float>(s));
  } else {
    for (int64_t i = 1; i < n2 && static_cast<int64_t>(out.size()) < n_heads; i += 2) out.push_back(static_cast<float>(all[i]));
    for (int64_t i = 0; i < n2 && static_cast<int64_t>(out.size()) < n_heads; i += 2) out.push_back(static_cast<float>(all[i]));
  }
  return out;
}

void add_position_embedding(const float* table, int64_t n_positions, int64_t dim, const int64_t* positions,
                            int64_t T, float* x) {
  for (int64_t t = 0; t < T; ++t)
    KILN_CHECK(positions[t] >= 0 && positions[t] < n_positions,
               "position {} is outside the model's {} learned positions", positions[t], n_positions);
  for (int64_t t = 0; t < T; ++t) {
    const float* row = table + positions[t] * dim;
    float* xr = x + t * dim;
    for (int64_t i = 0; i < dim; ++i) xr[i] += row[i];
  }
}

}  // namespace kiln::cpu
