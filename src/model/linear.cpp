// Linear formats: names, host views, the one definition of dequantization, and round-to-nearest quantizers.
#include "model/linear.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "core/block_formats.h"
#include "kiln/error.h"

namespace kiln {

std::string format_name(const LinearFormat& f) {
  std::string s;
  switch (f.weight) {
    case DType::F8E4M3: s = "fp8"; break;
    case DType::I8: s = "int8"; break;
    case DType::U4: s = "int4"; break;
    default: s = std::string(dtype_name(f.weight)); break;
  }
  switch (f.scale) {
    case ScaleKind::None: break;
    case ScaleKind::PerTensor: s += " per-tensor"; break;
    case ScaleKind::PerChannel: s += " per-channel"; break;
    case ScaleKind::PerGroup: s += fmt::format(" g{}{}", f.group_size, f.zeros ? " with zeros" : ""); break;
  }
  switch (f.act) {
    case ActQuant::None: break;
    case ActQuant::Fp8PerToken: s += ", fp8 activations per token"; break;
    case ActQuant::Fp8Static: s += ", fp8 activations (static scale)"; break;
    case ActQuant::Int8PerToken: s += ", int8 activations per token"; break;
  }
  return s;
}

int64_t Linear::num_scales() const {
  switch (format.scale) {
    case ScaleKind::None: return 0;
    case ScaleKind::PerTensor: return 1;
    case ScaleKind::PerChannel: return out;
    case ScaleKind::PerGroup: return out * (in / format.group_size);
  }
  return 0;
}

Linear HostLinear::view() const {
  Linear l;
  l.format = format;
  l.out = out;
  l.in = in;
  l.weight = weight.data();
  l.scales = scales.empty() ? nullptr : scales.data();
  l.zeros = zeros.empty() ? nullptr : zeros.data();
  l.bias = bias.empty() ? nullptr : bias.data();
  l.bias_dtype = DType::F32;
  l.act_scale = act_scale;
  return l;
}

int64_t HostLinear::bytes() const {
  return static_cast<int64_t>(weight.size() + scales.size() * sizeof(float) + zeros.size());
}

void dequantize_row(const Linear& w, int64_t r, float* dst) {
  const auto* row = static_cast<const uint8_t*>(w.weight) + r * w.row_bytes();
  const LinearFormat& f = w.format;
  if (f.dense() || dtype_is_gguf_block(f.weight)) {
    convert_to_f32(f.weight, row, dst, static_cast<size_t>(w.in));
    return;
  }
  if (f.weight == DType::F8E4M3 || f.weight == DType::I8) {
    const float s = f.scale == ScaleKind::PerTensor ? w.scales[0] : w.scales[r];
    KILN_CHECK(f.scale == ScaleKind::PerTensor || f.scale == ScaleKind::PerChannel,
               "linear: {} weights need a per-tensor or per-channel scale", dtype_name(f.weight));
    if (f.weight == DType::F8E4M3) {
      for (int64_t i = 0; i < w.in; ++i) dst[i] = fp8_e4m3_to_f32(row[i]) * s;
    } else {
      for (int64_t i = 0; i < w.in; ++i) dst[i] = static_cast<float>(static_cast<int8_t>(row[i])) * s;
    }
    return;
  }
  KILN_CHECK(f.weight == DType::U4 && f.scale == ScaleKind::PerGroup && f.group_size > 0 && w.in % f.group_size == 0,
             "linear: format {} is not supported", format_name(f));
  const int64_t groups = w.in / f.group_size;
  for (int64_t g = 0; g < groups; ++g) {
    const float s = w.scales[r * groups + g];
    const float z = f.zeros ? static_cast<float>(w.zeros[r * groups + g]) : 8.0f;
    for (int64_t i = g * f.group_size; i < (g + 1) * f.group_size; ++i) {
      const int q = (row[i / 2] >> (4 * (i % 2))) & 0x0f;
      dst[i] = (static_cast<float>(q) - z) * s;  // q - z is an exact small integer: one rounding
    }
  }
}

HostLinear quantize_linear(const float* w, int64_t out, int64_t in, const LinearFormat& f) {
  HostLinear h;
  h.format = f;
  h.out = out;
  h.in = in;
  auto amax_of = [](const float* p, int64_t n) {
    float a = 0.0f;
    for (int64_t i = 0; i < n; ++i) a = std::max(a, std::fabs(p[i]));
    return a;
  };
  if (f.weight == DType::F8E4M3 || f.weight == DType::I8) {
    KILN_CHECK(f.scale == ScaleKind::PerTensor || f.scale == ScaleKind::PerChannel,
               "quantize: {} weights take a per-tensor or per-channel scale", dtype_name(f.weight));
    const bool fp8 = f.weight == DType::F8E4M3;
    const float qmax = fp8 ? 448.0f : 127.0f;
    h.weight.resize(static_cast<size_t>(out * in));
    if (f.scale == ScaleKind::PerTensor) {
      const float a = amax_of(w, out * in);
      h.scales = {a > 0 ? a / qmax : 1.0f};
    } else {
      h.scales.resize(static_cast<size_t>(out));
      for (int64_t r = 0; r < out; ++r) {
        const float a = amax_of(w + r * in, in);
        h.scales[r] = a > 0 ? a / qmax : 1.0f;
      }
    }
    for (int64_t r = 0; r < out; ++r) {
      const float s = h.scales[f.scale == ScaleKind::PerTensor ? 0 : r];
      for (int64_t i = 0; i < in; ++i) {
        const float v = w[r * in + i] / s;
        h.weight[r * in + i] = fp8 ? f32_to_fp8_e4m3(v)
                                   : static_cast<uint8_t>(static_cast<int8_t>(
                                         std::clamp<long>(std::lround(v), -127, 127)));
      }
    }
    return h;
  }
  KILN_CHECK(f.weight == DType::U4 && f.scale == ScaleKind::PerGroup && f.zeros && f.group_size > 0 &&
                 in % f.group_size == 0 && f.group_size % 2 == 0,
             "quantize: format {} is not one kiln quantizes to (fp8 or int8 per tensor or channel, int4 per group "
             "with zeros; {} inputs)",
             format_name(f), in);
  const int64_t groups = in / f.group_size;
  h.weight.assign(static_cast<size_t>(out * in / 2), 0);
  h.scales.resize(static_cast<size_t>(out * groups));
  h.zeros.resize(static_cast<size_t>(out * groups));
  for (int64_t r = 0; r < out; ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      const float* p = w + r * in + g * f.group_size;
      float lo = 0.0f, hi = 0.0f;  // the range always holds 0, so 0 is exact (zero padding stays zero)
      for (int64_t i = 0; i < f.group_size; ++i) lo = std::min(lo, p[i]), hi = std::max(hi, p[i]);
      const float s = hi > lo ? (hi - lo) / 15.0f : 1.0f;
      const int z = std::clamp(static_cast<int>(std::lround(-lo / s)), 0, 15);
      h.scales[r * groups + g] = s;
      h.zeros[r * groups + g] = static_cast<uint8_t>(z);
      for (int64_t i = 0; i < f.group_size; ++i) {
        const int q = std::clamp(static_cast<int>(std::lround(p[i] / s)) + z, 0, 15);
        const int64_t idx = r * in + g * f.group_size + i;
        h.weight[idx / 2] |= static_cast<uint8_t>(q << (4 * (idx % 2)));
      }
    }
  }
  return h;
}

}  // namespace kiln
