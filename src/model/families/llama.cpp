// Llama family (LlamaForCausalLM): rope_scaling none/linear/llama3, head_dim, attention_bias, mlp_bias.
#include "model/families/family.h"

namespace kiln {
namespace {

ModelConfig parse_llama(const nlohmann::json& j, const std::string& path) {
  ModelConfig c = hf::parse_llama_like(j, path, "llama");
  // attention_bias puts a bias on all four projections, o_proj included.
  c.qkv_bias = c.o_bias = hf::get_bool(j, "attention_bias", path, false);
  c.mlp_bias = hf::get_bool(j, "mlp_bias", path, false);
  return c;
}

}  // namespace

Family llama_family() { return {"llama", {"LlamaForCausalLM"}, parse_llama, hf::llama_tensor_name}; }

}  // namespace kiln
