// Hugging Face checkpoint folders: config.json picks the family, safetensors supplies the weights.
#include <filesystem>

#include "io/json_file.h"
#include "io/safetensors.h"
#include "kiln/error.h"
#include "model/decoder_model.h"
#include "model/families/family.h"
#include "model/loaders.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;

class HfSource final : public WeightSource {
 public:
  HfSource(const io::SafetensorsCheckpoint& ckpt, const Family& family) : ckpt_(ckpt), family_(family) {}
  std::string path() const override { return ckpt_.path(); }
  std::string name(WeightRole role, int64_t layer) const override { return family_.tensor_name(role, layer); }
  bool has(WeightRole role, int64_t layer) const override { return ckpt_.find(name(role, layer)) != nullptr; }
  void read(WeightRole role, int64_t layer, const Shape& shape, float* dst) const override {
    const std::string n = name(role, layer);
    const io::TensorEntry* e = ckpt_.find(n);
    KILN_CHECK(e != nullptr, "{}: missing tensor '{}'", ckpt_.path(), n);
    KILN_CHECK(e->shape == shape, "{}: tensor '{}' has shape {}, expected {}", e->file, n, shape_str(e->shape),
               shape_str(shape));
    KILN_CHECK(e->dtype == DType::F32 || e->dtype == DType::F16 || e->dtype == DType::BF16,
               "{}: tensor '{}' has dtype {}; only f32, f16 and bf16 weights are supported", e->file, n,
               dtype_name(e->dtype));
    convert_to_f32(e->dtype, e->data, dst, static_cast<size_t>(shape_numel(shape)));
  }

 private:
  const io::SafetensorsCheckpoint& ckpt_;
  const Family& family_;
};

std::string supported_architectures() {
  std::string s;
  for (const Family& f : families())
    for (const std::string& a : f.architectures) s += (s.empty() ? "" : ", ") + a;
  return s;
}

}  // namespace

std::unique_ptr<Model> load_hf_folder(const std::string& dir, const LoadOptions& options) {
  const std::string config_path = (fs::path(dir) / "config.json").string();
  KILN_CHECK(fs::exists(config_path), "{}: no config.json in this folder (expected a Hugging Face checkpoint)", dir);
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

  const io::SafetensorsCheckpoint ckpt(dir);
  if (const io::TensorEntry* e = ckpt.find(family->tensor_name(WeightRole::Embed, 0))) c.checkpoint_dtype = e->dtype;
  const HfSource src(ckpt, *family);
  return DecoderModel::create(std::move(c), src, options);
}

}  // namespace kiln
