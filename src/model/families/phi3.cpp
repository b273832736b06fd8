// Phi-3 family (Phi3ForCausalLM): the Llama layout with a fused qkv_proj (q, k, v rows stacked) and a
// fused gate_up_proj (gate rows, then up rows); a sliding window on every layer when sliding_window is set.
// longrope / su RoPE scaling (the 128K-context variants) is refused by the rope parser, naming the type.
#include "model/families/family.h"

namespace kiln {
namespace {

ModelConfig parse_phi3(const nlohmann::json& j, const std::string& path) {
  ModelConfig c = hf::parse_llama_like(j, path, "phi3");
  hf::parse_sliding_window(j, path, c, hf::get_int(j, "sliding_window", path, 0));
  return c;
}

TensorSpec phi3_spec(const ModelConfig& c, WeightRole role, int64_t layer) {
  const std::string p = "model.layers." + std::to_string(layer) + ".";
  const int64_t nq = c.num_heads * c.head_dim, nkv = c.num_kv_heads * c.head_dim, I = c.intermediate_size;
  const std::string qkv = p + "self_attn.qkv_proj.weight", gate_up = p + "mlp.gate_up_proj.weight";
  switch (role) {
    case WeightRole::Q: return fused_rows(qkv, 1, nq + 2 * nkv, 0, nq);
    case WeightRole::K: return fused_rows(qkv, 1, nq + 2 * nkv, nq, nkv);
    case WeightRole::V: return fused_rows(qkv, 1, nq + 2 * nkv, nq + nkv, nkv);
    case WeightRole::Gate: return fused_rows(gate_up, 1, 2 * I, 0, I);
    case WeightRole::Up: return fused_rows(gate_up, 1, 2 * I, I, I);
    case WeightRole::QBias: case WeightRole::KBias: case WeightRole::VBias: case WeightRole::GateBias:
    case WeightRole::UpBias: return {};
    default: return {hf::llama_tensor_name(role, layer)};
  }
}

}  // namespace

Family phi3_family() {
  return {.name = "phi3", .architectures = {"Phi3ForCausalLM"}, .parse_config = parse_phi3, .tensor_spec = phi3_spec};
}

}  // namespace kiln
