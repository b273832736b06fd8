// Row-wise and element-wise CPU kernels: norms, activations (SiLU-gated rows vectorized), embedding lookup, softmax.
#include <algorithm>
#include <cmath>

#include "core/thread_pool.h"
#include "kernels/cpu/lanes.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/simd.h"
#include "kiln/error.h"

namespace kiln::cpu {
namespace {

// SiLU-gated rows eight lanes at a time (lanes_math.inc), vectorized or portable: the same bits either way.
namespace portable {
using Ops = PortableOps;
#include "kernels/cpu/lanes_math.inc"
}  // namespace portable

#ifdef KILN_LANES_X86
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
using Ops = Avx2Ops;
#include "kernels/cpu/lanes_math.inc"
}  // namespace avx2
#pragma GCC pop_options
#endif

using SiluMulFn = void (*)(const float*, const float*, float*, int64_t);

SiluMulFn silu_mul_fn() {
#ifdef KILN_LANES_X86
  if (simd_enabled()) return avx2::silu_mul;
#endif
  return portable::silu_mul;
}

// Rows per parallel chunk so that a chunk holds at least ~16K elements of work.
int64_t row_grain(int64_t dim) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, dim)); }

inline float act_one(float v, Activation act) {
  switch (act) {
    case Activation::SiLU:
      return v / (1.0f + std::exp(-v));
    case Activation::GeluTanh: {
      constexpr float kC = 0.7978845608028654f;  // sqrt(2 / pi)
      return 0.5f * v * (1.0f + std::tanh(kC * (v + 0.044715f * v * v * v)));
    }
    case Activation::GeluErf:
      return 0.5f * v * (1.0f + std::erf(v * 0.7071067811865476f));
  }
  return v;
}

}  // namespace

void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t dim, float eps, bool add_one,
              int64_t ldx, int64_t ldy) {
  if (ldx == 0) ldx = dim;
  if (ldy == 0) ldy = dim;
  ThreadPool::global().parallel_for(rows, row_grain(dim), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * ldx;
      float* yr = y + r * ldy;
      double ss = 0.0;
      for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(xr[i]) * xr[i];
      const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(dim) + eps));
      if (w == nullptr) {
        for (int64_t i = 0; i < dim; ++i) yr[i] = xr[i] * inv;
      } else if (add_one) {
        for (int64_t i = 0; i < dim; ++i) yr[i] = xr[i] * inv * (1.0f + w[i]);
      } else {
        for (int64_t i = 0; i < dim; ++i) yr[i] = xr[i] * inv * w[i];
      }
    }
  });
}

void layer_norm(const float* x, const float* w, const float* b, float* y, int64_t rows, int64_t dim, float eps) {
  ThreadPool::global().parallel_for(rows, row_grain(dim), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * dim;
      float* yr = y + r * dim;
      double sum = 0.0;
      for (int64_t i = 0; i < dim; ++i) sum += xr[i];
      const double mean = sum / static_cast<double>(dim);
      double var = 0.0;
      for (int64_t i = 0; i < dim; ++i) var += (xr[i] - mean) * (xr[i] - mean);
      var /= static_cast<double>(dim);
      const float inv = static_cast<float>(1.0 / std::sqrt(var + eps));
      const float m = static_cast<float>(mean);
      for (int64_t i = 0; i < dim; ++i) {
        float v = (xr[i] - m) * inv;
        if (w) v *= w[i];
        if (b) v += b[i];
        yr[i] = v;
      }
    }
  });
}

void activation(float* x, int64_t n, Activation act) {
  ThreadPool::global().parallel_for(n, 16384, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) x[i] = act_one(x[i], act);
  });
}

void gated_activation(const float* gate, const float* up, float* out, int64_t rows, int64_t n, int64_t ld_in,
                      Activation act) {
  if (act == Activation::SiLU) {
    const SiluMulFn fn = silu_mul_fn();
    ThreadPool::global().parallel_for(rows, row_grain(n), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) fn(gate + r * ld_in, up + r * ld_in, out + r * n, n);
    });
    return;
  }
  ThreadPool::global().parallel_for(rows, row_grain(n), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* g = gate + r * ld_in;
      const float* u = up + r * ld_in;
      float* o = out + r * n;
      for (int64_t i = 0; i < n; ++i) o[i] = act_one(g[i], act) * u[i];
    }
  });
}

void embedding(const float* table, int64_t vocab, int64_t dim, const int32_t* ids, int64_t T, float* out) {
  for (int64_t t = 0; t < T; ++t) {
    KILN_CHECK(ids[t] >= 0 && ids[t] < vocab, "token id {} at position {} is outside the vocabulary [0, {})", ids[t],
               t, vocab);
  }
  for (int64_t t = 0; t < T; ++t) std::copy_n(table + static_cast<int64_t>(ids[t]) * dim, dim, out + t * dim);
}

void add_inplace(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

void scale_inplace(float* x, int64_t n, float s) {
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

void clamp(float* x, int64_t n, float lo, float hi) {
  for (int64_t i = 0; i < n; ++i) x[i] = std::min(std::max(x[i], lo), hi);
}

void softcap(float* x, int64_t n, float cap) {
  for (int64_t i = 0; i < n; ++i) x[i] = cap * std::tanh(x[i] / cap);
}

void softmax(float* x, int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; ++r) {
    float* xr = x + r * n;
    const float mx = *std::max_element(xr, xr + n);
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      xr[i] = std::exp(xr[i] - mx);
      sum += xr[i];
    }
    const float inv = static_cast<float>(1.0 / sum);
    for (int64_t i = 0; i < n; ++i) xr[i] *= inv;
  }
}

void log_softmax(float* x, int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; ++r) {
    float* xr = x + r * n;
    const float mx = *std::max_element(xr, xr + n);
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(xr[i]) - mx);
    const float lse = mx + static_cast<float>(std::log(sum));
    for (int64_t i = 0; i < n; ++i) xr[i] -= lse;
  }
}

}  // namespace kiln::cpu
