// What both decoders (CPU DecoderModel, CudaDecoderModel) share before placing weights: the config checks and
// the list of tensors a config needs.
#include "model/weight_plan.h"

#include "kiln/error.h"

namespace kiln {

void check_decoder_config(ModelConfig& c, const std::string& path) {
  KILN_CHECK(c.vocab_size > 0 && c.hidden_size > 0 && c.intermediate_size > 0 && c.num_layers > 0 &&
                 c.num_heads > 0 && c.num_kv_heads > 0 && c.head_dim > 0,
             "{}: model sizes must be positive", path);
  KILN_CHECK(c.num_heads % c.num_kv_heads == 0, "{}: {} attention heads are not a multiple of {} KV heads", path,
             c.num_heads, c.num_kv_heads);
  if (c.rope.rotary_dim == 0) c.rope.rotary_dim = c.head_dim;
  KILN_CHECK(c.rope.rotary_dim > 0 && c.rope.rotary_dim <= c.head_dim && c.rope.rotary_dim % 2 == 0,
             "{}: rotary dimension {} must be even and at most head_dim {}", path, c.rope.rotary_dim, c.head_dim);
  KILN_CHECK(c.layer_sliding_window.empty() || static_cast<int64_t>(c.layer_sliding_window.size()) == c.num_layers,
             "{}: {} per-layer windows for {} layers", path, c.layer_sliding_window.size(), c.num_layers);
  KILN_CHECK(c.norm_layout != NormLayout::Shared || c.parallel_residual,
             "{}: one norm shared by attention and MLP needs a parallel residual", path);
  KILN_CHECK(c.norm_layout != NormLayout::PrePost || !c.parallel_residual,
             "{}: post-norms with a parallel residual are not supported", path);
  KILN_CHECK(c.position != PositionKind::Learned || c.max_position_embeddings > 0,
             "{}: learned positions need max_position_embeddings > 0", path);
}

WeightPlan plan_weights(const ModelConfig& c, const WeightSource& src) {
  WeightPlan p;
  const int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  const int64_t nq = c.num_heads * hd, nkv = c.num_kv_heads * hd;
  const bool norm_biases = c.norm == NormKind::LayerNorm && c.norm_bias;
  auto add = [&](WeightRole role, int64_t layer, Shape shape, bool fused = false) {
    p.tensors.push_back({role, layer, std::move(shape), fused});
    return p.tensors.size() - 1;
  };
  p.embed = add(WeightRole::Embed, 0, {c.vocab_size, H});
  p.final_norm = add(WeightRole::FinalNorm, 0, {H});
  if (norm_biases) p.final_norm_b = add(WeightRole::FinalNormBias, 0, {H});
  p.tied = c.tie_word_embeddings || !src.has(WeightRole::LmHead, 0);
  if (!p.tied) p.lm_head = add(WeightRole::LmHead, 0, {c.vocab_size, H});
  if (c.lm_head_bias) p.lm_head_b = add(WeightRole::LmHeadBias, 0, {c.vocab_size});
  if (c.position == PositionKind::Learned) p.pos_embed = add(WeightRole::PosEmbed, 0, {c.max_position_embeddings, H});
  if (c.embed_norm) {
    p.embed_norm = add(WeightRole::EmbedNorm, 0, {H});
    if (norm_biases) p.embed_norm_b = add(WeightRole::EmbedNormBias, 0, {H});
  }
  p.layers.resize(static_cast<size_t>(c.num_layers));
  for (int64_t l = 0; l < c.num_layers; ++l) {
    WeightPlan::Layer& s = p.layers[static_cast<size_t>(l)];
    s.attn_norm = add(WeightRole::AttnNorm, l, {H});
    if (norm_biases) s.attn_norm_b = add(WeightRole::AttnNormBias, l, {H});
    s.q = add(WeightRole::Q, l, {nq, H});
    add(WeightRole::K, l, {nkv, H}, true);
    add(WeightRole::V, l, {nkv, H}, true);
    if (c.qkv_bias) {
      s.bq = add(WeightRole::QBias, l, {nq});
      add(WeightRole::KBias, l, {nkv}, true);
      add(WeightRole::VBias, l, {nkv}, true);
    }
    if (c.qk_norm) {
      s.q_norm = add(WeightRole::QNorm, l, {hd});
      s.k_norm = add(WeightRole::KNorm, l, {hd});
    }
    s.o = add(WeightRole::O, l, {H, nq});
    if (c.o_bias) s.bo = add(WeightRole::OBias, l, {H});
    if (c.norm_layout != NormLayout::Shared) {
      s.mlp_norm = add(WeightRole::MlpNorm, l, {H});
      if (norm_biases) s.mlp_norm_b = add(WeightRole::MlpNormBias, l, {H});
    }
    if (c.norm_layout == NormLayout::PrePost) {
      s.post_attn = add(WeightRole::PostAttnNorm, l, {H});
      s.post_mlp = add(WeightRole::PostMlpNorm, l, {H});
      if (norm_biases) {
        s.post_attn_b = add(WeightRole::PostAttnNormBias, l, {H});
        s.post_mlp_b = add(WeightRole::PostMlpNormBias, l, {H});
      }
    }
    if (c.gated_mlp) {
      s.w_in = add(WeightRole::Gate, l, {I, H});
      add(WeightRole::Up, l, {I, H}, true);
      if (c.mlp_bias) {
        s.b_in = add(WeightRole::GateBias, l, {I});
        add(WeightRole::UpBias, l, {I}, true);
      }
    } else {
      s.w_in = add(WeightRole::Up, l, {I, H});
      if (c.mlp_bias) s.b_in = add(WeightRole::UpBias, l, {I});
    }
    s.down = add(WeightRole::Down, l, {H, I});
    if (c.mlp_bias) s.b_down = add(WeightRole::DownBias, l, {H});
  }
  return p;
}

}  // namespace kiln
