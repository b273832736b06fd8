// Qwen3 family (Qwen3ForCausalLM): per-head RMSNorm of q and k before RoPE, explicit head_dim,
// attention_bias on all projections, Qwen-style optional sliding window.
#include "model/families/family.h"

namespace kiln {

namespace {

ModelConfig parse_qwen3(const nlohmann::json& j, const std::string& path) {
  ModelConfig c = hf::parse_llama_like(j, path, "qwen3");
  c.qk_norm = true;
  c.qkv_bias = c.o_bias = hf::get_bool(j, "attention_bias", path, false);
  hf::parse_qwen_window(j, path, c);
  return c;
}

}  // namespace

Family qwen3_family() { return {"qwen3", {"Qwen3ForCausalLM"}, parse_qwen3, hf::llama_tensors()}; }

}  // namespace kiln
