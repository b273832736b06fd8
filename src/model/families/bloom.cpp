// BLOOM family (BloomForCausalLM): ALiBi, a LayerNorm on the embeddings, a fused query_key_value laid out
// per head as [n_heads, 3 (q, k, v), head_dim], biases everywhere, tanh GELU, tied embeddings.
#include <fmt/format.h>

#include "kiln/error.h"
#include "model/families/family.h"

namespace kiln {
namespace {

ModelConfig parse_bloom(const nlohmann::json& j, const std::string& path) {
  KILN_CHECK(j.is_object(), "{}: not a JSON object", path);
  ModelConfig c;
  c.family = "bloom";
  c.vocab_size = hf::get_int(j, "vocab_size", path);
  c.hidden_size = hf::get_int_any(j, {"hidden_size", "n_embed"}, path);
  c.num_layers = hf::get_int_any(j, {"n_layer", "num_hidden_layers"}, path);
  c.num_heads = hf::get_int_any(j, {"n_head", "num_attention_heads"}, path);
  KILN_CHECK(c.vocab_size > 0 && c.hidden_size > 0 && c.num_layers > 0 && c.num_heads > 0,
             "{}: vocab_size, hidden_size, n_layer and n_head must be positive", path);
  KILN_CHECK(c.hidden_size % c.num_heads == 0, "{}: hidden_size ({}) is not a multiple of n_head ({})", path,
             c.hidden_size, c.num_heads);
  KILN_CHECK(!hf::get_bool(j, "apply_residual_connection_post_layernorm", path, false),
             "{}: apply_residual_connection_post_layernorm true is not supported", path);
  c.num_kv_heads = c.num_heads;
  c.head_dim = c.hidden_size / c.num_heads;
  c.intermediate_size = 4 * c.hidden_size;
  c.max_position_embeddings = hf::get_int_any(j, {"seq_length", "max_position_embeddings"}, path, 0);
  c.norm = NormKind::LayerNorm;
  c.norm_eps = hf::get_float(j, "layer_norm_epsilon", path, 1e-5);
  c.act = ActKind::GeluTanh;
  c.gated_mlp = false;
  c.position = PositionKind::Alibi;
  c.alibi_bias_max = 8.0;
  c.embed_norm = true;
  c.qkv_bias = c.o_bias = c.mlp_bias = true;
  hf::parse_common(j, path, c, true);
  return c;
}

TensorSpec bloom_spec(const ModelConfig& c, WeightRole role, int64_t layer) {
  const std::string p = fmt::format("transformer.h.{}.", layer);
  const int64_t nh = c.num_heads, hd = c.head_dim;
  const std::string qkv = p + "self_attention.query_key_value.weight";
  const std::string qkv_b = p + "self_attention.query_key_value.bias";
  switch (role) {
    case WeightRole::Embed: return {"transformer.word_embeddings.weight"};
    case WeightRole::EmbedNorm: return {"transformer.word_embeddings_layernorm.weight"};
    case WeightRole::EmbedNormBias: return {"transformer.word_embeddings_layernorm.bias"};
    case WeightRole::FinalNorm: return {"transformer.ln_f.weight"};
    case WeightRole::FinalNormBias: return {"transformer.ln_f.bias"};
    case WeightRole::LmHead: return {"lm_head.weight"};
    case WeightRole::AttnNorm: return {p + "input_layernorm.weight"};
    case WeightRole::AttnNormBias: return {p + "input_layernorm.bias"};
    case WeightRole::Q: return fused_rows(qkv, nh, 3 * hd, 0, hd);
    case WeightRole::K: return fused_rows(qkv, nh, 3 * hd, hd, hd);
    case WeightRole::V: return fused_rows(qkv, nh, 3 * hd, 2 * hd, hd);
    case WeightRole::QBias: return fused_rows(qkv_b, nh, 3 * hd, 0, hd);
    case WeightRole::KBias: return fused_rows(qkv_b, nh, 3 * hd, hd, hd);
    case WeightRole::VBias: return fused_rows(qkv_b, nh, 3 * hd, 2 * hd, hd);
    case WeightRole::O: return {p + "self_attention.dense.weight"};
    case WeightRole::OBias: return {p + "self_attention.dense.bias"};
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

Family bloom_family() {
  return {.name = "bloom",
          .architectures = {"BloomForCausalLM"},
          .parse_config = parse_bloom,
          .tensor_spec = bloom_spec,
          .optional_prefix = "transformer."};
}

}  // namespace kiln
