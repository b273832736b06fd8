// Llama family (LlamaForCausalLM): rope_scaling none/linear/llama3, head_dim, attention_bias, mlp_bias; and the
// Llama layout's tensor names, in Hugging Face's spelling and in llama.cpp's GGUF one.
#include "model/families/family.h"

namespace kiln {
namespace {

ModelConfig parse_llama(const nlohmann::json& j, const std::string& path) {
  ModelConfig c = hf::parse_llama_like(j, path, "llama");
  // attention_bias puts a bias on all four projections, o_proj included.
  c.qkv_bias = c.o_bias = hf::get_bool(j, "attention_bias", path, false);
  c.mlp_bias = hf::get_bool(j, "mlp_bias", path, false);
  return c;
}

}  // namespace

const TensorTable& hf::llama_tensors() {
  using enum WeightRole;
  static const TensorTable t = {
      .layer_prefix = "model.layers.",
      .names = {{Embed, "model.embed_tokens"}, {FinalNorm, "model.norm"}, {LmHead, "lm_head", Bias::None},
                {AttnNorm, "input_layernorm"}, {Q, "self_attn.q_proj"}, {K, "self_attn.k_proj"},
                {V, "self_attn.v_proj"}, {O, "self_attn.o_proj"}, {QNorm, "self_attn.q_norm"},
                {KNorm, "self_attn.k_norm"}, {MlpNorm, "post_attention_layernorm"}, {Gate, "mlp.gate_proj"},
                {Up, "mlp.up_proj"}, {Down, "mlp.down_proj"}}};
  return t;
}

const TensorTable& gguf_llama_tensors() {
  using enum WeightRole;
  static const TensorTable t = {
      .layer_prefix = "blk.",
      .names = {{Embed, "token_embd"}, {FinalNorm, "output_norm"}, {LmHead, "output", Bias::None},
                {AttnNorm, "attn_norm"}, {Q, "attn_q"}, {K, "attn_k"}, {V, "attn_v"}, {O, "attn_output"},
                {QNorm, "attn_q_norm"}, {KNorm, "attn_k_norm"}, {MlpNorm, "ffn_norm"}, {Gate, "ffn_gate"},
                {Up, "ffn_up"}, {Down, "ffn_down"}}};
  return t;
}

Family llama_family() { return {"llama", {"LlamaForCausalLM"}, parse_llama, hf::llama_tensors()}; }

}  // namespace kiln
