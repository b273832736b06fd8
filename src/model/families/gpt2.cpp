// GPT-2 family (GPT2LMHeadModel), GPT-3-style configs included: learned absolute positions, LayerNorm,
// gelu_new, Conv1D weights stored [in, out] (transposed at load), one fused c_attn for q|k|v, tied embeddings.
#include <fmt/format.h>

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

TensorSpec gpt2_spec(const ModelConfig& c, WeightRole role, int64_t layer) {
  const std::string p = fmt::format("transformer.h.{}.", layer);
  const int64_t H = c.hidden_size;
  const std::string qkv = p + "attn.c_attn.weight", qkv_b = p + "attn.c_attn.bias";
  switch (role) {
    case WeightRole::Embed: return {"transformer.wte.weight"};
    case WeightRole::PosEmbed: return {"transformer.wpe.weight"};
    case WeightRole::FinalNorm: return {"transformer.ln_f.weight"};
    case WeightRole::FinalNormBias: return {"transformer.ln_f.bias"};
    case WeightRole::LmHead: return {"lm_head.weight"};
    case WeightRole::AttnNorm: return {p + "ln_1.weight"};
    case WeightRole::AttnNormBias: return {p + "ln_1.bias"};
    case WeightRole::Q: return fused_rows(qkv, 1, 3 * H, 0, H, true);
    case WeightRole::K: return fused_rows(qkv, 1, 3 * H, H, H, true);
    case WeightRole::V: return fused_rows(qkv, 1, 3 * H, 2 * H, H, true);
    case WeightRole::QBias: return fused_rows(qkv_b, 1, 3 * H, 0, H);
    case WeightRole::KBias: return fused_rows(qkv_b, 1, 3 * H, H, H);
    case WeightRole::VBias: return fused_rows(qkv_b, 1, 3 * H, 2 * H, H);
    case WeightRole::O: return {p + "attn.c_proj.weight", true};
    case WeightRole::OBias: return {p + "attn.c_proj.bias"};
    case WeightRole::MlpNorm: return {p + "ln_2.weight"};
    case WeightRole::MlpNormBias: return {p + "ln_2.bias"};
    case WeightRole::Up: return {p + "mlp.c_fc.weight", true};
    case WeightRole::UpBias: return {p + "mlp.c_fc.bias"};
    case WeightRole::Down: return {p + "mlp.c_proj.weight", true};
    case WeightRole::DownBias: return {p + "mlp.c_proj.bias"};
    default: return {};
  }
}

}  // namespace

Family gpt2_family() {
  return {.name = "gpt2",
          .architectures = {"GPT2LMHeadModel"},
          .parse_config = parse_gpt2,
          .tensor_spec = gpt2_spec,
          .optional_prefix = "transformer."};
}

}  // namespace kiln
