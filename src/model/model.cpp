// Model::load: picks the loader by path (HF folder, .gguf, llama2.c .bin, random weights); paged defaults.
#include "model/model.h"

#include <filesystem>

#include "kiln/error.h"
#include "model/cuda_decoder_model.h"
#include "model/decoder_model.h"
#include "model/loaders.h"

namespace kiln {

namespace fs = std::filesystem;

std::unique_ptr<Model> Model::load(const std::string& path, const LoadOptions& options) {
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
    CudaModelOptions cuda;
    cuda.dtype = options.compute_dtype;
    cuda.cuda_graphs = options.cuda_graphs;
    cuda.kv_fp8 = options.kv_cache_fp8;
    return CudaDecoderModel::create(std::move(config), source, options, cuda);
#else
    KILN_THROW("{}: this kiln was built without the CUDA backend; use the CPU", source.path());
#endif
  }
  return DecoderModel::create(std::move(config), source, options);
}

// Backends without a paged forward refuse it by name; the runtime needs one.
int64_t Model::kv_block_bytes(int32_t) const { KILN_THROW("this model backend has no paged KV cache"); }

void Model::forward_batch_sample(KvPool&, const ForwardBatch&, std::span<const RowSampling>, BatchSamples&) const {
  KILN_THROW("this model backend does not sample on the device");
}

std::unique_ptr<KvPool> Model::new_kv_pool(int64_t, int32_t, int64_t) const {
  KILN_THROW("this model backend has no paged KV cache");
}

void Model::forward_batch(KvPool&, const ForwardBatch&, std::vector<float>&) const {
  KILN_THROW("this model backend has no paged forward");
}

}  // namespace kiln
