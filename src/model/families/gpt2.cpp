// GPT-2 family (GPT2LMHeadModel), GPT-3-style configs included: learned absolute positions, LayerNorm,
// gelu_new, Conv1D weights stored [in, out] (transposed at load), one fused c_attn for q|k|v, tied embeddings.
#include "kiln/error.h"
#include "model/families/family.h"

namespace kiln {
namespace {

ModelConfig parse_gpt2(const nlohmann::json& j, const std::string& path) {
  KILN_CHECK(j.is_object(), "{}: not a JSON object", path);
  ModelConfig c;
  c.family = "gpt2";
  c.vocab_size = hf::get_int(j, "vocab_size", path);
  c.hidden_size = hf::get_int_any(j, {"n_embd", "hidden_size"}, path);
  c.num_layers = hf::get_int_any(j, {"n_layer", "num_hidden_layers"}, path);
  c.num_heads = hf::get_int_any(j, {"n_head", "num_attention_heads"}, path);
  KILN_CHECK(c.vocab_size > 0 && c.hidden_size > 0 && c.num_layers > 0 && c.num_heads > 0,
             "{}: vocab_size, n_embd, n_layer and n_head must be positive", path);
  KILN_CHECK(c.hidden_size % c.num_heads == 0, "{}: n_embd ({}) is not a multiple of n_head ({})", path,
             c.hidden_size, c.num_heads);
  c.num_kv_heads = c.num_heads;
  c.head_dim = c.hidden_size / c.num_heads;
  c.intermediate_size = hf::get_int_any(j, {"n_inner"}, path, 4 * c.hidden_size);
  c.max_position_embeddings = hf::get_int_any(j, {"n_positions", "max_position_embeddings", "n_ctx"}, path, 1024);
  KILN_CHECK(c.max_position_embeddings > 0, "{}: n_positions must be positive", path);
  c.norm = NormKind::LayerNorm;
  c.norm_eps = hf::get_float(j, "layer_norm_epsilon", path, 1e-5);
  const auto act = j.find("activation_function");
  c.act = hf::parse_activation(act != j.end() && act->is_string() ? act->get<std::string>() : "gelu_new",
                               "activation_function", path);
  c.gated_mlp = false;
  c.position = PositionKind::Learned;
  c.qkv_bias = c.o_bias = c.mlp_bias = true;
  if (!hf::get_bool(j, "scale_attn_weights", path, true)) c.attn_scale = 1.0;
  KILN_CHECK(!hf::get_bool(j, "scale_attn_by_inverse_layer_idx", path, false),
             "{}: scale_attn_by_inverse_layer_idx true is not supported", path);
  KILN_CHECK(!hf::get_bool(j, "add_cross_attention", path, false), "{}: add_cross_attention true is not supported",
             path);
  hf::parse_common(j, path, c, true);
  return c;
}

const TensorTable& gpt2_tensors(const ModelConfig&) {
  using enum WeightRole;
  static const TensorTable t = {
      .layer_prefix = "transformer.h.",
      .names = {{Embed, "transformer.wte"}, {PosEmbed, "transformer.wpe"}, {FinalNorm, "transformer.ln_f"},
                {LmHead, "lm_head", Bias::None}, {AttnNorm, "ln_1"}, {Q, "attn.c_attn", Bias::Named, Fused::Stacked},
                {O, "attn.c_proj"}, {MlpNorm, "ln_2"}, {Up, "mlp.c_fc"}, {Down, "mlp.c_proj"}},
      .conv1d = true};
  return t;
}

}  // namespace

Family gpt2_family() {
  return {.name = "gpt2",
          .architectures = {"GPT2LMHeadModel"},
          .parse_config = parse_gpt2,
          .tensors = gpt2_tensors,
          .optional_prefix = "transformer."};
}

}  // namespace kiln
