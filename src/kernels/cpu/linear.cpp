// The CPU linear over every weight format: dense f32 straight to matmul, anything else dequantized to f32 first
// (weight-only formats) or with the input quantized as the GPU does (fp8 / int8 activations).
#include "kernels/cpu/linear.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/thread_pool.h"
#include "kernels/cpu/ops.h"
#include "kiln/error.h"

namespace kiln::cpu {
namespace {

// Scratch reused across calls (linear runs on one thread at a time, like every CPU kernel).
std::vector<float>& scratch(int which) {
  static thread_local std::vector<float> buf[3];
  return buf[which];
}

// W's rows [out, in] as f32: dequantized values (codes_only: the fp8 / int8 codes without their scales).
void weight_rows_f32(const Linear& w, bool codes_only, float* dst) {
  Linear v = w;
  std::vector<float> ones;
  if (codes_only) {
    ones.assign(static_cast<size_t>(std::max<int64_t>(1, w.num_scales())), 1.0f);
    v.scales = ones.data();
  }
  ThreadPool::global().parallel_for(w.out, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) dequantize_row(v, r, dst + r * w.in);
  });
}

}  // namespace

void quantize_rows(ActQuant act, const float* x, int64_t T, int64_t n, int64_t ldx, float static_scale, float* codes,
                   float* scales) {
  if (ldx == 0) ldx = n;
  const bool fp8 = act != ActQuant::Int8PerToken;
  const float qmax = fp8 ? 448.0f : 127.0f;
  for (int64_t t = 0; t < T; ++t) {
    const float* row = x + t * ldx;
    float s = static_scale;
    if (act != ActQuant::Fp8Static) {
      float a = 0.0f;
      for (int64_t i = 0; i < n; ++i) a = std::max(a, std::fabs(row[i]));
      s = a > 0.0f ? a / qmax : 1.0f;
    }
    scales[t] = s;
    for (int64_t i = 0; i < n; ++i) {
      const float v = row[i] / s;
      codes[t * n + i] = fp8 ? round_to_fp8_e4m3(v) : static_cast<float>(std::clamp(std::nearbyint(v), -127.0f, 127.0f));
    }
  }
}

void linear(const Linear& w, const float* x, int64_t T, float* y, int64_t ldx, int64_t ldy) {
  KILN_CHECK(w.present(), "linear: no weight");
  KILN_CHECK(w.bias == nullptr || w.bias_dtype == DType::F32, "linear: the CPU takes f32 biases");
  if (T <= 0) return;
  if (ldx == 0) ldx = w.in;
  if (ldy == 0) ldy = w.out;
  const auto* bias = static_cast<const float*>(w.bias);
  if (w.format.act == ActQuant::None) {
    if (w.format.weight == DType::F32) {
      matmul(x, T, w.in, static_cast<const float*>(w.weight), w.out, bias, y, ldx, ldy);
      return;
    }
    std::vector<float>& deq = scratch(0);
    deq.resize(static_cast<size_t>(w.out * w.in));
    weight_rows_f32(w, false, deq.data());
    matmul(x, T, w.in, deq.data(), w.out, bias, y, ldx, ldy);
    return;
  }

  const LinearFormat& f = w.format;
  const bool int8 = f.act == ActQuant::Int8PerToken;
  KILN_CHECK((int8 ? f.weight == DType::I8 : f.weight == DType::F8E4M3) &&
                 (f.scale == ScaleKind::PerTensor || f.scale == ScaleKind::PerChannel),
             "linear: {} is not a format kiln computes", format_name(f));
  std::vector<float>& codes = scratch(0);
  std::vector<float>& wq = scratch(1);
  std::vector<float>& sx = scratch(2);
  codes.resize(static_cast<size_t>(T * w.in));
  sx.resize(static_cast<size_t>(T));
  quantize_rows(f.act, x, T, w.in, ldx, w.act_scale, codes.data(), sx.data());
  wq.resize(static_cast<size_t>(w.out * w.in));
  weight_rows_f32(w, true, wq.data());
  auto scale_of = [&](int64_t o) { return f.scale == ScaleKind::PerTensor ? w.scales[0] : w.scales[o]; };
  if (!int8) {
    // fp8 codes multiplied and summed in f32 (the tensor cores' products of e4m3 values are exact in f32).
    matmul(codes.data(), T, w.in, wq.data(), w.out, nullptr, y, w.in, ldy);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t o = 0; o < w.out; ++o) {
        float& v = y[t * ldy + o];
        v = (v * sx[t]) * scale_of(o);
        if (bias) v += bias[o];
      }
    return;
  }
  // int8: exact integer sums, as the int8 tensor cores accumulate in int32.
  ThreadPool::global().parallel_for(w.out, 8, [&](int64_t o0, int64_t o1) {
    for (int64_t t = 0; t < T; ++t) {
      const float* xr = codes.data() + t * w.in;
      for (int64_t o = o0; o < o1; ++o) {
        const float* wr = wq.data() + o * w.in;
        int64_t acc = 0;
        for (int64_t i = 0; i < w.in; ++i) acc += static_cast<int64_t>(xr[i]) * static_cast<int64_t>(wr[i]);
        float v = (static_cast<float>(acc) * sx[t]) * scale_of(o);
        if (bias) v += bias[o];
        y[t * ldy + o] = v;
      }
    }
  });
}

}  // namespace kiln::cpu
