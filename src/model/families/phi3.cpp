// Phi-3 family (Phi3ForCausalLM): the Llama layout with a fused qkv_proj (q, k, v rows stacked) and a
// fused gate_up_proj (gate rows, then up rows); a sliding window on every layer when sliding_window is set.
// longrope / su RoPE scaling (the 128K-context variants) is refused by the rope parser, naming the type.
#include "model/families/family.h"

namespace kiln {

using enum WeightRole;  // the table names roles bare

// Llama's names with q, k, v in one fused qkv_proj and gate, up in one gate_up_proj, neither with a bias.
const TensorTable kTensors = hf::llama_tensors().with({{Q, "self_attn.qkv_proj", Bias::None, Fused::Stacked},
                                                       {Gate, "mlp.gate_up_proj", Bias::None, Fused::Stacked}});

namespace {

ModelConfig parse_phi3(const nlohmann::json& j, const std::string& path) {
  return hf::parse_mistral_like(j, path, "phi3");
}

}  // namespace

Family phi3_family() { return {"phi3", {"Phi3ForCausalLM"}, parse_phi3, kTensors}; }

}  // namespace kiln
