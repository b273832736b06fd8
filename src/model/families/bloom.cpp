// BLOOM family (BloomForCausalLM): ALiBi, a LayerNorm on the embeddings, a fused query_key_value laid out
// per head as [n_heads, 3 (q, k, v), head_dim], biases everywhere, tanh GELU, tied embeddings.
#include "kiln/error.h"
#include "model/families/family.h"

namespace kiln {

using enum WeightRole;  // the table names roles bare

const TensorTable kTensors = {
    .layer_prefix = "transformer.h.",
    .names = {{Embed, "transformer.word_embeddings"}, {EmbedNorm, "transformer.word_embeddings_layernorm"},
              {FinalNorm, "transformer.ln_f"}, {LmHead, "lm_head", Bias::None}, {AttnNorm, "input_layernorm"},
              {Q, "self_attention.query_key_value", Bias::Named, Fused::PerKvGroup}, {O, "self_attention.dense"},
              {MlpNorm, "post_attention_layernorm"}, {Up, "mlp.dense_h_to_4h"}, {Down, "mlp.dense_4h_to_h"}}};

namespace {

ModelConfig parse_bloom(const nlohmann::json& j, const std::string& path) {
  ModelConfig c = hf::parse_gpt_like(j, path, "bloom", {.hidden = {"hidden_size", "n_embed"},
                                                        .layers = {"n_layer", "num_hidden_layers"},
                                                        .heads = {"n_head", "num_attention_heads"}});
  KILN_CHECK(!hf::get_bool(j, "apply_residual_connection_post_layernorm", path, false),
             "{}: apply_residual_connection_post_layernorm true is not supported", path);
  c.intermediate_size = 4 * c.hidden_size;
  c.max_position_embeddings = hf::get_int_any(j, {"seq_length", "max_position_embeddings"}, path, 0);
  c.act = ActKind::GeluTanh;
  c.position = PositionKind::Alibi;
  c.alibi_bias_max = 8.0;
  c.embed_norm = true;
  c.qkv_bias = c.o_bias = c.mlp_bias = true;
  return c;
}

}  // namespace

Family bloom_family() { return {"bloom", {"BloomForCausalLM"}, parse_bloom, kTensors, "transformer."}; }

}  // namespace kiln
