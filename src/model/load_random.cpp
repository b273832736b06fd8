// Random weights for an HF config.json: full-size shapes can be run and measured without a checkpoint.
#include <fmt/format.h>

#include <cmath>
#include <filesystem>

#include "core/random_normal.h"
#include "core/thread_pool.h"
#include "kiln/error.h"
#include "model/loaders.h"
#include "model/weights.h"
#include "model/families/family.h"
#include "model/loaders.h"
#include "model/weights.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;

// Every tensor a config calls for: norm scales 1 (0 where the norm scales by 1 + w), biases 0, the rest
// normal(0, 0.02) from a counter-based generator keyed by (seed, role, layer), so a value depends only on
// where it is, never on the order of reads or the number of threads.
class RandomSource final : public WeightSource {
 public:
  RandomSource(std::string path, const ModelConfig& c, uint64_t seed, DType dtype)
      : path_(std::move(path)), norm_add_one_(c.norm_add_one), seed_(seed), dtype_(dtype) {}
  std::string path() const override { return path_; }
  std::string name(WeightRole role, int64_t layer) const override {
    return fmt::format("random[role {}, layer {}]", static_cast<int>(role), layer);
  }
  bool has(WeightRole, int64_t) const override { return true; }
  // Constants as f32; random values stored as the dtype they are rounded to, as a checkpoint of it would hold.
  StoredTensor read(WeightRole role, int64_t layer, const Shape& shape) const override {
    const int64_t n = shape_numel(shape);
    const WeightFormula f = *formula(role, layer);
    StoredTensor t;
    t.shape = shape;
    if (f.kind == WeightFormula::Constant) {
      t.dtype = DType::F32;
      t.bytes.resize(static_cast<size_t>(n) * sizeof(float));
      std::fill_n(reinterpret_cast<float*>(t.bytes.data()), n, f.value);
      return t;
    }
    t.dtype = f.round_to;
    t.bytes.resize(dtype_bytes(t.dtype, n));
    uint8_t* out = t.bytes.data();
    const DType dt = f.round_to;
    ThreadPool::global().parallel_for(n, 1 << 15, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const float v = static_cast<float>(random_normal(f.key, i, f.stddev));
        if (dt == DType::F32) {
          reinterpret_cast<float*>(out)[i] = v;
        } else {
          reinterpret_cast<uint16_t*>(out)[i] = dt == DType::BF16 ? f32_to_bf16(v) : f32_to_f16(v);
        }
      }
    });
    return t;
  }
  // The same values as a formula, so the CUDA loader fills them on the device (cuda::fill_normal).
  std::optional<WeightFormula> formula(WeightRole role, int64_t layer) const override {
    WeightFormula f;
    if (is_norm_scale(role) || bias_owner(role)) {
      f.kind = WeightFormula::Constant;
      f.value = is_norm_scale(role) && !norm_add_one_ ? 1.0f : 0.0f;
      return f;
    }
    f.kind = WeightFormula::Normal;
    f.key = splitmix64(seed_ ^ splitmix64((static_cast<uint64_t>(role) << 32) ^ static_cast<uint64_t>(layer + 1)));
    f.stddev = 0.02;
    f.round_to = dtype_;
    return f;
  }

 private:
  std::string path_;
  bool norm_add_one_;
  uint64_t seed_;
  DType dtype_;
};

}  // namespace

std::unique_ptr<Model> load_random(const std::string& path, const LoadOptions& options) {
  std::string config_path = path;
  if (fs::is_directory(path)) {
    config_path = (fs::path(path) / "config.json").string();
    KILN_CHECK(fs::exists(config_path), "{}: no config.json in this folder (random weights need an HF config.json)",
               path);
  } else {
    KILN_CHECK(fs::path(path).extension() == ".json",
               "{}: random weights need an HF config.json (or a folder holding one), not this file", path);
  }
  ModelConfig c = read_hf_config(config_path);
  const DType dtype = options.random_dtype.value_or(c.checkpoint_dtype);
  KILN_CHECK(dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16,
             "{}: random weights can be f32, f16 or bf16, not {}", config_path, dtype_name(dtype));
  c.checkpoint_dtype = dtype;
  c.checkpoint_storage = fmt::format("random {} (seed {})", dtype_name(dtype), options.random_seed);
  if (c.embed_scale_in_checkpoint_dtype) c.embed_scale = round_to_dtype(c.embed_scale, c.checkpoint_dtype);
  const RandomSource src(config_path, c, options.random_seed, dtype);
  return make_decoder_model(std::move(c), src, options);
}

}  // namespace kiln
