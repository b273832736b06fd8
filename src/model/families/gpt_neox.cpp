// GPT-NeoX family (GPTNeoXForCausalLM: Pythia, GPT-NeoX-20B): partial rotary (rotary_pct), parallel
// residual on or off, a fused query_key_value laid out per head as [n_heads, 3 (q, k, v), head_dim].
#include "kiln/error.h"
#include "model/families/family.h"

namespace kiln {

using enum WeightRole;  // the table names roles bare

const TensorTable kTensors = {
    .layer_prefix = "gpt_neox.layers.",
    .names = {{Embed, "gpt_neox.embed_in"}, {FinalNorm, "gpt_neox.final_layer_norm"},
              {LmHead, "embed_out", Bias::None}, {AttnNorm, "input_layernorm"},
              {Q, "attention.query_key_value", Bias::Named, Fused::PerKvGroup}, {O, "attention.dense"},
              {MlpNorm, "post_attention_layernorm"}, {Up, "mlp.dense_h_to_4h"}, {Down, "mlp.dense_4h_to_h"}}};

namespace {

ModelConfig parse_gpt_neox(const nlohmann::json& j, const std::string& path) {
  ModelConfig c = hf::parse_gpt_like(j, path, "gpt_neox", {.hidden = {"hidden_size"},
                                                           .layers = {"num_hidden_layers"},
                                                           .heads = {"num_attention_heads"},
                                                           .norm_eps = "layer_norm_eps",
                                                           .tie = false});
  c.intermediate_size = hf::get_int(j, "intermediate_size", path, 4 * c.hidden_size);
  c.max_position_embeddings = hf::get_int(j, "max_position_embeddings", path, 2048);
  c.act = hf::get_activation(j, "hidden_act", path, "gelu");
  // Older configs spell the rotary fraction and base rotary_pct and rotary_emb_base (default 0.25, 10000).
  hf::parse_rope(j, path, c, hf::get_float(j, "rotary_pct", path, 0.25));
  const auto params = j.find("rope_parameters");
  const bool theta_given =
      hf::has_field(j, "rope_theta") || (params != j.end() && params->is_object() && hf::has_field(*params, "rope_theta"));
  if (!theta_given) c.rope.theta = hf::get_float(j, "rotary_emb_base", path, 10000.0);
  c.parallel_residual = hf::get_bool(j, "use_parallel_residual", path, true);
  c.qkv_bias = c.o_bias = hf::get_bool(j, "attention_bias", path, true);
  c.mlp_bias = true;
  return c;
}

}  // namespace

Family gpt_neox_family() { return {"gpt_neox", {"GPTNeoXForCausalLM"}, parse_gpt_neox, kTensors, "gpt_neox."}; }

}  // namespace kiln
