// CpuDecoderModel: weights in host memory (f32, or as stored/quantized), paged f32 KV blocks, and the recipe's
// operations on the CPU kernels. Every op computes a row with the same arithmetic whatever else is in the batch.
#include "model/cpu/cpu_decoder_model.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <deque>

#include "kernels/cpu/linear.h"
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

// Paged KV blocks ([block][layer][k|v][kv_head][block_size][head_dim] floats), reserved, not zeroed: pages are
// committed as blocks are first written.
class CpuKvPool final : public KvPool {
 public:
  CpuKvPool(const void* owner, int64_t num_blocks, int32_t block_size, int64_t block_floats)
      : owner_(owner), block_floats_(block_floats) {
    num_blocks_ = num_blocks;
    block_size_ = block_size;
    const size_t bytes = (static_cast<size_t>(num_blocks * block_floats) * sizeof(float) + 63) / 64 * 64;
    bytes_ = static_cast<int64_t>(bytes);
    data_.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
    KILN_CHECK(data_ != nullptr, "KV cache: out of host memory allocating {} bytes for {} blocks", bytes, num_blocks);
  }
  const void* owner() const { return owner_; }
  float* base() { return data_.get(); }
  int64_t block_floats() const { return block_floats_; }

 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  const void* owner_;
  int64_t block_floats_;
  std::unique_ptr<float, Free> data_;
};

// The scratch of one pass; buffers grow to the rows a pass needs (never past max_tokens).
class CpuWorkspace final : public Workspace {
 public:
  CpuWorkspace(const void* owner, int64_t max_tokens, int64_t bytes) : owner_(owner) {
    max_tokens_ = max_tokens;
    bytes_ = bytes;
  }
  const void* owner() const { return owner_; }
  std::vector<float> x, h, qkv, att, mlp_in, act, y, tmp, cos, sin;
  std::vector<cpu::PagedSeq> seqs;

 private:
  const void* owner_;
};

// Host storage of the weights: addresses stay put as more is added.
class CpuPlacer final : public WeightPlacer {
 public:
  LinearFormat keep_format(DType) const override {
    // Dense weights in f32. GGUF's block types are dequantized too for now: cpu::linear computes them (the
    // emulation of the GPU kernels), but dequantizing a whole matrix per call is slower than f32 weights.
    return LinearFormat{};
  }
  bool computes(const LinearFormat&) const override { return true; }
  Linear place_linear(HostLinear&& w, const std::string&, LinearRole) override {
    linears_.push_back(std::move(w));
    bytes_ += linears_.back().bytes() + static_cast<int64_t>(linears_.back().bias.size() * sizeof(float));
    return linears_.back().view();
  }
  const float* place_vector(std::vector<float>&& v, VectorKind) override {
    vectors_.push_back(std::move(v));
    bytes_ += static_cast<int64_t>(vectors_.back().size() * sizeof(float));
    return vectors_.back().data();
  }
  const void* place_head_norm(std::vector<float>&& v) override { return place_vector(std::move(v), VectorKind::Norm); }
  const void* place_table(const StoredTensor& t) override { return place_vector(t.to_f32(), VectorKind::Norm); }
  int64_t bytes() const { return bytes_; }

 private:
  std::deque<HostLinear> linears_;
  std::deque<std::vector<float>> vectors_;
  int64_t bytes_ = 0;
};

}  // namespace

struct CpuDecoderModel::Impl {
  CpuPlacer storage;
  int64_t fault_after_steps = 0;       // LoadOptions::fault_after_steps
  mutable std::atomic<int64_t> steps{0};
  std::vector<double> inv_freq;
  std::vector<float> alibi_slopes;  // per head, when position == Alibi
  bool kv_fp8 = false;
};

namespace {

// The recipe's operations over one pass: the batch, where its K/V live, and the workspace.
class CpuOps final : public ForwardOps {
 public:
  CpuOps(const ModelConfig& c, const CpuDecoderModel::Impl& m, const ForwardBatch& b, CpuKvPool& pool,
         CpuWorkspace& ws)
      : c_(c), m_(m), b_(b), pool_(pool), ws_(ws), T_(static_cast<int64_t>(b.tokens.size())) {
    const int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
    nq_ = c.num_heads * hd;
    nkv_ = c.num_kv_heads * hd;
    ld_qkv_ = nq_ + 2 * nkv_;
    auto grow = [&](std::vector<float>& v, int64_t n) {
      if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
    };
    grow(ws.x, T_ * H);
    grow(ws.h, T_ * H);
    grow(ws.qkv, T_ * ld_qkv_);
    grow(ws.att, T_ * nq_);
    grow(ws.mlp_in, T_ * (c.gated_mlp ? 2 * I : I));
    grow(ws.act, T_ * I);
    grow(ws.tmp, T_ * H);
    if (c.norm_layout == NormLayout::PrePost) grow(ws.y, T_ * H);
    ws.seqs.clear();
    for (const BatchSeq& s : b.seqs) ws.seqs.push_back({s.query_start, s.query_len, s.context_len, s.block_table.data()});
    layer_floats_ = c.num_kv_heads * pool.block_size() * hd;
  }

  float* buf(Buf b, int64_t* ld) {
    const int64_t H = c_.hidden_size, I = c_.intermediate_size;
    switch (b) {
      case Buf::X: *ld = H; return ws_.x.data();
      case Buf::H: *ld = H; return ws_.h.data();
      case Buf::QKV: *ld = ld_qkv_; return ws_.qkv.data();
      case Buf::Att: *ld = nq_; return ws_.att.data();
      case Buf::MlpIn: *ld = c_.gated_mlp ? 2 * I : I; return ws_.mlp_in.data();
      case Buf::Act: *ld = I; return ws_.act.data();
      case Buf::Y: *ld = H; return ws_.y.data();
    }
    KILN_ASSERT(false);
  }

  void embed(const Linear& table, float scale, const void* positions) override {
    const int64_t H = c_.hidden_size;
    float* x = ws_.x.data();
    for (int64_t t = 0; t < T_; ++t) dequantize_row(table, b_.tokens[t], x + t * H);
    if (scale != 1.0f) cpu::scale_inplace(x, T_ * H, scale);
    if (positions != nullptr)
      cpu::add_position_embedding(static_cast<const float*>(positions), c_.max_position_embeddings, H,
                                  b_.positions.data(), T_, x);
    if (c_.position == PositionKind::Rope) {
      const int64_t half = c_.rope.rotary_dim / 2;
      ws_.cos.resize(static_cast<size_t>(T_ * half));
      ws_.sin.resize(static_cast<size_t>(T_ * half));
      cpu::rope_tables(m_.inv_freq, b_.positions.data(), T_, ws_.cos.data(), ws_.sin.data());
    }
  }

  void norm_rows(const NormWeights& n, const float* in, float* out, int64_t rows) const {
    const float eps = static_cast<float>(c_.norm_eps);
    if (c_.norm == NormKind::LayerNorm)
      cpu::layer_norm(in, n.w, n.b, out, rows, c_.hidden_size, eps);
    else
      cpu::rms_norm(in, n.w, out, rows, c_.hidden_size, eps, c_.norm_add_one);
  }

  void norm(const NormWeights& n, Buf in, Buf out, bool accumulate) override {
    int64_t ld = 0;
    const float* src = buf(in, &ld);
    float* dst = buf(out, &ld);
    if (!accumulate) {
      norm_rows(n, src, dst, T_);
      return;
    }
    norm_rows(n, src, ws_.tmp.data(), T_);
    cpu::add_inplace(dst, ws_.tmp.data(), T_ * c_.hidden_size);
  }

  void linear(const Linear& w, Buf in, Buf out, bool accumulate) override {
    int64_t ldi = 0, ldo = 0;
    const float* x = buf(in, &ldi);
    float* y = buf(out, &ldo);
    if (!accumulate) {
      cpu::linear(w, x, T_, y, ldi, ldo);
      return;
    }
    cpu::linear(w, x, T_, ws_.tmp.data(), ldi, w.out);
    cpu::add_inplace(y, ws_.tmp.data(), T_ * w.out);
  }

  void clamp(Buf b, float limit) override {
    int64_t ld = 0;
    float* p = buf(b, &ld);
    cpu::clamp(p, T_ * ld, -limit, limit);
  }

  void rope_kv_write(const LayerWeights& L, int64_t layer, bool rotary) override {
    const int64_t hd = c_.head_dim, nh = c_.num_heads, nkvh = c_.num_kv_heads;
    float* qkv = ws_.qkv.data();
    if (L.q_norm != nullptr) {
      const float eps = static_cast<float>(c_.norm_eps);
      for (int64_t t = 0; t < T_; ++t) {
        float* row = qkv + t * ld_qkv_;
        cpu::rms_norm(row, static_cast<const float*>(L.q_norm), row, nh, hd, eps);
        cpu::rms_norm(row + nq_, static_cast<const float*>(L.k_norm), row + nq_, nkvh, hd, eps);
      }
    }
    if (rotary) {
      cpu::rope(qkv, T_, nh, hd, c_.rope.rotary_dim, c_.rope.interleaved, ws_.cos.data(), ws_.sin.data(), ld_qkv_);
      cpu::rope(qkv + nq_, T_, nkvh, hd, c_.rope.rotary_dim, c_.rope.interleaved, ws_.cos.data(), ws_.sin.data(),
                ld_qkv_);
    }
    float* kc = k_cache(layer);
    cpu::paged_kv_write(qkv + nq_, qkv + nq_ + nkv_, ld_qkv_, T_, b_.slots.data(), nkvh, hd, kc, kc + layer_floats_,
                        pool_.block_floats(), pool_.block_size(), m_.kv_fp8);
  }

  void attention(const AttentionParams& p) override {
    float* kc = k_cache(p.layer);
    cpu::paged_attention(ws_.qkv.data(), ld_qkv_, ws_.seqs, c_.num_heads, c_.head_dim,
                         {kc, kc + layer_floats_, pool_.block_floats(), pool_.block_size()}, c_.num_kv_heads, p.window,
                         p.scale, ws_.att.data(), nq_, p.alibi ? m_.alibi_slopes.data() : nullptr, p.softcap);
  }

  void activation() override {
    const int64_t I = c_.intermediate_size;
    const cpu::Activation act = to_cpu(c_.act);
    if (c_.gated_mlp) {
      cpu::gated_activation(ws_.mlp_in.data(), ws_.mlp_in.data() + I, ws_.act.data(), T_, I, 2 * I, act);
    } else {
      std::copy_n(ws_.mlp_in.data(), T_ * I, ws_.act.data());
      cpu::activation(ws_.act.data(), T_ * I, act);
    }
  }

  // logits [rows, vocab] of the wanted rows: gathered, final norm, lm_head, final soft-cap.
  void logits(const ModelWeights& w, std::vector<float>& out) {
    const int64_t H = c_.hidden_size, V = c_.vocab_size;
    const int64_t rows = static_cast<int64_t>(b_.logit_rows.size());
    float* h = ws_.h.data();
    for (int64_t i = 0; i < rows; ++i) std::copy_n(ws_.x.data() + b_.logit_rows[i] * H, H, h + i * H);
    norm_rows(w.final_norm, h, h, rows);
    out.resize(static_cast<size_t>(rows * V));
    cpu::linear(w.lm_head, h, rows, out.data());
    if (c_.final_logit_softcap > 0) cpu::softcap(out.data(), rows * V, static_cast<float>(c_.final_logit_softcap));
  }

 private:
  float* k_cache(int64_t layer) const { return pool_.base() + 2 * layer * layer_floats_; }

  const ModelConfig& c_;
  const CpuDecoderModel::Impl& m_;
  const ForwardBatch& b_;
  CpuKvPool& pool_;
  CpuWorkspace& ws_;
  const int64_t T_;
  int64_t nq_ = 0, nkv_ = 0, ld_qkv_ = 0, layer_floats_ = 0;
};

}  // namespace

CpuDecoderModel::CpuDecoderModel() : impl_(std::make_unique<Impl>()) {}
CpuDecoderModel::~CpuDecoderModel() = default;

std::unique_ptr<CpuDecoderModel> CpuDecoderModel::create(ModelConfig c, const WeightSource& src,
                                                         const LoadOptions& options) {
  check_decoder_config(c, src.path());
  std::unique_ptr<CpuDecoderModel> m(new CpuDecoderModel());
  m->weights_ = load_decoder_weights(c, src, options, m->impl_->storage, &m->num_parameters_, &m->linears_);
  m->impl_->inv_freq = cpu::rope_inv_freq(c.rope, c.rope.rotary_dim);
  if (c.position == PositionKind::Alibi) m->impl_->alibi_slopes = cpu::alibi_slopes(c.num_heads, c.alibi_bias_max);
  m->impl_->kv_fp8 = options.kv_cache_fp8;
  m->impl_->fault_after_steps = options.fault_after_steps;
  m->cfg_ = std::move(c);
  return m;
}

size_t CpuDecoderModel::weight_bytes() const { return static_cast<size_t>(impl_->storage.bytes()); }

int64_t CpuDecoderModel::kv_block_bytes(int32_t block_size) const {
  KILN_CHECK(block_size > 0, "KV block size must be positive, got {}", block_size);
  return 2 * cfg_.num_layers * cfg_.num_kv_heads * block_size * cfg_.head_dim * static_cast<int64_t>(sizeof(float));
}

std::unique_ptr<KvPool> CpuDecoderModel::new_kv_pool(int64_t num_blocks, int32_t block_size) const {
  KILN_CHECK(num_blocks > 0 && block_size > 0, "KV pool: blocks ({}) and block size ({}) must be positive",
             num_blocks, block_size);
  return std::make_unique<CpuKvPool>(this, num_blocks, block_size,
                                     kv_block_bytes(block_size) / static_cast<int64_t>(sizeof(float)));
}

int64_t CpuDecoderModel::workspace_bytes(int64_t T) const {
  const ModelConfig& c = cfg_;
  const int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  const int64_t nq = c.num_heads * hd, ld_qkv = nq + 2 * c.num_kv_heads * hd;
  const int64_t floats = T * (4 * H + ld_qkv + nq + (c.gated_mlp ? 3 : 2) * I + c.rope.rotary_dim);
  return floats * static_cast<int64_t>(sizeof(float));
}

std::unique_ptr<Workspace> CpuDecoderModel::new_workspace(int64_t max_tokens) const {
  KILN_CHECK(max_tokens > 0, "workspace: max_tokens must be positive, got {}", max_tokens);
  return std::make_unique<CpuWorkspace>(this, max_tokens, workspace_bytes(max_tokens));
}

int32_t CpuDecoderModel::state_block_size(int64_t capacity) const { return static_cast<int32_t>(capacity); }
int64_t CpuDecoderModel::state_chunk_tokens(int64_t capacity) const { return capacity; }

void CpuDecoderModel::forward_batch(KvPool& kv_pool, Workspace& workspace, const ForwardBatch& b,
                                    std::vector<float>& logits) const {
  auto* pool = dynamic_cast<CpuKvPool*>(&kv_pool);
  KILN_CHECK(pool != nullptr && pool->owner() == this, "forward_batch: the KV pool was not made by this model");
  auto* ws = dynamic_cast<CpuWorkspace*>(&workspace);
  KILN_CHECK(ws != nullptr && ws->owner() == this, "forward_batch: the workspace was not made by this model");
  check_batch(b, cfg_, pool->num_blocks(), pool->block_size(), ws->max_tokens());
  // A simulated device fault (LoadOptions::fault_after_steps), sticky as a real one is.
  if (impl_->fault_after_steps > 0 && ++impl_->steps > impl_->fault_after_steps)
    throw DeviceFault(fmt::format("simulated device fault after {} forward passes (LoadOptions::fault_after_steps)",
                                  impl_->fault_after_steps));
  CpuOps ops(cfg_, *impl_, b, *pool, *ws);
  recipe_.forward(ops, weights_);
  ops.logits(weights_, logits);
}

}  // namespace kiln
