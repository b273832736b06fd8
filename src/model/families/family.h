// Model families: each family file maps an HF `architectures` value to a ModelConfig and tensor names.
#pragma once

#include <initializer_list>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kiln/model_config.h"
#include "model/families/tensor_table.h"
#include "model/weights.h"

namespace kiln {

struct Family {
  std::string name;                        // "llama", "mistral", ...
  std::vector<std::string> architectures;  // HF `architectures[0]` values it handles
  // config.json (already parsed) → ModelConfig; `path` names the file in errors.
  ModelConfig (*parse_config)(const nlohmann::json& config, const std::string& path);
  // The checkpoint's tensor names (model/families/tensor_table.h).
  TensorTable tensors;
  // A prefix that checkpoints saved from the base model (GPT2Model rather than GPT2LMHeadModel, as the
  // original gpt2 and bloom uploads were) leave off: a name missing with it is looked up without it.
  std::string optional_prefix = {};
};

// The spec of a role for `family`: its table's entry for the role, read with `config`'s sizes.
TensorSpec tensor_spec(const Family& family, const ModelConfig& config, WeightRole role, int64_t layer);

// Every family kiln knows, in the order they are tried.
const std::vector<Family>& families();
// The family handling `architecture`, or nullptr.
const Family* find_family(const std::string& architecture);

// llama.cpp's names for the Llama layout in GGUF files (blk.N.attn_q.weight, ...).
const TensorTable& gguf_llama_tensors();

// The families' own descriptors (one per file in model/families/).
Family llama_family();
Family mistral_family();
Family qwen2_family();
Family qwen3_family();
Family gpt2_family();
Family gptj_family();
Family gpt_neox_family();
Family falcon_family();
Family mpt_family();
Family bloom_family();
Family gemma_family();
Family gemma2_family();
Family phi3_family();

namespace hf {

// The parts of config.json that every Llama-like family reads the same way: sizes, heads, head_dim,
// norm eps, activation, rope (rope_theta / rope_scaling / rope_parameters, HF 4.x and 5.x spellings),
// tie_word_embeddings, dtype, bos/eos. Missing required fields throw naming the field and `path`.
ModelConfig parse_llama_like(const nlohmann::json& config, const std::string& path, const std::string& family);

// The GPT-2 lineage's shared part (GPT-2, GPT-J, GPT-NeoX, Falcon, MPT, BLOOM): vocab_size and the hidden size,
// layer count and head count under the family's spellings (the first of each list is named in errors), checked
// positive with the hidden size a multiple of the heads; one KV head per head, head_dim = hidden / heads;
// LayerNorm with eps from `norm_eps` (default 1e-5); an ungated MLP; parse_common's fields.
struct GptFields {
  std::initializer_list<const char*> hidden, layers, heads;
  const char* norm_eps = "layer_norm_epsilon";
  bool tie = true;  // tie_word_embeddings when the config does not say
};
ModelConfig parse_gpt_like(const nlohmann::json& config, const std::string& path, const std::string& family,
                           const GptFields& fields);

// GPT-2 and GPT-J: parse_gpt_like with GPT-2's spellings (n_embd, n_layer, n_head), n_inner (default 4 x n_embd)
// and activation_function (default gelu_new).
ModelConfig parse_gpt2_like(const nlohmann::json& config, const std::string& path, const std::string& family,
                            bool tie);

// Gemma and Gemma 2: parse_llama_like plus GeGLU (tanh GELU), (1 + w) RMSNorm, sqrt(hidden) embedding
// scale, tied embeddings by default.
ModelConfig parse_gemma_like(const nlohmann::json& config, const std::string& path, const std::string& family);

// Mistral and Phi-3: parse_llama_like plus sliding_window (0: none) on every layer, or per `layer_types`.
ModelConfig parse_mistral_like(const nlohmann::json& config, const std::string& path, const std::string& family);

// Per-layer windows from `layer_types` when present, else `fallback` (0: full) for every layer.
void parse_sliding_window(const nlohmann::json& config, const std::string& path, ModelConfig& cfg,
                          int64_t fallback);

// Qwen2/Qwen3 windows: use_sliding_window + sliding_window on layers >= max_window_layers (or layer_types).
void parse_qwen_window(const nlohmann::json& config, const std::string& path, ModelConfig& cfg);

// Hugging Face Llama tensor names (model.layers.N.self_attn.q_proj.weight, ...), shared by the Llama-like
// families.
const TensorTable& llama_tensors();

// The rope fields (rope_theta, rope_scaling / rope_parameters, partial_rotary_factor) into cfg.rope;
// cfg.head_dim must be set. `default_partial` applies when no partial_rotary_factor is given.
void parse_rope(const nlohmann::json& config, const std::string& path, ModelConfig& cfg, double default_partial = 1.0);

// torch_dtype / dtype, bos_token_id, eos_token_id (one or a list) and tie_word_embeddings (default `tie`).
void parse_common(const nlohmann::json& config, const std::string& path, ModelConfig& cfg, bool tie);

// An HF activation name (hidden_act, activation_function, ...): silu, gelu (erf), gelu_new / gelu_fast /
// gelu_pytorch_tanh (tanh). Others throw naming `field`, the value and `path`.
ActKind parse_activation(const std::string& name, const char* field, const std::string& path);

// The activation a string field names (`def` when the field is absent or not a string), as parse_activation.
ActKind get_activation(const nlohmann::json& j, const char* key, const std::string& path, const char* def);

// The first of `keys` present (configs spell sizes n_embd / hidden_size / d_model ...); throws naming the
// first key and `path` when none is, unless a default is given.
int64_t get_int_any(const nlohmann::json& j, std::initializer_list<const char*> keys, const std::string& path);
int64_t get_int_any(const nlohmann::json& j, std::initializer_list<const char*> keys, const std::string& path,
                    int64_t def);
// Whether j has `key` with a non-null value.
bool has_field(const nlohmann::json& j, const char* key);

// Typed field access with errors naming the field and the file.
int64_t get_int(const nlohmann::json& j, const char* key, const std::string& path);
int64_t get_int(const nlohmann::json& j, const char* key, const std::string& path, int64_t def);
double get_float(const nlohmann::json& j, const char* key, const std::string& path, double def);
bool get_bool(const nlohmann::json& j, const char* key, const std::string& path, bool def);

}  // namespace hf
}  // namespace kiln
