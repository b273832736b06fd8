// The checkpoint formats Model::load understands; each builds a ModelConfig and a WeightSource.
#pragma once

#include <memory>
#include <string>

#include "kiln/model.h"

namespace kiln {

struct Family;
class WeightSource;

// The decoder of `config` on options.device: DecoderModel on the CPU, CudaDecoderModel on CUDA (CUDA builds;
// refused by name otherwise).
std::unique_ptr<Model> make_decoder_model(ModelConfig config, const WeightSource& source, const LoadOptions& options);

// A folder with config.json and model.safetensors (or a sharded index).
std::unique_ptr<Model> load_hf_folder(const std::string& dir, const LoadOptions& options);
// An HF config.json: its family (architectures[0]) and the ModelConfig that family parses from it.
ModelConfig read_hf_config(const std::string& config_path, const Family** family = nullptr);
// An HF config.json (the file, or a folder holding it) with deterministic random weights (LoadOptions).
std::unique_ptr<Model> load_random(const std::string& path, const LoadOptions& options);
// `v` as the nearest value of dtype t (HF computes some constants as tensors of the weights' dtype).
double round_to_dtype(double v, DType t);
// A GGUF file with general.architecture == "llama".
std::unique_ptr<Model> load_gguf(const std::string& path, const LoadOptions& options);
// A llama2.c checkpoint (legacy header of 7 int32, fp32 weights).
std::unique_ptr<Model> load_llama2c(const std::string& path, const LoadOptions& options);

}  // namespace kiln
