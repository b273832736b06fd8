// BLOOM family (BloomForCausalLM): ALiBi, a LayerNorm on the embeddings, a fused query_key_value laid out
// per head as [n_heads, 3 (q, k, v), head_dim], biases everywhere, tanh GELU, tied embeddings.
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

const TensorTable& bloom_tensors(const ModelConfig&) {
  using enum WeightRole;
  static const TensorTable t = {
      "transformer.h.",
      {{Embed, "transformer.word_embeddings"}, {EmbedNorm, "transformer.word_embeddings_layernorm"},
       {FinalNorm, "transformer.ln_f"}, {LmHead, "lm_head", Bias::None}, {AttnNorm, "input_layernorm"},
       {Q, "self_attention.query_key_value", Bias::Named, Fused::PerKvGroup}, {O, "self_attention.dense"},
       {MlpNorm, "post_attention_layernorm"}, {Up, "mlp.dense_h_to_4h"}, {Down, "mlp.dense_4h_to_h"}}};
  return t;
}

}  // namespace

Family bloom_family() {
  return {.name = "bloom",
          .architectures = {"BloomForCausalLM"},
          .parse_config = parse_bloom,
          .tensors = bloom_tensors,
          .optional_prefix = "transformer."};
}

}  // namespace kiln
