// MPT family (MptForCausalLM): ALiBi (attn_config.alibi_bias_max), no biases anywhere, LayerNorms without
// bias, one fused Wqkv (q, k, v stacked), clip_qkv when set, tied embeddings.
#include "kiln/error.h"
#include "model/families/family.h"

namespace kiln {

using enum WeightRole;  // the table names roles bare

// No biases anywhere, the LayerNorms' included.
const TensorTable kTensors = {
    .layer_prefix = "transformer.blocks.",
    .names = {{Embed, "transformer.wte"}, {FinalNorm, "transformer.norm_f", Bias::None},
              {LmHead, "lm_head", Bias::None}, {AttnNorm, "norm_1", Bias::None},
              {Q, "attn.Wqkv", Bias::None, Fused::Stacked}, {O, "attn.out_proj", Bias::None},
              {MlpNorm, "norm_2", Bias::None}, {Up, "ffn.up_proj", Bias::None}, {Down, "ffn.down_proj", Bias::None}}};

namespace {

ModelConfig parse_mpt(const nlohmann::json& j, const std::string& path) {
  ModelConfig c = hf::parse_gpt_like(j, path, "mpt", {.hidden = {"d_model", "hidden_size"},
                                                      .layers = {"n_layers", "num_hidden_layers"},
                                                      .heads = {"n_heads", "num_attention_heads"}});
  const int64_t ratio = hf::get_int(j, "expansion_ratio", path, 4);
  KILN_CHECK(ratio > 0, "{}: expansion_ratio must be positive", path);
  c.intermediate_size = ratio * c.hidden_size;
  c.max_position_embeddings = hf::get_int_any(j, {"max_seq_len", "max_position_embeddings"}, path, 2048);
  c.norm_bias = false;
  c.act = ActKind::GeluErf;
  KILN_CHECK(hf::get_bool(j, "no_bias", path, true), "{}: no_bias false (MPT with biases) is not supported", path);
  KILN_CHECK(!hf::has_field(j, "logit_scale"), "{}: logit_scale is not supported", path);
  static const nlohmann::json kEmpty = nlohmann::json::object();
  const auto it = j.find("attn_config");
  const nlohmann::json& a = it != j.end() && it->is_object() ? *it : kEmpty;
  const std::string where = path + " attn_config";
  KILN_CHECK(hf::get_bool(a, "alibi", where, true), "{}: alibi false is not supported (MPT without ALiBi)", where);
  KILN_CHECK(!hf::get_bool(a, "qk_ln", where, false), "{}: qk_ln true is not supported", where);
  c.position = PositionKind::Alibi;
  c.alibi_bias_max = hf::get_float(a, "alibi_bias_max", where, 8.0);
  KILN_CHECK(c.alibi_bias_max > 0, "{}: alibi_bias_max must be positive", where);
  c.clip_qkv = hf::get_float(a, "clip_qkv", where, 0.0);
  KILN_CHECK(c.clip_qkv >= 0, "{}: clip_qkv must not be negative", where);
  c.attn_scale = hf::get_float(a, "softmax_scale", where, 0.0);
  return c;
}

}  // namespace

Family mpt_family() { return {"mpt", {"MptForCausalLM"}, parse_mpt, kTensors, "transformer."}; }

}  // namespace kiln
