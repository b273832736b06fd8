// Mistral family (MistralForCausalLM): Llama layout with a sliding attention window on every layer.
#include "model/families/family.h"

namespace kiln {
namespace {

ModelConfig parse_mistral(const nlohmann::json& j, const std::string& path) {
  ModelConfig c = hf::parse_llama_like(j, path, "mistral");
  hf::parse_sliding_window(j, path, c, hf::get_int(j, "sliding_window", path, 0));
  return c;
}

}  // namespace

Family mistral_family() { return {"mistral", {"MistralForCausalLM"}, parse_mistral, hf::llama_tensors}; }

}  // namespace kiln
