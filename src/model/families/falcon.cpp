// Falcon family (FalconForCausalLM), both layouts: the 7B style (multi-query, attention and MLP in parallel
// from one LayerNorm) and new_decoder_architecture (grouped KV heads, ln_attn and ln_mlp); also the
// sequential parallel_attn false layout. Rotary positions only: ALiBi Falcons (alibi true) are refused.
#include <fmt/format.h>

#include "kiln/error.h"
#include "model/families/family.h"

namespace kiln {
namespace {

ModelConfig parse_falcon(const nlohmann::json& j, const std::string& path) {
  KILN_CHECK(j.is_object(), "{}: not a JSON object", path);
  KILN_CHECK(!hf::get_bool(j, "alibi", path, false),
             "{}: alibi true (Falcon-RW style ALiBi Falcon) is not supported; only rotary Falcons are", path);
  ModelConfig c;
  c.family = "falcon";
  c.vocab_size = hf::get_int(j, "vocab_size", path);
  c.hidden_size = hf::get_int_any(j, {"hidden_size", "n_embed"}, path);
  c.num_layers = hf::get_int_any(j, {"num_hidden_layers", "n_layer"}, path);
  c.num_heads = hf::get_int_any(j, {"num_attention_heads", "n_head"}, path);
  KILN_CHECK(c.vocab_size > 0 && c.hidden_size > 0 && c.num_layers > 0 && c.num_heads > 0,
             "{}: vocab_size, hidden_size, num_hidden_layers and num_attention_heads must be positive", path);
  KILN_CHECK(c.hidden_size % c.num_heads == 0, "{}: hidden_size ({}) is not a multiple of num_attention_heads ({})",
             path, c.hidden_size, c.num_heads);
  c.head_dim = c.hidden_size / c.num_heads;
  const bool new_arch = hf::get_bool(j, "new_decoder_architecture", path, false);
  const bool multi_query = hf::get_bool(j, "multi_query", path, true);
  const bool parallel = hf::get_bool(j, "parallel_attn", path, true);
  if (new_arch) {
    c.num_kv_heads = hf::get_int_any(j, {"num_kv_heads", "n_head_kv"}, path, c.num_heads);
    KILN_CHECK(c.num_kv_heads > 0 && c.num_heads % c.num_kv_heads == 0,
               "{}: num_attention_heads ({}) must be a multiple of num_kv_heads ({})", path, c.num_heads,
               c.num_kv_heads);
    // The new layout is always parallel: HF builds no post_attention_layernorm for it.
    KILN_CHECK(parallel, "{}: new_decoder_architecture with parallel_attn false is not supported", path);
    const int64_t lns = hf::get_int(j, "num_ln_in_parallel_attn", path, 2);
    KILN_CHECK(lns == 1 || lns == 2, "{}: num_ln_in_parallel_attn must be 1 or 2, found {}", path, lns);
    c.norm_layout = lns == 2 ? NormLayout::Pre : NormLayout::Shared;
    c.parallel_residual = true;
  } else {
    c.num_kv_heads = multi_query ? 1 : c.num_heads;
    c.norm_layout = parallel ? NormLayout::Shared : NormLayout::Pre;
    c.parallel_residual = parallel;
  }
  c.intermediate_size = hf::get_int(j, "ffn_hidden_size", path, 4 * c.hidden_size);
  c.max_position_embeddings = hf::get_int(j, "max_position_embeddings", path, 2048);
  c.norm = NormKind::LayerNorm;
  c.norm_eps = hf::get_float(j, "layer_norm_epsilon", path, 1e-5);
  const auto act = j.find("activation");
  c.act = hf::parse_activation(act != j.end() && act->is_string() ? act->get<std::string>() : "gelu", "activation",
                               path);
  c.gated_mlp = false;
  hf::parse_rope(j, path, c);
  c.qkv_bias = c.o_bias = c.mlp_bias = hf::get_bool(j, "bias", path, false);
  hf::parse_common(j, path, c, true);
  return c;
}

// Every Falcon query_key_value is [n_kv, group + 2, head_dim] rows: per KV group its `group` query heads,
// then its key, then its value. That covers all three HF splits: new_decoder_architecture as is,
// multi_query as n_kv = 1 ([n_heads + 2, head_dim]) and the rest as n_kv = n_heads ([n_heads, 3, head_dim]).
TensorSpec falcon_spec(const ModelConfig& c, WeightRole role, int64_t layer) {
  const std::string p = fmt::format("transformer.h.{}.", layer);
  const int64_t hd = c.head_dim, nkv = c.num_kv_heads, group = c.num_heads / c.num_kv_heads;
  const int64_t block = (group + 2) * hd;
  const std::string qkv = p + "self_attention.query_key_value.weight";
  const std::string qkv_b = p + "self_attention.query_key_value.bias";
  // ln_attn / ln_mlp in the two-norm parallel layout; input_layernorm (and post_attention_layernorm when
  // sequential) otherwise.
  const bool two_parallel = c.parallel_residual && c.norm_layout == NormLayout::Pre;
  const std::string attn_ln = p + (two_parallel ? "ln_attn" : "input_layernorm");
  const std::string mlp_ln = p + (two_parallel ? "ln_mlp" : "post_attention_layernorm");
  switch (role) {
    case WeightRole::Embed: return {"transformer.word_embeddings.weight"};
    case WeightRole::FinalNorm: return {"transformer.ln_f.weight"};
    case WeightRole::FinalNormBias: return {"transformer.ln_f.bias"};
    case WeightRole::LmHead: return {"lm_head.weight"};
    case WeightRole::AttnNorm: return {attn_ln + ".weight"};
    case WeightRole::AttnNormBias: return {attn_ln + ".bias"};
    case WeightRole::MlpNorm: return {mlp_ln + ".weight"};
    case WeightRole::MlpNormBias: return {mlp_ln + ".bias"};
    case WeightRole::Q: return fused_rows(qkv, nkv, block, 0, group * hd);
    case WeightRole::K: return fused_rows(qkv, nkv, block, group * hd, hd);
    case WeightRole::V: return fused_rows(qkv, nkv, block, (group + 1) * hd, hd);
    case WeightRole::QBias: return fused_rows(qkv_b, nkv, block, 0, group * hd);
    case WeightRole::KBias: return fused_rows(qkv_b, nkv, block, group * hd, hd);
    case WeightRole::VBias: return fused_rows(qkv_b, nkv, block, (group + 1) * hd, hd);
    case WeightRole::O: return {p + "self_attention.dense.weight"};
    case WeightRole::OBias: return {p + "self_attention.dense.bias"};
    case WeightRole::Up: return {p + "mlp.dense_h_to_4h.weight"};
    case WeightRole::UpBias: return {p + "mlp.dense_h_to_4h.bias"};
    case WeightRole::Down: return {p + "mlp.dense_4h_to_h.weight"};
    case WeightRole::DownBias: return {p + "mlp.dense_4h_to_h.bias"};
    default: return {};
  }
}

}  // namespace

Family falcon_family() {
  return {.name = "falcon",
          .architectures = {"FalconForCausalLM"},
          .parse_config = parse_falcon,
          .tensor_spec = falcon_spec,
          .optional_prefix = "transformer."};
}

}  // namespace kiln
