// Model::load: picks the loader by path (HF folder, .gguf, llama2.c .bin, random weights); paged defaults.
#include "kiln/model.h"

#include <filesystem>

#include "core/thread_pool.h"
#include "kiln/error.h"
#include "model/cpu/cpu_decoder_model.h"
#include "model/loaders.h"
#ifdef KILN_HAVE_CUDA
#include "model/cuda/cuda_decoder_model.h"
#endif

namespace kiln {

namespace fs = std::filesystem;

std::unique_ptr<Model> Model::load(const std::string& path, const LoadOptions& options) {
  if (options.cpu_threads != 0) ThreadPool::set_global_threads(options.cpu_threads);
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  KILN_CHECK(!ec && fs::exists(st), "{}: no such file or folder", path);
  if (options.random_weights) return load_random(path, options);
  if (fs::is_directory(st)) return load_hf_folder(path, options);
  const std::string ext = fs::path(path).extension().string();
  if (ext == ".gguf") return load_gguf(path, options);
  if (ext == ".bin") return load_llama2c(path, options);
  if (ext == ".safetensors" || fs::path(path).filename() == "config.json") {
    const fs::path folder = fs::path(path).parent_path();
    return load_hf_folder(folder.empty() ? std::string(".") : folder.string(), options);
  }
  KILN_THROW("{}: not a model: expected an HF checkpoint folder, a .gguf file or a llama2.c .bin file", path);
}

std::unique_ptr<Model> make_decoder_model(ModelConfig config, const WeightSource& source, const LoadOptions& options) {
  if (options.device == Device::CUDA) {
#ifdef KILN_HAVE_CUDA
    return CudaDecoderModel::create(std::move(config), source, options);
#else
    KILN_THROW("{}: this kiln was built without the CUDA backend; use the CPU", source.path());
#endif
  }
  return CpuDecoderModel::create(std::move(config), source, options);
}

void Model::forward_batch_sample(KvPool&, Workspace&, const ForwardBatch&, std::span<const RowSampling>,
                                 BatchSamples&) const {
  KILN_THROW("this model backend does not sample on the device");
}

}  // namespace kiln
