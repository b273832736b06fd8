// GPT-NeoX family (GPTNeoXForCausalLM: Pythia, GPT-NeoX-20B): partial rotary (rotary_pct), parallel
// residual on or off, a fused query_key_value laid out per head as [n_heads, 3 (q, k, v), head_dim].
#include "kiln/error.h"
#include "model/families/family.h"

namespace kiln {
namespace {

ModelConfig parse_gpt_neox(const nlohmann::json& j, const std::string& path) {
  KILN_CHECK(j.is_object(), "{}: not a JSON object", path);
  ModelConfig c;
  c.family = "gpt_neox";
  c.vocab_size = hf::get_int(j, "vocab_size", path);
  c.hidden_size = hf::get_int(j, "hidden_size", path);
  c.num_layers = hf::get_int(j, "num_hidden_layers", path);
  c.num_heads = hf::get_int(j, "num_attention_heads", path);
  KILN_CHECK(c.vocab_size > 0 && c.hidden_size > 0 && c.num_layers > 0 && c.num_heads > 0,
             "{}: vocab_size, hidden_size, num_hidden_layers and num_attention_heads must be positive", path);
  KILN_CHECK(c.hidden_size % c.num_heads == 0, "{}: hidden_size ({}) is not a multiple of num_attention_heads ({})",
             path, c.hidden_size, c.num_heads);
  c.num_kv_heads = c.num_heads;
  c.head_dim = c.hidden_size / c.num_heads;
  c.intermediate_size = hf::get_int(j, "intermediate_size", path, 4 * c.hidden_size);
  c.max_position_embeddings = hf::get_int(j, "max_position_embeddings", path, 2048);
  c.norm = NormKind::LayerNorm;
  c.norm_eps = hf::get_float(j, "layer_norm_eps", path, 1e-5);
  const auto act = j.find("hidden_act");
  c.act = hf::parse_activation(act != j.end() && act->is_string() ? act->get<std::string>() : "gelu", "hidden_act",
                               path);
  c.gated_mlp = false;
  // Older configs spell the rotary fraction and base rotary_pct and rotary_emb_base (default 0.25, 10000).
  hf::parse_rope(j, path, c, hf::get_float(j, "rotary_pct", path, 0.25));
  const auto params = j.find("rope_parameters");
  const bool theta_given =
      hf::has_field(j, "rope_theta") || (params != j.end() && params->is_object() && hf::has_field(*params, "rope_theta"));
  if (!theta_given) c.rope.theta = hf::get_float(j, "rotary_emb_base", path, 10000.0);
  c.parallel_residual = hf::get_bool(j, "use_parallel_residual", path, true);
  c.qkv_bias = c.o_bias = hf::get_bool(j, "attention_bias", path, true);
  c.mlp_bias = true;
  hf::parse_common(j, path, c, false);
  return c;
}

const TensorTable& gpt_neox_tensors(const ModelConfig&) {
  using enum WeightRole;
  static const TensorTable t = {
      "gpt_neox.layers.",
      {{Embed, "gpt_neox.embed_in"}, {FinalNorm, "gpt_neox.final_layer_norm"}, {LmHead, "embed_out", Bias::None},
       {AttnNorm, "input_layernorm"}, {Q, "attention.query_key_value", Bias::Named, Fused::PerKvGroup},
       {O, "attention.dense"}, {MlpNorm, "post_attention_layernorm"}, {Up, "mlp.dense_h_to_4h"},
       {Down, "mlp.dense_4h_to_h"}}};
  return t;
}

}  // namespace

Family gpt_neox_family() {
  return {.name = "gpt_neox",
          .architectures = {"GPTNeoXForCausalLM"},
          .parse_config = parse_gpt_neox,
          .tensors = gpt_neox_tensors,
          .optional_prefix = "gpt_neox."};
}

}  // namespace kiln
