// Weight roles of a decoder layer and the interface each checkpoint format implements to supply them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

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

// A tensor given by a formula: every element `value`, or element i = round_to(random_normal(key, i, stddev))
// (core/random_normal.h).
struct WeightFormula {
  enum Kind { Constant, Normal } kind = Constant;
  float value = 0.0f;
  uint64_t key = 0;
  double stddev = 0.0;
  DType round_to = DType::F32;
};

// A checkpoint seen as tensors by role. Implementations convert to f32 and undo format-specific
// layouts (e.g. GGUF's permuted q/k rows) so every source yields Hugging Face row order.
class WeightSource {
 public:
  virtual ~WeightSource() = default;
  // The file or folder, for messages.
  virtual std::string path() const = 0;
  // The name this format gives the tensor (layer ignored for global roles).
  virtual std::string name(WeightRole role, int64_t layer) const = 0;
  virtual bool has(WeightRole role, int64_t layer) const = 0;
  // Checks the stored shape equals `shape` and writes the values as f32 to dst; throws kiln::Error naming
  // the tensor and the file when it is missing or has another shape.
  virtual void read(WeightRole role, int64_t layer, const Shape& shape, float* dst) const = 0;
  // Sources whose values are a formula (random weights) describe it here, so a device loader can compute them in
  // place instead of copying what read() gives; read() must return exactly these values. nullopt: no formula.
  virtual std::optional<WeightFormula> formula(WeightRole, int64_t) const { return std::nullopt; }
};

}  // namespace kiln
