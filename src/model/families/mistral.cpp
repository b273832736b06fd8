// Mistral family (MistralForCausalLM): Llama layout with a sliding attention window on every layer.
#include "model/families/family.h"

namespace kiln {

namespace hf {
// Mistral and Phi-3: the Llama-like fields and sliding_window on every layer (or on those layer_types marks).
ModelConfig parse_mistral_like(const nlohmann::json& j, const std::string& path, const std::string& family) {
  ModelConfig c = parse_llama_like(j, path, family);
  parse_sliding_window(j, path, c, get_int(j, "sliding_window", path, 0));
  return c;
}
}  // namespace hf

namespace {

ModelConfig parse_mistral(const nlohmann::json& j, const std::string& path) {
  return hf::parse_mistral_like(j, path, "mistral");
}

}  // namespace

Family mistral_family() { return {"mistral", {"MistralForCausalLM"}, parse_mistral, hf::llama_tensors}; }

}  // namespace kiln
