// Weight roles of a decoder layer and the interface each checkpoint format implements to supply them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kiln/tensor.h"

namespace kiln {

// What a tensor is for, independent of how a checkpoint format names it.
enum class WeightRole : uint8_t {
  Embed, FinalNorm, FinalNormBias, LmHead,
  AttnNorm, AttnNormBias, Q, K, V, O, QBias, KBias, VBias, OBias, QNorm, KNorm,
  MlpNorm, MlpNormBias, Gate, Up, Down, GateBias, UpBias, DownBias,
  PosEmbed, EmbedNorm, EmbedNormBias, LmHeadBias,
  PostAttnNorm, PostAttnNormBias, PostMlpNorm, PostMlpNormBias,
};

// The weight role whose module holds bias role `role` (QBias: Q, AttnNormBias: AttnNorm); nullopt for a role that is
// no bias.
std::optional<WeightRole> bias_owner(WeightRole role);
// Whether `role` is a norm's scale (its bias is a bias role).
bool is_norm_scale(WeightRole role);

// A tensor given by a formula: every element `value`, or element i = round_to(random_normal(key, i, stddev))
// (core/random_normal.h).
struct WeightFormula {
  enum Kind { Constant, Normal } kind = Constant;
  float value = 0.0f;
  uint64_t key = 0;
  double stddev = 0.0;
  DType round_to = DType::F32;
};

// A tensor as a checkpoint stores it, in Hugging Face row order ([out, in] for matrices): its element type and
// bytes, each row dtype_bytes(dtype, columns) bytes (a GGUF block-quantized row is a run of blocks).
struct StoredTensor {
  DType dtype = DType::F32;
  Shape shape;
  std::vector<uint8_t> bytes;
  int64_t numel() const { return shape_numel(shape); }
  // The values as f32 (block types dequantized).
  std::vector<float> to_f32() const;
};

// A checkpoint seen as tensors by role. Implementations hand over the stored bytes (no conversion) and undo
// format-specific layouts (e.g. GGUF's permuted q/k rows, fused or transposed tensors) so every source yields
// Hugging Face row order.
class WeightSource {
 public:
  virtual ~WeightSource() = default;
  // The file or folder, for messages.
  virtual std::string path() const = 0;
  // The name this format gives the tensor (layer ignored for global roles).
  virtual std::string name(WeightRole role, int64_t layer) const = 0;
  virtual bool has(WeightRole role, int64_t layer) const = 0;
  // Checks the stored shape equals `shape` and returns the tensor as stored; throws kiln::Error naming the tensor
  // and the file when it is missing, has another shape or a type kiln does not read.
  virtual StoredTensor read(WeightRole role, int64_t layer, const Shape& shape) const = 0;
  // read(), as f32 values into dst.
  void read_f32(WeightRole role, int64_t layer, const Shape& shape, float* dst) const;
  // Sources whose values are a formula (random weights) describe it here, so a device loader can compute them in
  // place instead of copying what read() gives; read() must return exactly these values. nullopt: no formula.
  virtual std::optional<WeightFormula> formula(WeightRole, int64_t) const { return std::nullopt; }
};

}  // namespace kiln
