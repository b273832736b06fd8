// Model families: each family file maps an HF `architectures` value to a ModelConfig and tensor names.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/model_config.h"
#include "model/weights.h"

namespace kiln {

struct Family {
  std::string name;                        // "llama", "mistral", ...
  std::vector<std::string> architectures;  // HF `architectures[0]` values it handles
  // config.json (already parsed) → ModelConfig; `path` names the file in errors.
  ModelConfig (*parse_config)(const nlohmann::json& config, const std::string& path);
  // The checkpoint tensor name of a role in layer `layer` (ignored for global roles).
  std::string (*tensor_name)(WeightRole role, int64_t layer);
};

// Every family kiln knows, in the order they are tried.
const std::vector<Family>& families();
// The family handling `architecture`, or nullptr.
const Family* find_family(const std::string& architecture);

// The families' own descriptors (one per file in model/families/).
Family llama_family();
Family mistral_family();
Family qwen2_family();
Family qwen3_family();

namespace hf {

// The parts of config.json that every Llama-like family reads the same way: sizes, heads, head_dim,
// norm eps, activation, rope (rope_theta / rope_scaling / rope_parameters, HF 4.x and 5.x spellings),
// tie_word_embeddings, dtype, bos/eos. Missing required fields throw naming the field and `path`.
ModelConfig parse_llama_like(const nlohmann::json& config, const std::string& path, const std::string& family);

// Per-layer windows from `layer_types` when present, else `fallback` (0: full) for every layer.
void parse_sliding_window(const nlohmann::json& config, const std::string& path, ModelConfig& cfg,
                          int64_t fallback);

// Qwen2/Qwen3 windows: use_sliding_window + sliding_window on layers >= max_window_layers (or layer_types).
void parse_qwen_window(const nlohmann::json& config, const std::string& path, ModelConfig& cfg);

// Hugging Face Llama tensor names (model.layers.N.self_attn.q_proj.weight, ...), shared by the
// Llama-like families.
std::string llama_tensor_name(WeightRole role, int64_t layer);

// Typed field access with errors naming the field and the file.
int64_t get_int(const nlohmann::json& j, const char* key, const std::string& path);
int64_t get_int(const nlohmann::json& j, const char* key, const std::string& path, int64_t def);
double get_float(const nlohmann::json& j, const char* key, const std::string& path, double def);
bool get_bool(const nlohmann::json& j, const char* key, const std::string& path, bool def);

}  // namespace hf
}  // namespace kiln
