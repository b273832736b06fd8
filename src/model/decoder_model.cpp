// DecoderModel: weight loading into one f32 arena, per-sequence KV state, the paged KV pool, and the forward
// pass (written once, over a packed batch whose K/V live in blocks; a contiguous KvState is a single block).
#include "model/decoder_model.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "kernels/cpu/ops.h"
#include "kiln/error.h"
#include "model/weight_plan.h"

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

}  // namespace

// The scratch of one forward pass.
struct DecoderModel::Workspace {
  std::vector<float> x, h, qkv, att, mlp_in, mlp_act, mlp_out, cos, sin;
  std::vector<cpu::PagedSeq> seqs;
};

namespace {

// The KV cache ([layer][k|v][kv_head][capacity][head_dim]: one block of `capacity` slots, as the paged
// layout has it) and the scratch buffers of one sequence.
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

  DecoderModel::Workspace ws;
  std::vector<int64_t> positions, slots, logit_rows;

 private:
  const void* owner_;
  int64_t per_layer_;
  HostBuffer kv_;
};

// Paged KV blocks ([block][layer][k|v][kv_head][block_size][head_dim]) and the scratch of forward_batch.
// The blocks are reserved, not zeroed: pages are committed as blocks are first written.
class DecoderKvPool final : public KvPool {
 public:
  DecoderKvPool(const void* owner, int64_t num_blocks, int32_t block_size, int64_t max_batch_tokens,
                int64_t block_floats)
      : owner_(owner), block_floats_(block_floats) {
    num_blocks_ = num_blocks;
    block_size_ = block_size;
    max_batch_tokens_ = max_batch_tokens;
    const size_t bytes = (static_cast<size_t>(num_blocks * block_floats) * sizeof(float) + 63) / 64 * 64;
    data_.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
    KILN_CHECK(data_ != nullptr, "KV cache: out of host memory allocating {} bytes for {} blocks", bytes,
               num_blocks);
  }
  const void* owner() const { return owner_; }
  float* base() { return data_.get(); }
  int64_t block_floats() const { return block_floats_; }

  DecoderModel::Workspace ws;

 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  const void* owner_;
  int64_t block_floats_;
  std::unique_ptr<float, Free> data_;
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
  check_decoder_config(c, path);

  std::unique_ptr<DecoderModel> m(new DecoderModel());
  // Place the planned tensors: each gets a 64-byte aligned start; fused ones (q|k|v, gate|up) follow their
  // leader so their rows stack.
  const WeightPlan wp = plan_weights(c, src);
  std::vector<Slot> slots;
  size_t total = 0;
  for (const PlannedTensor& t : wp.tensors) {
    if (!t.fused) total = (total + 15) / 16 * 16;
    slots.push_back({t.role, t.layer, t.shape, total});
    total += static_cast<size_t>(shape_numel(t.shape));
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
  auto at = [&](size_t slot) -> const float* { return slot == kNoTensor ? nullptr : base + slots[slot].offset; };
  m->embed_ = at(wp.embed);
  m->final_norm_ = at(wp.final_norm);
  m->final_norm_b_ = at(wp.final_norm_b);
  m->lm_head_ = wp.tied ? m->embed_ : at(wp.lm_head);
  m->lm_head_b_ = at(wp.lm_head_b);
  m->pos_embed_ = at(wp.pos_embed);
  m->embed_norm_ = at(wp.embed_norm);
  m->embed_norm_b_ = at(wp.embed_norm_b);
  m->layers_.resize(static_cast<size_t>(c.num_layers));
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const WeightPlan::Layer& s = wp.layers[static_cast<size_t>(l)];
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
  c.tie_word_embeddings = wp.tied;
  m->inv_freq_ = cpu::rope_inv_freq(c.rope, c.rope.rotary_dim);
  if (c.position == PositionKind::Alibi) m->alibi_slopes_ = cpu::alibi_slopes(c.num_heads, c.alibi_bias_max);
  m->num_parameters_ = params;
  m->weight_bytes_ = total * sizeof(float);
  m->kv_fp8_ = options.kv_cache_fp8;
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
  st->positions.resize(static_cast<size_t>(T));
  st->slots.resize(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) st->positions[t] = st->slots[t] = pos0 + t;
  st->logit_rows.clear();
  for (int64_t t = all_logits ? 0 : T - 1; t < T; ++t) st->logit_rows.push_back(t);
  const int32_t block0 = 0;
  const BatchSeq seq{0, T, pos0 + T, {&block0, 1}};
  const ForwardBatch batch{tokens, st->positions, st->slots, {&seq, 1}, st->logit_rows};
  run(batch, KvView{st->k(0), 0, cap}, st->ws, logits);
  st->set_length(pos0 + T);
}

int64_t DecoderModel::kv_block_bytes(int32_t block_size) const {
  return 2 * cfg_.num_layers * cfg_.num_kv_heads * block_size * cfg_.head_dim * static_cast<int64_t>(sizeof(float));
}

std::unique_ptr<KvPool> DecoderModel::new_kv_pool(int64_t num_blocks, int32_t block_size,
                                                  int64_t max_batch_tokens) const {
  KILN_CHECK(num_blocks > 0 && block_size > 0 && max_batch_tokens > 0,
             "KV pool: blocks ({}), block size ({}) and batch tokens ({}) must be positive", num_blocks, block_size,
             max_batch_tokens);
  auto pool = std::make_unique<DecoderKvPool>(this, num_blocks, block_size, max_batch_tokens,
                                              kv_block_bytes(block_size) / static_cast<int64_t>(sizeof(float)));
  reserve(pool->ws, max_batch_tokens);
  return pool;
}

void DecoderModel::forward_batch(KvPool& kv_pool, const ForwardBatch& b, std::vector<float>& logits) const {
  auto* pool = dynamic_cast<DecoderKvPool*>(&kv_pool);
  KILN_CHECK(pool != nullptr && pool->owner() == this, "forward_batch: the KV pool was not made by this model");
  const int64_t T = static_cast<int64_t>(b.tokens.size());
  const int64_t bs = pool->block_size(), nb = pool->num_blocks();
  KILN_CHECK(T > 0 && b.positions.size() == b.tokens.size() && b.slots.size() == b.tokens.size(),
             "forward_batch: {} tokens, {} positions and {} slots must be equal and non-zero", T, b.positions.size(),
             b.slots.size());
  int64_t row = 0;
  for (const BatchSeq& s : b.seqs) {
    KILN_CHECK(s.query_start == row && s.query_len > 0 && s.query_len <= s.context_len &&
                   s.context_len <= static_cast<int64_t>(s.block_table.size()) * bs,
               "forward_batch: sequence at row {} has {} rows, {} context tokens and {} blocks of {}", s.query_start,
               s.query_len, s.context_len, s.block_table.size(), bs);
    for (int64_t i = 0; i < (s.context_len + bs - 1) / bs; ++i)
      KILN_CHECK(s.block_table[i] >= 0 && s.block_table[i] < nb, "forward_batch: block {} is outside the pool of {}",
                 s.block_table[i], nb);
    for (int64_t t = 0; t < s.query_len; ++t) {
      const int64_t p = s.context_len - s.query_len + t;
      KILN_CHECK(b.positions[row + t] == p && b.slots[row + t] == s.block_table[p / bs] * bs + p % bs,
                 "forward_batch: row {} has position {} and slot {}, expected {} and {}", row + t,
                 b.positions[row + t], b.slots[row + t], p, s.block_table[p / bs] * bs + p % bs);
    }
    row += s.query_len;
  }
  KILN_CHECK(row == T, "forward_batch: the sequences cover {} of {} rows", row, T);
  for (size_t i = 0; i < b.logit_rows.size(); ++i)
    KILN_CHECK(b.logit_rows[i] >= 0 && b.logit_rows[i] < T && (i == 0 || b.logit_rows[i] > b.logit_rows[i - 1]),
               "forward_batch: logit rows must be ascending rows of the batch");
  run(b, KvView{pool->base(), pool->block_floats(), bs}, pool->ws, logits);
}

void DecoderModel::reserve(Workspace& ws, int64_t T) const {
  const ModelConfig& c = cfg_;
  const int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  const int64_t nq = c.num_heads * hd, ld_qkv = nq + 2 * c.num_kv_heads * hd;
  const int64_t half = c.rope.rotary_dim / 2;
  auto grow = [](auto& v, int64_t n) {
    if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
  };
  grow(ws.x, T * H);
  grow(ws.h, T * H);
  grow(ws.qkv, T * ld_qkv);
  grow(ws.att, T * nq);
  grow(ws.mlp_in, T * (c.gated_mlp ? 2 * I : I));
  grow(ws.mlp_act, T * I);
  if (c.parallel_residual) grow(ws.mlp_out, T * H);
  grow(ws.cos, T * half);
  grow(ws.sin, T * half);
}

// The forward pass of a packed batch. Every op works row by row (or per sequence, for attention) with the
// same arithmetic whatever the batch holds, so a row's result does not depend on its neighbours.
void DecoderModel::run(const ForwardBatch& b, const KvView& kv, Workspace& ws, std::vector<float>& logits) const {
  const int64_t T = static_cast<int64_t>(b.tokens.size());
  const ModelConfig& c = cfg_;
  const int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim, V = c.vocab_size;
  const int64_t nh = c.num_heads, nkvh = c.num_kv_heads;
  const int64_t nq = nh * hd, nkv = nkvh * hd, ld_qkv = nq + 2 * nkv;
  const float eps = static_cast<float>(c.norm_eps);
  const float scale = c.attn_scale > 0 ? static_cast<float>(c.attn_scale) : 1.0f / std::sqrt(static_cast<float>(hd));
  const float* slopes = alibi_slopes_.empty() ? nullptr : alibi_slopes_.data();
  const float softcap = static_cast<float>(c.attn_logit_softcap);
  const cpu::Activation act = to_cpu(c.act);

  reserve(ws, T);
  float* x = ws.x.data();
  float* h = ws.h.data();
  float* qkv = ws.qkv.data();
  float* att = ws.att.data();
  const int64_t* positions = b.positions.data();
  ws.seqs.clear();
  for (const BatchSeq& s : b.seqs) ws.seqs.push_back({s.query_start, s.query_len, s.context_len, s.block_table.data()});
  // K then V of layer l start at base + (2 l + 0|1) * layer_floats inside every block.
  const int64_t layer_floats = nkvh * kv.block_size * hd;

  if (c.position == PositionKind::Learned) {
    for (int64_t t = 0; t < T; ++t)
      KILN_CHECK(positions[t] < c.max_position_embeddings, "forward: position {} exceeds the model's {} learned positions",
                 positions[t], c.max_position_embeddings);
  }
  cpu::embedding(embed_, V, H, b.tokens.data(), T, x);  // validates ids before the cache changes
  if (c.embed_scale != 1.0) cpu::scale_inplace(x, T * H, static_cast<float>(c.embed_scale));
  if (pos_embed_ != nullptr) cpu::add_position_embedding(pos_embed_, c.max_position_embeddings, H, positions, T, x);
  if (embed_norm_ != nullptr) cpu::layer_norm(x, embed_norm_, embed_norm_b_, x, T, H, eps);
  const bool rotary = c.position == PositionKind::Rope;
  if (rotary) cpu::rope_tables(inv_freq_, positions, T, ws.cos.data(), ws.sin.data());

  // The MLP of one layer: `in` [T, H] to `out` [T, H] (they may alias).
  auto mlp = [&](const Layer& L, const float* in, float* out) {
    float* a = ws.mlp_act.data();
    if (c.gated_mlp) {
      float* gu = ws.mlp_in.data();
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
      cpu::rope(qkv, T, nh, hd, c.rope.rotary_dim, c.rope.interleaved, ws.cos.data(), ws.sin.data(), ld_qkv);
      cpu::rope(qkv + nq, T, nkvh, hd, c.rope.rotary_dim, c.rope.interleaved, ws.cos.data(), ws.sin.data(), ld_qkv);
    }
    float* kc = kv.base + 2 * l * layer_floats;
    float* vc = kc + layer_floats;
    cpu::paged_kv_write(qkv + nq, qkv + nq + nkv, ld_qkv, T, b.slots.data(), nkvh, hd, kc, vc, kv.block_stride,
                        kv.block_size, kv_fp8_);
    cpu::paged_attention(qkv, ld_qkv, ws.seqs, nh, hd, {kc, vc, kv.block_stride, kv.block_size}, nkvh,
                         c.window_for_layer(l), scale, att, nq, slopes, softcap);
    if (c.parallel_residual) {
      // Attention and MLP both read this layer's input x; the MLP reads the attention's norm (still in h)
      // when the layout shares it.
      float* m = ws.mlp_out.data();
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

  const int64_t rows = static_cast<int64_t>(b.logit_rows.size());
  for (int64_t i = 0; i < rows; ++i) std::copy_n(x + b.logit_rows[i] * H, H, h + i * H);
  norm(h, final_norm_, final_norm_b_, h, rows);
  logits.resize(static_cast<size_t>(rows * V));
  cpu::matmul(h, rows, H, lm_head_, V, lm_head_b_, logits.data());
  if (c.final_logit_softcap > 0) cpu::softcap(logits.data(), rows * V, static_cast<float>(c.final_logit_softcap));
}

}  // namespace kiln
