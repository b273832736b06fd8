// Rotary position embeddings: inverse frequencies (with linear / llama3 scaling), tables, rotation.
#include <cmath>
#include <numbers>

#include "core/thread_pool.h"
#include "kernels/cpu/ops.h"
#include "kiln/error.h"

namespace kiln::cpu {

std::vector<double> rope_inv_freq(const RopeConfig& rope, int64_t rotary_dim) {
  KILN_CHECK(rotary_dim > 0 && rotary_dim % 2 == 0, "rotary dimension {} must be positive and even", rotary_dim);
  const int64_t half = rotary_dim / 2;
  std::vector<double> inv(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i)
    inv[i] = 1.0 / std::pow(rope.theta, static_cast<double>(2 * i) / static_cast<double>(rotary_dim));
  switch (rope.scaling) {
    case RopeScaling::None:
      break;
    case RopeScaling::Linear:
      for (double& f : inv) f /= rope.factor;
      break;
    case RopeScaling::Llama3: {
      // Long wavelengths are divided by `factor`, short ones kept, and the band between is a blend
      // whose weight is linear in (context / wavelength).
      const double ctx = static_cast<double>(rope.original_max_position);
      const double low_wavelen = ctx / rope.low_freq_factor;
      const double high_wavelen = ctx / rope.high_freq_factor;
      for (double& f : inv) {
        const double wavelen = 2.0 * std::numbers::pi / f;
        if (wavelen < high_wavelen) continue;
        if (wavelen > low_wavelen) {
          f /= rope.factor;
          continue;
        }
        const double smooth =
            (ctx / wavelen - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor);
        f = (1.0 - smooth) * f / rope.factor + smooth * f;
      }
      break;
    }
  }
  if (!rope.freq_factors.empty()) {
    KILN_CHECK(static_cast<int64_t>(rope.freq_factors.size()) == half,
               "rope frequency factors: {} values for {} rotary pairs", rope.freq_factors.size(), half);
    for (int64_t i = 0; i < half; ++i) inv[i] /= rope.freq_factors[i];
  }
  return inv;
}

void rope_tables(const std::vector<double>& inv_freq, const int64_t* positions, int64_t T, float* cos_out,
                 float* sin_out) {
  const int64_t half = static_cast<int64_t>(inv_freq.size());
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t i = 0; i < half; ++i) {
      const double a = static_cast<double>(positions[t]) * inv_freq[i];
      cos_out[t * half + i] = static_cast<float>(std::cos(a));
      sin_out[t * half + i] = static_cast<float>(std::sin(a));
    }
  }
}

void rope(float* x, int64_t T, int64_t n_heads, int64_t head_dim, int64_t rotary_dim, bool interleaved,
          const float* cos, const float* sin, int64_t ld) {
  const int64_t half = rotary_dim / 2;
  ThreadPool::global().parallel_for(T, std::max<int64_t>(1, 8192 / std::max<int64_t>(1, n_heads * head_dim)),
                                    [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const float* c = cos + t * half;
      const float* s = sin + t * half;
      for (int64_t h = 0; h < n_heads; ++h) {
        float* v = x + t * ld + h * head_dim;
        if (interleaved) {
          for (int64_t i = 0; i < half; ++i) {
            const float a = v[2 * i], b = v[2 * i + 1];
            v[2 * i] = a * c[i] - b * s[i];
            v[2 * i + 1] = b * c[i] + a * s[i];
          }
        } else {
          for (int64_t i = 0; i < half; ++i) {
            const float a = v[i], b = v[i + half];
            v[i] = a * c[i] - b * s[i];
            v[i + half] = b * c[i] + a * s[i];
          }
        }
      }
    }
  });
}

}  // namespace kiln::cpu
