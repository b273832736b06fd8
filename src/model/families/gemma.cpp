// Gemma family (GemmaForCausalLM): GeGLU with tanh GELU, embeddings scaled by sqrt(hidden) in the weights'
// dtype, RMSNorm scaled by (1 + w), head_dim independent of hidden / heads, tied embeddings.
#include <cmath>

#include "model/families/family.h"

namespace kiln {

namespace hf {
// The traits Gemma and Gemma 2 share, on top of the Llama-like fields.
ModelConfig parse_gemma_like(const nlohmann::json& j, const std::string& path, const std::string& family) {
  ModelConfig c = parse_llama_like(j, path, family);
  // HF reads hidden_activation (older configs) before hidden_act, and takes a plain "gelu" to mean the tanh
  // approximation the checkpoints were trained with.
  const char* key = has_field(j, "hidden_activation") ? "hidden_activation" : "hidden_act";
  const auto act = j.find(key);
  const std::string name = act != j.end() && act->is_string() ? act->get<std::string>() : "gelu_pytorch_tanh";
  c.act = name == "gelu" ? ActKind::GeluTanh : parse_activation(name, key, path);
  c.norm_add_one = true;
  c.embed_scale = std::sqrt(static_cast<double>(c.hidden_size));
  c.embed_scale_in_checkpoint_dtype = true;
  c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", path, true);
  c.qkv_bias = c.o_bias = get_bool(j, "attention_bias", path, false);
  return c;
}
}  // namespace hf

namespace {

ModelConfig parse_gemma(const nlohmann::json& j, const std::string& path) {
  return hf::parse_gemma_like(j, path, "gemma");
}

}  // namespace

Family gemma_family() { return {"gemma", {"GemmaForCausalLM"}, parse_gemma, hf::llama_tensors()}; }

}  // namespace kiln
