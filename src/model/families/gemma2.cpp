// Gemma 2 family (Gemma2ForCausalLM): Gemma plus attention and final logit soft-capping, norms before and
// after attention and MLP, query_pre_attn_scalar for the attention scale, a sliding window on alternate
// layers (layer_types, else HF's rule: even layers slide).
#include <cmath>

#include "kiln/error.h"
#include "model/families/family.h"

namespace kiln {

using enum WeightRole;  // the table names roles bare

// Llama's names, except that post_attention_layernorm is the norm after attention, and the MLP's norms are
// pre_feedforward_layernorm and post_feedforward_layernorm.
const TensorTable kTensors = hf::llama_tensors().with({{MlpNorm, "pre_feedforward_layernorm"},
                                                       {PostAttnNorm, "post_attention_layernorm", Bias::None},
                                                       {PostMlpNorm, "post_feedforward_layernorm", Bias::None}});

namespace {

ModelConfig parse_gemma2(const nlohmann::json& j, const std::string& path) {
  ModelConfig c = hf::parse_gemma_like(j, path, "gemma2");
  c.norm_layout = NormLayout::PrePost;
  const double scalar = hf::get_float(j, "query_pre_attn_scalar", path, 256.0);
  KILN_CHECK(scalar > 0, "{}: query_pre_attn_scalar must be positive, found {}", path, scalar);
  c.attn_scale = 1.0 / std::sqrt(scalar);
  // Absent: HF's defaults; null: no capping.
  auto cap = [&](const char* key, double def) {
    if (j.contains(key) && j[key].is_null()) return 0.0;
    const double v = hf::get_float(j, key, path, def);
    KILN_CHECK(v >= 0, "{}: {} must not be negative, found {}", path, key, v);
    return v;
  };
  c.attn_logit_softcap = cap("attn_logit_softcapping", 50.0);
  c.final_logit_softcap = cap("final_logit_softcapping", 30.0);
  const int64_t window = j.contains("sliding_window") && j["sliding_window"].is_null()
                             ? 0
                             : hf::get_int(j, "sliding_window", path, 4096);
  hf::parse_sliding_window(j, path, c, window);
  if (c.layer_sliding_window.empty() && window > 0) {
    for (int64_t l = 0; l < c.num_layers; ++l) c.layer_sliding_window.push_back(l % 2 == 0 ? window : 0);
  }
  return c;
}

}  // namespace

Family gemma2_family() { return {"gemma2", {"Gemma2ForCausalLM"}, parse_gemma2, kTensors}; }

}  // namespace kiln
