// GPT-2 family (GPT2LMHeadModel), GPT-3-style configs included: learned absolute positions, LayerNorm,
// gelu_new, Conv1D weights stored [in, out] (transposed at load), one fused c_attn for q|k|v, tied embeddings.
#include "kiln/error.h"
#include "model/families/family.h"

namespace kiln {

namespace hf {
// GPT-2's config spelling, which GPT-J's keeps: n_embd, n_layer, n_head, n_inner (default 4 x n_embd),
// activation_function (default gelu_new), layer_norm_epsilon.
ModelConfig parse_gpt2_like(const nlohmann::json& j, const std::string& path, const std::string& family, bool tie) {
  ModelConfig c = parse_gpt_like(j, path, family, {.hidden = {"n_embd", "hidden_size"},
                                                   .layers = {"n_layer", "num_hidden_layers"},
                                                   .heads = {"n_head", "num_attention_heads"},
                                                   .tie = tie});
  c.intermediate_size = get_int_any(j, {"n_inner"}, path, 4 * c.hidden_size);
  c.act = get_activation(j, "activation_function", path, "gelu_new");
  return c;
}
}  // namespace hf

using enum WeightRole;  // the table names roles bare

const TensorTable kTensors = {
    .layer_prefix = "transformer.h.",
    .names = {{Embed, "transformer.wte"}, {PosEmbed, "transformer.wpe"}, {FinalNorm, "transformer.ln_f"},
              {LmHead, "lm_head", Bias::None}, {AttnNorm, "ln_1"}, {Q, "attn.c_attn", Bias::Named, Fused::Stacked},
              {O, "attn.c_proj"}, {MlpNorm, "ln_2"}, {Up, "mlp.c_fc"}, {Down, "mlp.c_proj"}},
    .conv1d = true};

namespace {

ModelConfig parse_gpt2(const nlohmann::json& j, const std::string& path) {
  ModelConfig c = hf::parse_gpt2_like(j, path, "gpt2", true);
  c.max_position_embeddings = hf::get_int_any(j, {"n_positions", "max_position_embeddings", "n_ctx"}, path, 1024);
  KILN_CHECK(c.max_position_embeddings > 0, "{}: n_positions must be positive", path);
  c.position = PositionKind::Learned;
  c.qkv_bias = c.o_bias = c.mlp_bias = true;
  if (!hf::get_bool(j, "scale_attn_weights", path, true)) c.attn_scale = 1.0;
  KILN_CHECK(!hf::get_bool(j, "scale_attn_by_inverse_layer_idx", path, false),
             "{}: scale_attn_by_inverse_layer_idx true is not supported", path);
  KILN_CHECK(!hf::get_bool(j, "add_cross_attention", path, false), "{}: add_cross_attention true is not supported",
             path);
  return c;
}

}  // namespace

Family gpt2_family() { return {"gpt2", {"GPT2LMHeadModel"}, parse_gpt2, kTensors, "transformer."}; }

}  // namespace kiln
