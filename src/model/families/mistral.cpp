// Mistral family (MistralForCausalLM): Llama layout with a sliding attention window on every layer.
#include "model/families/family.h"

namespace kiln {
namespace {

ModelConfig parse_mistral(const nlohmann::json& j, const std::string& path) {
  return hf::parse_mistral_like(j, path, "mistral");
}

}  // namespace

Family mistral_family() { return {"mistral", {"MistralForCausalLM"}, parse_mistral, hf::llama_tensors()}; }

}  // namespace kiln
