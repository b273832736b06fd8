// Qwen2 family (Qwen2ForCausalLM): biases on q/k/v (not o); a sliding window only when
// use_sliding_window, then on the layers from max_window_layers on (or as layer_types says).
#include "model/families/family.h"

namespace kiln {

namespace hf {
// Window per layer for configs with use_sliding_window / max_window_layers (Qwen2, Qwen3).
void parse_qwen_window(const nlohmann::json& j, const std::string& path, ModelConfig& c) {
  const bool use = get_bool(j, "use_sliding_window", path, false);
  const int64_t window = use ? get_int(j, "sliding_window", path, 0) : 0;
  parse_sliding_window(j, path, c, window);
  if (window > 0 && c.layer_sliding_window.empty()) {
    const int64_t first = get_int(j, "max_window_layers", path, 0);
    for (int64_t l = 0; l < c.num_layers; ++l) c.layer_sliding_window.push_back(l >= first ? window : 0);
  }
}
}  // namespace hf

namespace {

ModelConfig parse_qwen2(const nlohmann::json& j, const std::string& path) {
  ModelConfig c = hf::parse_llama_like(j, path, "qwen2");
  c.qkv_bias = true;
  c.o_bias = false;
  hf::parse_qwen_window(j, path, c);
  return c;
}

}  // namespace

Family qwen2_family() { return {"qwen2", {"Qwen2ForCausalLM"}, parse_qwen2, hf::llama_tensors()}; }

}  // namespace kiln
