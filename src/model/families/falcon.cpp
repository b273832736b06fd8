// Falcon family (FalconForCausalLM), both layouts: the 7B style (multi-query, attention and MLP in parallel
// from one LayerNorm) and new_decoder_architecture (grouped KV heads, ln_attn and ln_mlp); also the
// sequential parallel_attn false layout. Rotary positions only: ALiBi Falcons (alibi true) are refused.
#include "kiln/error.h"
#include "model/families/family.h"

namespace kiln {

using enum WeightRole;  // the table names roles bare

// Every Falcon query_key_value is [n_kv, group + 2, head_dim] rows: per KV group its `group` query heads,
// then its key, then its value. That covers all three HF splits: new_decoder_architecture as is,
// multi_query as n_kv = 1 ([n_heads + 2, head_dim]) and the rest as n_kv = n_heads ([n_heads, 3, head_dim]).
// The norms are ln_attn / ln_mlp in the two-norm parallel layout; input_layernorm (and post_attention_layernorm
// when sequential) otherwise.
const TensorTable kTensors = {
    .layer_prefix = "transformer.h.",
    .names = {{Embed, "transformer.word_embeddings"}, {FinalNorm, "transformer.ln_f"}, {LmHead, "lm_head", Bias::None},
              {AttnNorm, "input_layernorm"}, {Q, "self_attention.query_key_value", Bias::Named, Fused::PerKvGroup},
              {O, "self_attention.dense"}, {MlpNorm, "post_attention_layernorm"}, {Up, "mlp.dense_h_to_4h"},
              {Down, "mlp.dense_4h_to_h"}},
    .parallel_norms = {{AttnNorm, "ln_attn"}, {MlpNorm, "ln_mlp"}}};

namespace {

ModelConfig parse_falcon(const nlohmann::json& j, const std::string& path) {
  KILN_CHECK(!hf::get_bool(j, "alibi", path, false),
             "{}: alibi true (Falcon-RW style ALiBi Falcon) is not supported; only rotary Falcons are", path);
  ModelConfig c = hf::parse_gpt_like(j, path, "falcon", {.hidden = {"hidden_size", "n_embed"},
                                                         .layers = {"num_hidden_layers", "n_layer"},
                                                         .heads = {"num_attention_heads", "n_head"}});
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
  c.act = hf::get_activation(j, "activation", path, "gelu");
  hf::parse_rope(j, path, c);
  c.qkv_bias = c.o_bias = c.mlp_bias = hf::get_bool(j, "bias", path, false);
  return c;
}

}  // namespace

Family falcon_family() { return {"falcon", {"FalconForCausalLM"}, parse_falcon, kTensors, "transformer."}; }

}  // namespace kiln
