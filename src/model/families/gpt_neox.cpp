// GPT-NeoX family (GPTNeoXForCausalLM: Pythia, GPT-NeoX-20B): partial rotary (rotary_pct), parallel
// residual on or off, a fused query_key_value laid out per head as [n_heads, 3 (q, k, v), head_dim].
#include <fmt/format.h>

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

TensorSpec gpt_neox_spec(const ModelConfig& c, WeightRole role, int64_t layer) {
  const std::string p = fmt::format("gpt_neox.layers.{}.", layer);
  const int64_t nh = c.num_heads, hd = c.head_dim;
  const std::string qkv = p + "attention.query_key_value.weight", qkv_b = p + "attention.query_key_value.bias";
  switch (role) {
    case WeightRole::Embed: return {"gpt_neox.embed_in.weight"};
    case WeightRole::FinalNorm: return {"gpt_neox.final_layer_norm.weight"};
    case WeightRole::FinalNormBias: return {"gpt_neox.final_layer_norm.bias"};
    case WeightRole::LmHead: return {"embed_out.weight"};
    case WeightRole::AttnNorm: return {p + "input_layernorm.weight"};
    case WeightRole::AttnNormBias: return {p + "input_layernorm.bias"};
    case WeightRole::Q: return fused_rows(qkv, nh, 3 * hd, 0, hd);
    case WeightRole::K: return fused_rows(qkv, nh, 3 * hd, hd, hd);
    case WeightRole::V: return fused_rows(qkv, nh, 3 * hd, 2 * hd, hd);
    case WeightRole::QBias: return fused_rows(qkv_b, nh, 3 * hd, 0, hd);
    case WeightRole::KBias: return fused_rows(qkv_b, nh, 3 * hd, hd, hd);
    case WeightRole::VBias: return fused_rows(qkv_b, nh, 3 * hd, 2 * hd, hd);
    case WeightRole::O: return {p + "attention.dense.weight"};
    case WeightRole::OBias: return {p + "attention.dense.bias"};
    case WeightRole::MlpNorm: return {p + "post_attention_layernorm.weight"};
    case WeightRole::MlpNormBias: return {p + "post_attention_layernorm.bias"};
    case WeightRole::Up: return {p + "mlp.dense_h_to_4h.weight"};
    case WeightRole::UpBias: return {p + "mlp.dense_h_to_4h.bias"};
    case WeightRole::Down: return {p + "mlp.dense_4h_to_h.weight"};
    case WeightRole::DownBias: return {p + "mlp.dense_4h_to_h.bias"};
    default: return {};
  }
}

}  // namespace

Family gpt_neox_family() {
  return {.name = "gpt_neox",
          .architectures = {"GPTNeoXForCausalLM"},
          .parse_config = parse_gpt_neox,
          .tensor_spec = gpt_neox_spec,
          .optional_prefix = "gpt_neox."};
}

}  // namespace kiln
