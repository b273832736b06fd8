// Linear: a linear layer as data — how its weight is stored (dense, fp8, int8, packed int4, a GGUF block type), its
// scales, zero points, bias and input treatment, and which part of the full matrix this device holds. Each backend
// has one linear() that dispatches on the format; HostLinear is a linear as loaded, before a backend places it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kiln/dtype.h"
#include "kiln/tensor.h"

namespace kiln {

// Where the scales of a quantized weight apply.
enum class ScaleKind : uint8_t {
  None,        // dense weights, or a GGUF block type (its scales are inside the blocks)
  PerTensor,   // one scale for the whole weight
  PerChannel,  // one per output row
  PerGroup,    // one per (output row, group of group_size inputs)
};

// How a linear treats its input.
enum class ActQuant : uint8_t {
  None,          // the input as the backend computes (f32 on the CPU, bf16/f16 on the GPU)
  Fp8PerToken,   // each row quantized to fp8 e4m3 with its own scale amax / 448 (dynamic)
  Fp8Static,     // every row quantized to fp8 e4m3 with one fixed scale (a checkpoint's input_scale)
  Int8PerToken,  // each row quantized to int8 with its own scale amax / 127 (dynamic)
};

struct LinearFormat {
  // F32/F16/BF16 (dense), F8E4M3, I8, U4 (two 4-bit values a byte, low nibble first) or a GGUF block type.
  DType weight = DType::F32;
  ScaleKind scale = ScaleKind::None;
  int32_t group_size = 0;  // PerGroup: inputs per group
  bool zeros = false;      // PerGroup: a zero point per group (value = scale * (q - zero)); else q is centred
  ActQuant act = ActQuant::None;

  bool dense() const { return dtype_is_float(weight); }
  bool operator==(const LinearFormat&) const = default;
};
// A readable name: "bf16", "q4_1", "fp8 per-channel", "int8 per-channel, int8 activations per token",
// "u4 g128 with zeros".
std::string format_name(const LinearFormat& f);

// Which rows and columns of the full [out, in] matrix a device holds (tensor parallelism). Empty: all of it.
struct LinearShard {
  int64_t out_begin = 0, out_end = 0;  // rows [out_begin, out_end); out_end 0: every row
  int64_t in_begin = 0, in_end = 0;    // columns likewise
  bool empty() const { return out_end == 0 && in_end == 0; }
};

// A linear layer placed in a backend's memory: y[t, o] = sum_i x[t, i] * W[o, i] (+ bias[o]), W of out rows.
//   dense:  W as stored (rows of `in` values of format.weight);
//   fp8/i8: W[o, i] = q[o, i] * scale (per tensor or per row o);
//   u4:     W[o, i] = (q[o, i] - zero[o, g]) * scale[o, g] with g = i / group_size (q - 8 without zeros);
//   GGUF:   each row a run of blocks (core/block_formats.h).
// Scales are f32; zero points one byte per (row, group); the bias is f32 or, where the backend wants it in its
// compute type (the CUDA qkv GEMM), of bias_dtype.
struct Linear {
  LinearFormat format;
  int64_t out = 0, in = 0;
  LinearShard shard;
  const void* weight = nullptr;
  const float* scales = nullptr;
  const uint8_t* zeros = nullptr;
  const void* bias = nullptr;
  DType bias_dtype = DType::F32;
  float act_scale = 0.0f;  // ActQuant::Fp8Static

  bool present() const { return weight != nullptr; }
  // Bytes of one weight row as stored.
  int64_t row_bytes() const { return static_cast<int64_t>(dtype_bytes(format.weight, in)); }
  int64_t num_scales() const;
};

// A linear as loaded on the host, in the layout Linear describes, before a backend places it.
struct HostLinear {
  LinearFormat format;
  int64_t out = 0, in = 0;
  std::vector<uint8_t> weight;  // out * row bytes
  std::vector<float> scales;
  std::vector<uint8_t> zeros;
  std::vector<float> bias;      // empty: none
  float act_scale = 0.0f;

  // A view of this host data (scales and zeros null when empty; bias f32).
  Linear view() const;
  int64_t bytes() const;  // weight + scales + zeros
};

// Row r of W as f32 values (dequantized as the format defines, exactly what every backend must compute).
void dequantize_row(const Linear& w, int64_t r, float* dst);

// Quantizes dense f32 rows [out, in] into `format` (F8E4M3 per-tensor or per-channel, I8 per-channel, U4 per group
// with zeros) by round-to-nearest against each scale's amax; the act field is copied as given.
HostLinear quantize_linear(const float* w, int64_t out, int64_t in, const LinearFormat& format);

}  // namespace kiln
