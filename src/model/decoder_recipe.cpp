// The decoder recipe (embedding, layers) over ForwardOps, and the batch checks every backend shares.
#include "model/decoder_recipe.h"

#include <cmath>

#include "kiln/error.h"

namespace kiln {

void DecoderRecipe::forward(ForwardOps& ops, const ModelWeights& w) const {
  ops.embed(w.embed, static_cast<float>(c_.embed_scale),
            c_.position == PositionKind::Learned ? w.pos_embed : nullptr);
  if (w.embed_norm.present()) ops.norm(w.embed_norm, Buf::X, Buf::X, false);
  for (int64_t l = 0; l < c_.num_layers; ++l) layer(ops, w.layers[static_cast<size_t>(l)], l);
}

AttentionParams DecoderRecipe::attention(int64_t l) const {
  AttentionParams p;
  p.layer = l;
  p.scale = c_.attn_scale > 0 ? static_cast<float>(c_.attn_scale)
                              : 1.0f / std::sqrt(static_cast<float>(c_.head_dim));
  p.softcap = static_cast<float>(c_.attn_logit_softcap);
  p.window = c_.window_for_layer(l);
  p.alibi = c_.position == PositionKind::Alibi;
  return p;
}

// One layer. Sequential residual: x += o(attn(n1(x))) [post-normed first in PrePost], then x += mlp(n2(x)) [likewise].
// Parallel residual: both blocks read this layer's input; the MLP's norm (or, shared, the attention's, still in H)
// is taken before o_proj adds into x, then x += o(att) and x += mlp(h), in that order.
void DecoderRecipe::layer(ForwardOps& ops, const LayerWeights& L, int64_t l) const {
  ops.norm(L.attn_norm, Buf::X, Buf::H, false);
  ops.linear(L.qkv, Buf::H, Buf::QKV, false);
  if (c_.clip_qkv > 0) ops.clamp(Buf::QKV, static_cast<float>(c_.clip_qkv));
  ops.rope_kv_write(L, l, c_.position == PositionKind::Rope);
  ops.attention(attention(l));

  // out (+)= mlp(H).
  auto mlp = [&](Buf out, bool accumulate) {
    ops.linear(L.w_in, Buf::H, Buf::MlpIn, false);
    ops.activation();
    ops.linear(L.down, Buf::Act, out, accumulate);
  };
  if (c_.parallel_residual) {
    if (c_.norm_layout != NormLayout::Shared) ops.norm(L.mlp_norm, Buf::X, Buf::H, false);
    ops.linear(L.o, Buf::Att, Buf::X, true);
    mlp(Buf::X, true);
    return;
  }
  if (L.post_attn_norm.present()) {
    ops.linear(L.o, Buf::Att, Buf::Y, false);
    ops.norm(L.post_attn_norm, Buf::Y, Buf::X, true);
  } else {
    ops.linear(L.o, Buf::Att, Buf::X, true);
  }
  ops.norm(L.mlp_norm, Buf::X, Buf::H, false);
  if (L.post_mlp_norm.present()) {
    mlp(Buf::Y, false);
    ops.norm(L.post_mlp_norm, Buf::Y, Buf::X, true);
  } else {
    mlp(Buf::X, true);
  }
}

void check_batch(const ForwardBatch& b, const ModelConfig& c, int64_t num_blocks, int32_t block_size,
                 int64_t max_tokens) {
  const int64_t T = static_cast<int64_t>(b.tokens.size());
  const int64_t bs = block_size, nb = num_blocks, V = c.vocab_size;
  KILN_CHECK(T > 0 && b.positions.size() == b.tokens.size() && b.slots.size() == b.tokens.size(),
             "forward_batch: {} tokens, {} positions and {} slots must be equal and non-zero", T, b.positions.size(),
             b.slots.size());
  KILN_CHECK(T <= max_tokens, "forward_batch: {} rows exceed the workspace's {}", T, max_tokens);
  KILN_CHECK(b.num_decodes >= 0 && b.num_decodes <= static_cast<int64_t>(b.seqs.size()),
             "forward_batch: {} decodes in a batch of {} sequences", b.num_decodes, b.seqs.size());
  int64_t row = 0;
  for (size_t i = 0; i < b.seqs.size(); ++i) {
    const BatchSeq& s = b.seqs[i];
    KILN_CHECK(s.query_start == row && s.query_len > 0 && s.query_len <= s.context_len &&
                   s.context_len <= static_cast<int64_t>(s.block_table.size()) * bs,
               "forward_batch: sequence at row {} has {} rows, {} context tokens and {} blocks of {}", s.query_start,
               s.query_len, s.context_len, s.block_table.size(), bs);
    KILN_CHECK(static_cast<int64_t>(i) >= b.num_decodes || s.query_len == 1,
               "forward_batch: sequence {} is one of the {} decodes but has {} rows", i, b.num_decodes, s.query_len);
    for (int64_t j = 0; j < (s.context_len + bs - 1) / bs; ++j)
      KILN_CHECK(s.block_table[j] >= 0 && s.block_table[j] < nb, "forward_batch: block {} is outside the pool of {}",
                 s.block_table[j], nb);
    for (int64_t t = 0; t < s.query_len; ++t) {
      const int64_t p = s.context_len - s.query_len + t;
      KILN_CHECK(b.positions[row + t] == p && b.slots[row + t] == s.block_table[p / bs] * bs + p % bs,
                 "forward_batch: row {} has position {} and slot {}, expected {} and {}", row + t, b.positions[row + t],
                 b.slots[row + t], p, s.block_table[p / bs] * bs + p % bs);
      KILN_CHECK(c.position != PositionKind::Learned || p < c.max_position_embeddings,
                 "forward: position {} exceeds the model's {} learned positions", p, c.max_position_embeddings);
    }
    row += s.query_len;
  }
  KILN_CHECK(row == T, "forward_batch: the sequences cover {} of {} rows", row, T);
  for (size_t i = 0; i < b.logit_rows.size(); ++i)
    KILN_CHECK(b.logit_rows[i] >= 0 && b.logit_rows[i] < T && (i == 0 || b.logit_rows[i] > b.logit_rows[i - 1]),
               "forward_batch: logit rows must be ascending rows of the batch");
  for (int64_t t = 0; t < T; ++t)
    KILN_CHECK(b.tokens[t] >= 0 && b.tokens[t] < V, "token id {} at row {} is outside the vocabulary [0, {})",
               b.tokens[t], t, V);
}

}  // namespace kiln
