// Model families: each family file maps an HF `architectures` value to a ModelConfig and tensor names.
#pragma once

#include <initializer_list>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kiln/model_config.h"
#include "model/weights.h"

namespace kiln {

// Where an HF checkpoint keeps the values of one role. `transposed`: stored [in, out] (GPT-2's Conv1D)
// rather than [out, in]. A slice of a fused tensor (rows > 0): the stored rows (after transposition) are
// `blocks` blocks of `block_rows` rows each, and the role is rows [row_offset, row_offset + rows) of every
// block, concatenated; e.g. k of a per-head fused qkv [n_heads, 3, head_dim] is blocks = n_heads,
// block_rows = 3 * head_dim, row_offset = head_dim, rows = head_dim. A bias is sliced the same way.
struct TensorSpec {
  std::string name;
  bool transposed = false;
  int64_t blocks = 1;
  int64_t block_rows = 0;
  int64_t row_offset = 0;
  int64_t rows = 0;  // 0: the whole tensor
};

struct Family {
  std::string name;                        // "llama", "mistral", ...
  std::vector<std::string> architectures;  // HF `architectures[0]` values it handles
  // config.json (already parsed) → ModelConfig; `path` names the file in errors.
  ModelConfig (*parse_config)(const nlohmann::json& config, const std::string& path);
  // The checkpoint tensor name of a role in layer `layer` (ignored for global roles), for families whose
  // tensors map one to one; null when tensor_spec is given.
  std::string (*tensor_name)(WeightRole role, int64_t layer) = nullptr;
  // Where a role's values are for families with fused or transposed tensors; null: {tensor_name(..)}.
  TensorSpec (*tensor_spec)(const ModelConfig& config, WeightRole role, int64_t layer) = nullptr;
  // A prefix that checkpoints saved from the base model (GPT2Model rather than GPT2LMHeadModel, as the
  // original gpt2 and bloom uploads were) leave off: a name missing with it is looked up without it.
  std::string optional_prefix = {};
};

// A slice of fused tensor `name`: rows [offset, offset + rows) of each of `blocks` blocks of `block_rows`.
inline TensorSpec fused_rows(std::string name, int64_t blocks, int64_t block_rows, int64_t offset, int64_t rows,
                             bool transposed = false) {
  return TensorSpec{std::move(name), transposed, blocks, block_rows, offset, rows};
}

// The spec of a role for `family` (from tensor_spec, or tensor_name when that is all it has).
TensorSpec tensor_spec(const Family& family, const ModelConfig& config, WeightRole role, int64_t layer);

// Every family kiln knows, in the order they are tried.
const std::vector<Family>& families();
// The family handling `architecture`, or nullptr.
const Family* find_family(const std::string& architecture);

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

// Gemma and Gemma 2: parse_llama_like plus GeGLU (tanh GELU), (1 + w) RMSNorm, sqrt(hidden) embedding
// scale, tied embeddings by default.
ModelConfig parse_gemma_like(const nlohmann::json& config, const std::string& path, const std::string& family);

// Per-layer windows from `layer_types` when present, else `fallback` (0: full) for every layer.
void parse_sliding_window(const nlohmann::json& config, const std::string& path, ModelConfig& cfg,
                          int64_t fallback);

// Qwen2/Qwen3 windows: use_sliding_window + sliding_window on layers >= max_window_layers (or layer_types).
void parse_qwen_window(const nlohmann::json& config, const std::string& path, ModelConfig& cfg);

// Hugging Face Llama tensor names (model.layers.N.self_attn.q_proj.weight, ...), shared by the
// Llama-like families.
std::string llama_tensor_name(WeightRole role, int64_t layer);

// The rope fields (rope_theta, rope_scaling / rope_parameters, partial_rotary_factor) into cfg.rope;
// cfg.head_dim must be set. `default_partial` applies when no partial_rotary_factor is given.
void parse_rope(const nlohmann::json& config, const std::string& path, ModelConfig& cfg, double default_partial = 1.0);

// torch_dtype / dtype, bos_token_id, eos_token_id (one or a list) and tie_word_embeddings (default `tie`).
void parse_common(const nlohmann::json& config, const std::string& path, ModelConfig& cfg, bool tie);

// An HF activation name (hidden_act, activation_function, ...): silu, gelu (erf), gelu_new / gelu_fast /
// gelu_pytorch_tanh (tanh). Others throw naming `field`, the value and `path`.
ActKind parse_activation(const std::string& name, const char* field, const std::string& path);

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
