// DecoderModel: weight loading into one f32 arena, per-sequence KV state, and the forward pass.
#include "model/decoder_model.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

#include "kernels/cpu/ops.h"
#include "kiln/error.h"

namespace kiln {
namespace {

cpu::Activation to_cpu(ActKind a) {
  switch (a) {
    case ActKind::SiLU: return cpu::Activation::SiLU;
    case ActKind::GeluTanh: return cpu::Activation::GeluTanh;
    case ActKind::GeluErf: return cpu::Activation::GeluErf;
  }
  return cpu::Activation::SiLU;
}

// The KV cache ([layer][k|v][kv_head][capacity][head_dim]) and the scratch buffers of one sequence.
class DecoderState final : public KvState {
 public:
  DecoderState(const void* owner, const ModelConfig& c, int64_t capacity)
      : owner_(owner),
        per_layer_(c.num_kv_heads * capacity * c.head_dim),
        kv_(static_cast<size_t>(c.num_layers * 2 * per_layer_) * sizeof(float)) {
    capacity_ = capacity;
  }
  const void* owner() const { return owner_; }
  float* k(int64_t layer) { return kv_.as<float>() + (2 * layer) * per_layer_; }
  float* v(int64_t layer) { return kv_.as<float>() + (2 * layer + 1) * per_layer_; }
  void set_length(int64_t n) { length_ = n; }

  std::vector<float> x, h, qkv, att, mlp_in, mlp_act, mlp_out, cos, sin;
  std::vector<int64_t> positions;

 private:
  const void* owner_;
  int64_t per_layer_;
  HostBuffer kv_;
};

// Planned tensors: where each goes in the arena and how it is read.
struct Slot {
  WeightRole role;
  int64_t layer;
  Shape shape;
  size_t offset;  // in floats
};

}  // namespace

void KvState::truncate(int64_t n) {
  KILN_CHECK(n >= 0 && n <= length_, "KV state: cannot truncate to {} tokens, it holds {}", n, length_);
  length_ = n;
}

std::unique_ptr<DecoderModel> DecoderModel::create(ModelConfig c, const WeightSource& src,
                                                   const LoadOptions& options) {
  const auto t_start = std::chrono::steady_clock::now();
  const std::string& path = src.path();
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

  std::unique_ptr<DecoderModel> m(new DecoderModel());
  const int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  const int64_t nq = c.num_heads * hd, nkv = c.num_kv_heads * hd;
  const bool layer_norm = c.norm == NormKind::LayerNorm;
  const bool norm_biases = layer_norm && c.norm_bias;

  // Plan: every tensor gets a 64-byte aligned place; tensors that are fused (q|k|v, gate|up) are
  // planned back to back so their rows stack.
  std::vector<Slot> slots;
  size_t total = 0;
  auto plan = [&](WeightRole role, int64_t layer, Shape shape, bool align = true) {
    if (align) total = (total + 15) / 16 * 16;
    slots.push_back({role, layer, shape, total});
    total += static_cast<size_t>(shape_numel(shape));
    return slots.size() - 1;
  };
  const size_t s_embed = plan(WeightRole::Embed, 0, {c.vocab_size, H});
  const size_t s_fnorm = plan(WeightRole::FinalNorm, 0, {H});
  const size_t s_fnorm_b = norm_biases ? plan(WeightRole::FinalNormBias, 0, {H}) : SIZE_MAX;
  const bool tied = c.tie_word_embeddings || !src.has(WeightRole::LmHead, 0);
  const size_t s_lm = tied ? SIZE_MAX : plan(WeightRole::LmHead, 0, {c.vocab_size, H});
  const size_t s_lm_b = c.lm_head_bias ? plan(WeightRole::LmHeadBias, 0, {c.vocab_size}) : SIZE_MAX;
  const size_t s_pos =
      c.position == PositionKind::Learned ? plan(WeightRole::PosEmbed, 0, {c.max_position_embeddings, H}) : SIZE_MAX;
  const size_t s_enorm = c.embed_norm ? plan(WeightRole::EmbedNorm, 0, {H}) : SIZE_MAX;
  const size_t s_enorm_b = c.embed_norm && norm_biases ? plan(WeightRole::EmbedNormBias, 0, {H}) : SIZE_MAX;
  struct LayerSlots {
    size_t attn_norm, attn_norm_b = SIZE_MAX, q, bq = SIZE_MAX, q_norm = SIZE_MAX, k_norm = SIZE_MAX, o,
                      bo = SIZE_MAX, mlp_norm = SIZE_MAX, mlp_norm_b = SIZE_MAX, w_in, b_in = SIZE_MAX, down,
                      b_down = SIZE_MAX, post_attn = SIZE_MAX, post_attn_b = SIZE_MAX, post_mlp = SIZE_MAX,
                      post_mlp_b = SIZE_MAX;
  };
  std::vector<LayerSlots> ls(static_cast<size_t>(c.num_layers));
  for (int64_t l = 0; l < c.num_layers; ++l) {
    LayerSlots& s = ls[l];
    s.attn_norm = plan(WeightRole::AttnNorm, l, {H});
    if (norm_biases) s.attn_norm_b = plan(WeightRole::AttnNormBias, l, {H});
    s.q = plan(WeightRole::Q, l, {nq, H});
    plan(WeightRole::K, l, {nkv, H}, false);
    plan(WeightRole::V, l, {nkv, H}, false);
    if (c.qkv_bias) {
      s.bq = plan(WeightRole::QBias, l, {nq});
      plan(WeightRole::KBias, l, {nkv}, false);
      plan(WeightRole::VBias, l, {nkv}, false);
    }
    if (c.qk_norm) {
      s.q_norm = plan(WeightRole::QNorm, l, {hd});
      s.k_norm = plan(WeightRole::KNorm, l, {hd});
    }
    s.o = plan(WeightRole::O, l, {H, nq});
    if (c.o_bias) s.bo = plan(WeightRole::OBias, l, {H});
    if (c.norm_layout != NormLayout::Shared) {
      s.mlp_norm = plan(WeightRole::MlpNorm, l, {H});
      if (norm_biases) s.mlp_norm_b = plan(WeightRole::MlpNormBias, l, {H});
    }
    if (c.norm_layout == NormLayout::PrePost) {
      s.post_attn = plan(WeightRole::PostAttnNorm, l, {H});
      s.post_mlp = plan(WeightRole::PostMlpNorm, l, {H});
      if (norm_biases) {
        s.post_attn_b = plan(WeightRole::PostAttnNormBias, l, {H});
        s.post_mlp_b = plan(WeightRole::PostMlpNormBias, l, {H});
      }
    }
    if (c.gated_mlp) {
      s.w_in = plan(WeightRole::Gate, l, {I, H});
      plan(WeightRole::Up, l, {I, H}, false);
      if (c.mlp_bias) {
        s.b_in = plan(WeightRole::GateBias, l, {I});
        plan(WeightRole::UpBias, l, {I}, false);
      }
    } else {
      s.w_in = plan(WeightRole::Up, l, {I, H});
      if (c.mlp_bias) s.b_in = plan(WeightRole::UpBias, l, {I});
    }
    s.down = plan(WeightRole::Down, l, {H, I});
    if (c.mlp_bias) s.b_down = plan(WeightRole::DownBias, l, {H});
  }

  // Missing tensors are reported before anything large is allocated or read.
  for (const Slot& s : slots)
    KILN_CHECK(src.has(s.role, s.layer), "{}: missing tensor '{}'", path, src.name(s.role, s.layer));

  m->arena_ = HostBuffer(total * sizeof(float));
  float* base = m->arena_.as<float>();
  int64_t params = 0;
  for (size_t i = 0; i < slots.size(); ++i) {
    const Slot& s = slots[i];
    src.read(s.role, s.layer, s.shape, base + s.offset);
    params += shape_numel(s.shape);
    if (options.progress && (i + 1 == slots.size() || i % 8 == 0))
      std::fprintf(stderr, "\rkiln: loading %s: %zu/%zu tensors", path.c_str(), i + 1, slots.size());
  }
  auto at = [&](size_t slot) -> const float* { return slot == SIZE_MAX ? nullptr : base + slots[slot].offset; };
  m->embed_ = at(s_embed);
  m->final_norm_ = at(s_fnorm);
  m->final_norm_b_ = at(s_fnorm_b);
  m->lm_head_ = tied ? m->embed_ : at(s_lm);
  m->lm_head_b_ = at(s_lm_b);
  m->pos_embed_ = at(s_pos);
  m->embed_norm_ = at(s_enorm);
  m->embed_norm_b_ = at(s_enorm_b);
  m->layers_.resize(static_cast<size_t>(c.num_layers));
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const LayerSlots& s = ls[l];
    Layer& L = m->layers_[l];
    L.attn_norm = at(s.attn_norm);
    L.attn_norm_b = at(s.attn_norm_b);
    L.wqkv = at(s.q);
    L.bqkv = at(s.bq);
    L.q_norm = at(s.q_norm);
    L.k_norm = at(s.k_norm);
    L.wo = at(s.o);
    L.bo = at(s.bo);
    L.mlp_norm = at(s.mlp_norm);
    L.mlp_norm_b = at(s.mlp_norm_b);
    L.post_attn_norm = at(s.post_attn);
    L.post_attn_norm_b = at(s.post_attn_b);
    L.post_mlp_norm = at(s.post_mlp);
    L.post_mlp_norm_b = at(s.post_mlp_b);
    L.w_in = at(s.w_in);
    L.b_in = at(s.b_in);
    L.w_down = at(s.down);
    L.b_down = at(s.b_down);
  }
  c.tie_word_embeddings = tied;
  m->inv_freq_ = cpu::rope_inv_freq(c.rope, c.rope.rotary_dim);
  if (c.position == PositionKind::Alibi) m->alibi_slopes_ = cpu::alibi_slopes(c.num_heads, c.alibi_bias_max);
  m->num_parameters_ = params;
  m->weight_bytes_ = total * sizeof(float);
  m->cfg_ = std::move(c);
  if (options.progress) {
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    std::fprintf(stderr, "\rkiln: loaded %s: %lld parameters, %.1f MiB as f32, in %.2f s\n", path.c_str(),
                 static_cast<long long>(params), static_cast<double>(m->weight_bytes_) / (1 << 20), secs);
  }
  return m;
}

std::unique_ptr<KvState> DecoderModel::new_state(int64_t capacity) const {
  KILN_CHECK(capacity > 0, "KV state capacity must be positive, got {}", capacity);
  return std::make_unique<DecoderState>(this, cfg_, capacity);
}

void DecoderModel::norm(const float* x, const float* w, const float* b, float* y, int64_t rows) const {
  const float eps = static_cast<float>(cfg_.norm_eps);
  if (cfg_.norm == NormKind::LayerNorm) {
    cpu::layer_norm(x, w, b, y, rows, cfg_.hidden_size, eps);
  } else {
    cpu::rms_norm(x, w, y, rows, cfg_.hidden_size, eps, cfg_.norm_add_one);
  }
}

void DecoderModel::forward(KvState& state, std::span<const int32_t> tokens, std::vector<float>& logits,
                           bool all_logits) const {
  auto* st = dynamic_cast<DecoderState*>(&state);
  KILN_CHECK(st != nullptr && st->owner() == this, "forward: the KV state was not made by this model's new_state");
  const int64_t T = static_cast<int64_t>(tokens.size());
  KILN_CHECK(T > 0, "forward: no tokens to run");
  const int64_t pos0 = st->length();
  const int64_t cap = st->capacity();
  KILN_CHECK(pos0 + T <= cap, "forward: {} new tokens after {} cached exceed the KV state capacity of {}", T, pos0,
             cap);
  const ModelConfig& c = cfg_;
  const int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim, V = c.vocab_size;
  const int64_t nh = c.num_heads, nkvh = c.num_kv_heads;
  const int64_t nq = nh * hd, nkv = nkvh * hd, ld_qkv = nq + 2 * nkv;
  const int64_t ld_in = c.gated_mlp ? 2 * I : I;
  const int64_t half = c.rope.rotary_dim / 2;
  const float eps = static_cast<float>(c.norm_eps);
  const float scale = c.attn_scale > 0 ? static_cast<float>(c.attn_scale) : 1.0f / std::sqrt(static_cast<float>(hd));
  const float* slopes = alibi_slopes_.empty() ? nullptr : alibi_slopes_.data();
  const float softcap = static_cast<float>(c.attn_logit_softcap);
  const cpu::Activation act = to_cpu(c.act);

  auto grow = [](auto& v, int64_t n) {
    if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
  };
  grow(st->x, T * H);
  grow(st->h, T * H);
  grow(st->qkv, T * ld_qkv);
  grow(st->att, T * nq);
  grow(st->mlp_in, T * ld_in);
  grow(st->mlp_act, T * I);
  if (c.parallel_residual) grow(st->mlp_out, T * H);
  grow(st->cos, T * half);
  grow(st->sin, T * half);
  grow(st->positions, T);
  float* x = st->x.data();
  float* h = st->h.data();
  float* qkv = st->qkv.data();
  float* att = st->att.data();

  KILN_CHECK(c.position != PositionKind::Learned || pos0 + T <= c.max_position_embeddings,
             "forward: positions up to {} exceed the model's {} learned positions", pos0 + T - 1,
             c.max_position_embeddings);
  cpu::embedding(embed_, V, H, tokens.data(), T, x);  // validates ids before the state changes
  for (int64_t t = 0; t < T; ++t) st->positions[t] = pos0 + t;
  if (c.embed_scale != 1.0) cpu::scale_inplace(x, T * H, static_cast<float>(c.embed_scale));
  if (pos_embed_ != nullptr)
    cpu::add_position_embedding(pos_embed_, c.max_position_embeddings, H, st->positions.data(), T, x);
  if (embed_norm_ != nullptr) cpu::layer_norm(x, embed_norm_, embed_norm_b_, x, T, H, eps);
  const bool rotary = c.position == PositionKind::Rope;
  if (rotary) cpu::rope_tables(inv_freq_, st->positions.data(), T, st->cos.data(), st->sin.data());

  // The MLP of one layer: `in` [T, H] to `out` [T, H] (they may alias).
  auto mlp = [&](const Layer& L, const float* in, float* out) {
    float* a = st->mlp_act.data();
    if (c.gated_mlp) {
      float* gu = st->mlp_in.data();
      cpu::matmul(in, T, H, L.w_in, 2 * I, L.b_in, gu);
      cpu::gated_activation(gu, gu + I, a, T, I, 2 * I, act);
    } else {
      cpu::matmul(in, T, H, L.w_in, I, L.b_in, a);
      cpu::activation(a, T * I, act);
    }
    cpu::matmul(a, T, I, L.w_down, H, L.b_down, out);
  };

  for (int64_t l = 0; l < c.num_layers; ++l) {
    const Layer& L = layers_[l];
    norm(x, L.attn_norm, L.attn_norm_b, h, T);
    cpu::matmul(h, T, H, L.wqkv, ld_qkv, L.bqkv, qkv);
    if (c.clip_qkv > 0) cpu::clamp(qkv, T * ld_qkv, static_cast<float>(-c.clip_qkv), static_cast<float>(c.clip_qkv));
    if (c.qk_norm) {
      for (int64_t t = 0; t < T; ++t) {
        float* row = qkv + t * ld_qkv;
        cpu::rms_norm(row, L.q_norm, row, nh, hd, eps);
        cpu::rms_norm(row + nq, L.k_norm, row + nq, nkvh, hd, eps);
      }
    }
    if (rotary) {
      cpu::rope(qkv, T, nh, hd, c.rope.rotary_dim, c.rope.interleaved, st->cos.data(), st->sin.data(), ld_qkv);
      cpu::rope(qkv + nq, T, nkvh, hd, c.rope.rotary_dim, c.rope.interleaved, st->cos.data(), st->sin.data(),
                ld_qkv);
    }
    float* kc = st->k(l);
    float* vc = st->v(l);
    for (int64_t t = 0; t < T; ++t) {
      const float* row = qkv + t * ld_qkv;
      for (int64_t g = 0; g < nkvh; ++g) {
        std::copy_n(row + nq + g * hd, hd, kc + (g * cap + pos0 + t) * hd);
        std::copy_n(row + nq + nkv + g * hd, hd, vc + (g * cap + pos0 + t) * hd);
      }
    }
    cpu::attention(qkv, ld_qkv, T, nh, hd, kc, vc, nkvh, cap, pos0, c.window_for_layer(l), scale, att, nq, slopes,
                   softcap);
    if (c.parallel_residual) {
      // Attention and MLP both read this layer's input x; the MLP reads the attention's norm (still in h)
      // when the layout shares it.
      float* m = st->mlp_out.data();
      if (c.norm_layout != NormLayout::Shared) norm(x, L.mlp_norm, L.mlp_norm_b, h, T);
      mlp(L, h, m);
      cpu::matmul(att, T, nq, L.wo, H, L.bo, h);
      cpu::add_inplace(x, h, T * H);
      cpu::add_inplace(x, m, T * H);
      continue;
    }
    cpu::matmul(att, T, nq, L.wo, H, L.bo, h);
    if (L.post_attn_norm != nullptr) norm(h, L.post_attn_norm, L.post_attn_norm_b, h, T);
    cpu::add_inplace(x, h, T * H);

    norm(x, L.mlp_norm, L.mlp_norm_b, h, T);
    mlp(L, h, h);
    if (L.post_mlp_norm != nullptr) norm(h, L.post_mlp_norm, L.post_mlp_norm_b, h, T);
    cpu::add_inplace(x, h, T * H);
  }

  const int64_t rows = all_logits ? T : 1;
  const float* last = all_logits ? x : x + (T - 1) * H;
  norm(last, final_norm_, final_norm_b_, h, rows);
  logits.resize(static_cast<size_t>(rows * V));
  cpu::matmul(h, rows, H, lm_head_, V, lm_head_b_, logits.data());
  if (c.final_logit_softcap > 0) cpu::softcap(logits.data(), rows * V, static_cast<float>(c.final_logit_softcap));
  st->set_length(pos0 + T);
}

}  // namespace kiln
