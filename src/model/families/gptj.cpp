// GPT-J family (GPTJForCausalLM): attention and MLP in parallel from one LayerNorm, interleaved rotary on
// the first rotary_dim dims of each head, no q/k/v/out biases, a bias on the untied lm_head.
#include <algorithm>

#include "kiln/error.h"
#include "model/families/family.h"

namespace kiln {

using enum WeightRole;  // the table names roles bare

const TensorTable kTensors = {
    .layer_prefix = "transformer.h.",
    .names = {{Embed, "transformer.wte"}, {FinalNorm, "transformer.ln_f"}, {LmHead, "lm_head"}, {AttnNorm, "ln_1"},
              {Q, "attn.q_proj", Bias::None}, {K, "attn.k_proj", Bias::None}, {V, "attn.v_proj", Bias::None},
              {O, "attn.out_proj", Bias::None}, {Up, "mlp.fc_in"}, {Down, "mlp.fc_out"}}};

namespace {

ModelConfig parse_gptj(const nlohmann::json& j, const std::string& path) {
  ModelConfig c = hf::parse_gpt2_like(j, path, "gptj", false);
  c.max_position_embeddings = hf::get_int_any(j, {"n_positions", "max_position_embeddings"}, path, 2048);
  // GPT-J's rotary is fixed at base 10000, pairs (2i, 2i + 1), over the first rotary_dim dims (default 64).
  c.rope.theta = 10000.0;
  c.rope.interleaved = true;
  c.rope.rotary_dim = std::min(hf::get_int(j, "rotary_dim", path, 64), c.head_dim);
  KILN_CHECK(c.rope.rotary_dim > 0 && c.rope.rotary_dim % 2 == 0, "{}: rotary_dim {} must be positive and even",
             path, c.rope.rotary_dim);
  c.norm_layout = NormLayout::Shared;
  c.parallel_residual = true;
  c.qkv_bias = c.o_bias = false;
  c.mlp_bias = true;
  c.lm_head_bias = true;
  return c;
}

}  // namespace

Family gptj_family() { return {"gptj", {"GPTJForCausalLM"}, parse_gptj, kTensors, "transformer."}; }

}  // namespace kiln
