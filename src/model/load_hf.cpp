// Hugging Face checkpoint folders: config.json picks the family, safetensors supplies the weights.
#include <algorithm>
#include <cstring>
#include <map>
#include <filesystem>
#include <vector>

#include "io/json_file.h"
#include "io/safetensors.h"
#include "kiln/error.h"
#include "model/loaders.h"
#include "model/weights.h"
#include "model/families/family.h"
#include "model/loaders.h"
#include "model/weights.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;

class HfSource final : public WeightSource {
 public:
  HfSource(const io::SafetensorsCheckpoint& ckpt, const Family& family, const ModelConfig& config)
      : ckpt_(ckpt), family_(family), config_(config) {}
  std::string path() const override { return ckpt_.path(); }
  std::string name(WeightRole role, int64_t layer) const override { return spec(role, layer).name; }
  bool has(WeightRole role, int64_t layer) const override { return entry(role, layer) != nullptr; }
  const io::TensorEntry* entry(WeightRole role, int64_t layer) const { return find(spec(role, layer).name); }
  StoredTensor read(WeightRole role, int64_t layer, const Shape& shape) const override {
    const TensorSpec s = spec(role, layer);
    const io::TensorEntry* e = find(s.name);
    KILN_CHECK(e != nullptr, "{}: missing tensor '{}'", ckpt_.path(), s.name);
    KILN_CHECK(dtype_is_float(e->dtype), "{}: tensor '{}' has dtype {}; only f32, f16 and bf16 weights are supported",
               e->file, s.name, dtype_name(e->dtype));
    // The shape the checkpoint must hold: `shape`, or the whole fused tensor a slice is taken from, in
    // stored orientation ([in, out] when transposed).
    const int64_t cols = shape.size() == 2 ? shape[1] : 1;
    Shape want = shape;
    if (s.rows > 0) {
      KILN_CHECK(s.blocks > 0 && s.row_offset >= 0 && s.row_offset + s.rows <= s.block_rows && shape.size() >= 1 &&
                     s.blocks * s.rows == shape[0],
                 "{}: tensor '{}': bad slice for shape {}", e->file, s.name, shape_str(shape));
      want[0] = s.blocks * s.block_rows;
    }
    if (s.transposed) {
      KILN_CHECK(want.size() == 2, "{}: tensor '{}' is read transposed but is not 2-D", e->file, s.name);
      std::swap(want[0], want[1]);
    }
    KILN_CHECK(e->shape == want, "{}: tensor '{}' has shape {}, expected {}", e->file, s.name, shape_str(e->shape),
               shape_str(want));
    StoredTensor out;
    out.dtype = e->dtype;
    out.shape = shape;
    const size_t es = dtype_size(e->dtype);
    const auto* src = static_cast<const uint8_t*>(e->data);
    if (s.rows == 0 && !s.transposed) {
      out.bytes.assign(src, src + static_cast<size_t>(shape_numel(shape)) * es);
      return out;
    }
    // Fused or transposed: gather the rows in the decoder's [out, in] order, element by element when transposed.
    const int64_t total_rows = s.rows > 0 ? s.blocks * s.block_rows : shape[0];
    std::vector<uint8_t> all;
    if (s.transposed) {
      all.resize(static_cast<size_t>(total_rows * cols) * es);
      for (int64_t r = 0; r < total_rows; ++r)
        for (int64_t k = 0; k < cols; ++k)
          std::memcpy(all.data() + (r * cols + k) * es, src + (k * total_rows + r) * es, es);
      src = all.data();
    }
    if (s.rows == 0) {
      out.bytes.assign(src, src + static_cast<size_t>(total_rows * cols) * es);
      return out;
    }
    out.bytes.resize(static_cast<size_t>(shape_numel(shape)) * es);
    const size_t row = static_cast<size_t>(cols) * es;
    for (int64_t b = 0; b < s.blocks; ++b)
      std::memcpy(out.bytes.data() + b * s.rows * row, src + (b * s.block_rows + s.row_offset) * row, s.rows * row);
    return out;
  }

 private:
  TensorSpec spec(WeightRole role, int64_t layer) const { return tensor_spec(family_, config_, role, layer); }
  // The entry of `name`, or of `name` without the family's optional prefix.
  const io::TensorEntry* find(const std::string& name) const {
    if (name.empty()) return nullptr;
    if (const io::TensorEntry* e = ckpt_.find(name)) return e;
    const std::string& pre = family_.optional_prefix;
    if (!pre.empty() && name.rfind(pre, 0) == 0) return ckpt_.find(name.substr(pre.size()));
    return nullptr;
  }

  const io::SafetensorsCheckpoint& ckpt_;
  const Family& family_;
  const ModelConfig config_;  // a copy: the caller's config moves into the model while this still reads
};

std::string supported_architectures() {
  std::string s;
  for (const Family& f : families())
    for (const std::string& a : f.architectures) s += (s.empty() ? "" : ", ") + a;
  return s;
}

}  // namespace

double round_to_dtype(double v, DType t) {
  const float f = static_cast<float>(v);
  if (t == DType::BF16) return bf16_to_f32(f32_to_bf16(f));
  if (t == DType::F16) return f16_to_f32(f32_to_f16(f));
  return f;
}

ModelConfig read_hf_config(const std::string& config_path, const Family** family_out) {
  const nlohmann::json j = io::read_json_file(config_path);
  KILN_CHECK(j.is_object(), "{}: not a JSON object", config_path);
  const auto arch_it = j.find("architectures");
  KILN_CHECK(arch_it != j.end() && arch_it->is_array() && !arch_it->empty() && (*arch_it)[0].is_string(),
             "{}: missing or empty 'architectures' list", config_path);
  const std::string arch = (*arch_it)[0].get<std::string>();
  const Family* family = find_family(arch);
  KILN_CHECK(family != nullptr, "{}: architecture '{}' (architectures[0]) is not supported; supported: {}",
             config_path, arch, supported_architectures());
  ModelConfig c = family->parse_config(j, config_path);
  c.architecture = arch;
  c.family = family->name;
  if (family_out != nullptr) *family_out = family;
  return c;
}

std::unique_ptr<Model> load_hf_folder(const std::string& dir, const LoadOptions& options) {
  const std::string config_path = (fs::path(dir) / "config.json").string();
  KILN_CHECK(fs::exists(config_path), "{}: no config.json in this folder (expected a Hugging Face checkpoint)", dir);
  const Family* family = nullptr;
  ModelConfig c = read_hf_config(config_path, &family);

  const io::SafetensorsCheckpoint ckpt(dir);
  const HfSource src(ckpt, *family, c);
  if (const io::TensorEntry* e = src.entry(WeightRole::Embed, 0)) c.checkpoint_dtype = e->dtype;
  {
    std::map<std::string, int> counts;
    for (const std::string& name : ckpt.names()) counts[std::string(dtype_name(ckpt.get(name).dtype))]++;
    for (const auto& [name, n] : counts)
      c.checkpoint_storage += fmt::format("{}{} x{}", c.checkpoint_storage.empty() ? "" : ", ", name, n);
  }
  if (c.embed_scale_in_checkpoint_dtype) c.embed_scale = round_to_dtype(c.embed_scale, c.checkpoint_dtype);
  return make_decoder_model(std::move(c), src, options);
}

}  // namespace kiln
