// The checkpoint formats Model::load understands; each builds a ModelConfig and a WeightSource.
#pragma once

#include <memory>
#include <string>

#include "model/model.h"

namespace kiln {

// A folder with config.json and model.safetensors (or a sharded index).
std::unique_ptr<Model> load_hf_folder(const std::string& dir, const LoadOptions& options);
// A GGUF file with general.architecture == "llama".
std::unique_ptr<Model> load_gguf(const std::string& path, const LoadOptions& options);
// A llama2.c checkpoint (legacy header of 7 int32, fp32 weights).
std::unique_ptr<Model> load_llama2c(const std::string& path, const LoadOptions& options);

}  // namespace kiln
