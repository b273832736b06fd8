// CudaDecoderModel: weights uploaded once as bf16 (fused q|k|v and gate|up), a workspace sized at start,
// and the Llama-family forward on the CUDA ops (cuBLASLt GEMMs, fused RoPE + paged KV write, paged attention).
#include "model/cuda_decoder_model.h"

#ifdef KILN_HAVE_CUDA

#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

#include "core/thread_pool.h"
#include "kernels/cpu/ops.h"
#include "kernels/cuda/cuda_ops.h"
#include "kiln/dtype.h"
#include "kiln/error.h"

namespace kiln {
namespace {

#define KILN_MODEL_CUDA(expr)                                                                                \
  do {                                                                                                       \
    cudaError_t e_ = (expr);                                                                                 \
    if (e_ != cudaSuccess) KILN_THROW("CUDA error {} at {}:{}", cudaGetErrorString(e_), __FILE__, __LINE__); \
  } while (0)

// A device allocation freed on destruction.
struct DeviceMem {
  void* p = nullptr;
  size_t bytes = 0;
  DeviceMem() = default;
  explicit DeviceMem(size_t n) : bytes(n) {
    if (n) {
      const cudaError_t e = cudaMalloc(&p, n);
      if (e != cudaSuccess) {
        cudaGetLastError();
        KILN_THROW("CUDA: out of device memory allocating {} MiB ({})", n >> 20, cudaGetErrorString(e));
      }
    }
  }
  DeviceMem(DeviceMem&& o) noexcept : p(o.p), bytes(o.bytes) { o.p = nullptr, o.bytes = 0; }
  DeviceMem& operator=(DeviceMem&& o) noexcept {
    std::swap(p, o.p);
    std::swap(bytes, o.bytes);
    return *this;
  }
  ~DeviceMem() {
    if (p) cudaFree(p);
  }
  template <typename T>
  T* as() const {
    return static_cast<T*>(p);
  }
};

cuda::Act to_cuda(ActKind a) {
  switch (a) {
    case ActKind::SiLU:
      return cuda::Act::SiLU;
    case ActKind::GeluTanh:
      return cuda::Act::GeluTanh;
    case ActKind::GeluErf:
      return cuda::Act::GeluErf;
  }
  return cuda::Act::SiLU;
}

// One sequence's KV cache: per layer K and V [blocks, kv_heads, block_size, head_dim], blocks in order.
class CudaKvState final : public KvState {
 public:
  CudaKvState(const void* owner, int64_t capacity, int32_t block_size, int64_t layers, int64_t kv_heads,
              int64_t head_dim)
      : owner_(owner), block_size_(block_size) {
    capacity_ = capacity;
    blocks_ = (capacity + block_size - 1) / block_size;
    layer_elems_ = static_cast<size_t>(blocks_ * kv_heads * block_size * head_dim);
    kv_ = DeviceMem(layer_elems_ * 2 * static_cast<size_t>(layers) * sizeof(uint16_t));
    std::vector<int32_t> table(static_cast<size_t>(blocks_));
    for (int64_t i = 0; i < blocks_; ++i) table[i] = static_cast<int32_t>(i);
    table_ = DeviceMem(table.size() * sizeof(int32_t));
    KILN_MODEL_CUDA(cudaMemcpy(table_.p, table.data(), table.size() * sizeof(int32_t), cudaMemcpyHostToDevice));
  }
  const void* owner() const { return owner_; }
  void* k(int64_t layer) const { return kv_.as<uint16_t>() + 2 * layer * layer_elems_; }
  void* v(int64_t layer) const { return kv_.as<uint16_t>() + (2 * layer + 1) * layer_elems_; }
  const int32_t* table() const { return table_.as<int32_t>(); }
  int64_t blocks() const { return blocks_; }
  int32_t block_size() const { return block_size_; }
  void set_length(int64_t n) { length_ = n; }

 private:
  const void* owner_;
  int32_t block_size_;
  int64_t blocks_ = 0;
  size_t layer_elems_ = 0;
  DeviceMem kv_, table_;
};

}  // namespace

struct CudaDecoderModel::Impl {
  struct Layer {
    const uint16_t *attn_norm = nullptr, *wqkv = nullptr, *bqkv = nullptr, *q_norm = nullptr, *k_norm = nullptr,
                   *wo = nullptr, *bo = nullptr, *mlp_norm = nullptr, *w_in = nullptr, *b_in = nullptr,
                   *w_down = nullptr, *b_down = nullptr;
  };
  ModelConfig cfg;
  CudaModelOptions opt;
  int64_t num_parameters = 0;
  DeviceMem weights;
  const uint16_t *embed = nullptr, *final_norm = nullptr, *lm_head = nullptr;
  std::vector<Layer> layers;
  DeviceMem inv_freq;  // double [rotary_dim / 2]
  cudaStream_t stream = nullptr;
  int num_sms = 0;
  // Workspace, sized at creation (forward runs from one thread at a time).
  DeviceMem gemm_ws, x, h, qkv, att, gate_up, act, logits, decode_ws, meta;
  std::unique_ptr<cuda::Gemm> gemm;
  std::vector<int32_t> host_meta;

  ~Impl() {
    gemm.reset();
    if (stream) cudaStreamDestroy(stream);
  }
};

CudaDecoderModel::CudaDecoderModel() : impl_(std::make_unique<Impl>()) {}
CudaDecoderModel::~CudaDecoderModel() = default;
const ModelConfig& CudaDecoderModel::config() const {
  return impl_->cfg;
}
int64_t CudaDecoderModel::num_parameters() const {
  return impl_->num_parameters;
}
size_t CudaDecoderModel::weight_bytes() const {
  return impl_->weights.bytes;
}

std::unique_ptr<CudaDecoderModel> CudaDecoderModel::create(ModelConfig c, const WeightSource& src,
                                                           const LoadOptions& options, const CudaModelOptions& co) {
  const auto t_start = std::chrono::steady_clock::now();
  const std::string& path = src.path();
  KILN_CHECK(cuda::device_count() > 0, "{}: no CUDA device for the CUDA backend", path);
  // The traits this backend runs today (the Llama family); anything else is refused by name.
  auto need = [&](bool ok, const char* what) {
    KILN_CHECK(ok, "{}: the CUDA backend does not support {} yet (family '{}')", path, what, c.family);
  };
  need(c.norm == NormKind::RMSNorm, "LayerNorm models");
  need(c.position == PositionKind::Rope, "learned or ALiBi positions");
  need(c.norm_layout == NormLayout::Pre, "shared or pre+post norm layouts");
  need(!c.parallel_residual, "parallel residuals");
  need(c.gated_mlp, "non-gated MLPs");
  need(!c.embed_norm && c.embed_scale == 1.0, "embedding norms or scales");
  need(c.final_logit_softcap == 0 && c.clip_qkv == 0 && !c.lm_head_bias,
       "final logit soft-capping, clip_qkv or an lm_head bias");
  need(c.head_dim == 64 || c.head_dim == 80 || c.head_dim == 96 || c.head_dim == 128 || c.head_dim == 256,
       "this head_dim (64, 80, 96, 128, 256 are built)");
  KILN_CHECK(c.vocab_size > 0 && c.hidden_size > 0 && c.intermediate_size > 0 && c.num_layers > 0 && c.num_heads > 0 &&
                 c.num_kv_heads > 0 && c.num_heads % c.num_kv_heads == 0,
             "{}: bad model sizes", path);
  if (c.rope.rotary_dim == 0) c.rope.rotary_dim = c.head_dim;
  KILN_CHECK(co.max_num_tokens > 0 && co.max_logit_rows > 0 && co.block_size > 0, "CUDA model: bad options");

  std::unique_ptr<CudaDecoderModel> m(new CudaDecoderModel());
  Impl& I = *m->impl_;
  I.opt = co;
  KILN_MODEL_CUDA(cudaSetDevice(co.device));
  const int64_t H = c.hidden_size, In = c.intermediate_size, hd = c.head_dim;
  const int64_t nq = c.num_heads * hd, nkv = c.num_kv_heads * hd, ld_qkv = nq + 2 * nkv;

  // Plan the bf16 arena: (role, layer, shape, offset in elements); fused tensors back to back.
  struct Slot {
    WeightRole role;
    int64_t layer;
    Shape shape;
    size_t offset;
  };
  std::vector<Slot> slots;
  size_t total = 0;
  auto plan = [&](WeightRole role, int64_t layer, Shape shape, bool align = true) {
    if (align) total = (total + 127) / 128 * 128;  // 256-byte aligned starts for cuBLASLt
    slots.push_back({role, layer, shape, total});
    total += static_cast<size_t>(shape_numel(shape));
    return slots.size() - 1;
  };
  const size_t s_embed = plan(WeightRole::Embed, 0, {c.vocab_size, H});
  const size_t s_fnorm = plan(WeightRole::FinalNorm, 0, {H});
  const bool tied = c.tie_word_embeddings || !src.has(WeightRole::LmHead, 0);
  const size_t s_lm = tied ? SIZE_MAX : plan(WeightRole::LmHead, 0, {c.vocab_size, H});
  struct LayerSlots {
    size_t attn_norm, q, bq = SIZE_MAX, q_norm = SIZE_MAX, k_norm = SIZE_MAX, o, bo = SIZE_MAX, mlp_norm, w_in,
                         b_in = SIZE_MAX, down, b_down = SIZE_MAX;
  };
  std::vector<LayerSlots> ls(static_cast<size_t>(c.num_layers));
  for (int64_t l = 0; l < c.num_layers; ++l) {
    LayerSlots& s = ls[l];
    s.attn_norm = plan(WeightRole::AttnNorm, l, {H});
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
    s.mlp_norm = plan(WeightRole::MlpNorm, l, {H});
    s.w_in = plan(WeightRole::Gate, l, {In, H});
    plan(WeightRole::Up, l, {In, H}, false);
    if (c.mlp_bias) {
      s.b_in = plan(WeightRole::GateBias, l, {In});
      plan(WeightRole::UpBias, l, {In}, false);
    }
    s.down = plan(WeightRole::Down, l, {H, In});
    if (c.mlp_bias) s.b_down = plan(WeightRole::DownBias, l, {H});
  }
  for (const Slot& s : slots)
    KILN_CHECK(src.has(s.role, s.layer), "{}: missing tensor '{}'", path, src.name(s.role, s.layer));

  // Upload tensor by tensor through one host staging buffer.
  I.weights = DeviceMem(total * sizeof(uint16_t));
  std::vector<float> f32;
  std::vector<uint16_t> b16;
  for (size_t i = 0; i < slots.size(); ++i) {
    const Slot& s = slots[i];
    const size_t n = static_cast<size_t>(shape_numel(s.shape));
    f32.resize(n);
    b16.resize(n);
    src.read(s.role, s.layer, s.shape, f32.data());
    ThreadPool::global().parallel_for(static_cast<int64_t>(n), 1 << 16, [&](int64_t j0, int64_t j1) {
      for (int64_t j = j0; j < j1; ++j) b16[j] = f32_to_bf16(f32[j]);
    });
    KILN_MODEL_CUDA(
        cudaMemcpy(I.weights.as<uint16_t>() + s.offset, b16.data(), n * sizeof(uint16_t), cudaMemcpyHostToDevice));
    I.num_parameters += static_cast<int64_t>(n);
    if (options.progress && (i + 1 == slots.size() || i % 8 == 0))
      std::fprintf(stderr, "\rkiln: uploading %s: %zu/%zu tensors", path.c_str(), i + 1, slots.size());
  }
  auto at = [&](size_t slot) -> const uint16_t* {
    return slot == SIZE_MAX ? nullptr : I.weights.as<uint16_t>() + slots[slot].offset;
  };
  I.embed = at(s_embed);
  I.final_norm = at(s_fnorm);
  I.lm_head = tied ? I.embed : at(s_lm);
  I.layers.resize(static_cast<size_t>(c.num_layers));
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const LayerSlots& s = ls[l];
    Impl::Layer& L = I.layers[l];
    L.attn_norm = at(s.attn_norm);
    L.wqkv = at(s.q);
    L.bqkv = at(s.bq);
    L.q_norm = at(s.q_norm);
    L.k_norm = at(s.k_norm);
    L.wo = at(s.o);
    L.bo = at(s.bo);
    L.mlp_norm = at(s.mlp_norm);
    L.w_in = at(s.w_in);
    L.b_in = at(s.b_in);
    L.w_down = at(s.down);
    L.b_down = at(s.b_down);
  }
  const std::vector<double> inv = cpu::rope_inv_freq(c.rope, c.rope.rotary_dim);
  I.inv_freq = DeviceMem(inv.size() * sizeof(double));
  KILN_MODEL_CUDA(cudaMemcpy(I.inv_freq.p, inv.data(), inv.size() * sizeof(double), cudaMemcpyHostToDevice));
  c.tie_word_embeddings = tied;

  // Workspace for max_num_tokens rows.
  const int64_t T = co.max_num_tokens;
  KILN_MODEL_CUDA(cudaStreamCreateWithFlags(&I.stream, cudaStreamNonBlocking));
  I.num_sms = cuda::num_sms();
  I.gemm_ws = DeviceMem(size_t{32} << 20);
  I.gemm = std::make_unique<cuda::Gemm>(I.gemm_ws.p, I.gemm_ws.bytes);
  I.x = DeviceMem(T * H * 2);
  I.h = DeviceMem(T * H * 2);
  I.qkv = DeviceMem(T * ld_qkv * 2);
  I.att = DeviceMem(T * nq * 2);
  I.gate_up = DeviceMem(T * 2 * In * 2);
  I.act = DeviceMem(T * In * 2);
  I.logits = DeviceMem(static_cast<size_t>(co.max_logit_rows * c.vocab_size) * sizeof(float));
  // Split-K decode never plans more than two CTAs per multiprocessor for one sequence.
  I.decode_ws = DeviceMem(static_cast<size_t>(c.num_heads) * (2 * I.num_sms + 1) * (hd + 1) * sizeof(float));
  I.meta = DeviceMem(static_cast<size_t>(3 * T + 8) * sizeof(int32_t));
  I.host_meta.resize(static_cast<size_t>(3 * T + 8));
  I.cfg = std::move(c);
  if (options.progress) {
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    std::fprintf(stderr, "\rkiln: uploaded %s: %lld parameters, %.1f MiB as bf16 on the GPU, in %.2f s\n", path.c_str(),
                 static_cast<long long>(I.num_parameters), static_cast<double>(I.weights.bytes) / (1 << 20), secs);
  }
  return m;
}

std::unique_ptr<KvState> CudaDecoderModel::new_state(int64_t capacity) const {
  KILN_CHECK(capacity > 0, "KV state capacity must be positive, got {}", capacity);
  const ModelConfig& c = impl_->cfg;
  return std::make_unique<CudaKvState>(this, capacity, impl_->opt.block_size, c.num_layers, c.num_kv_heads, c.head_dim);
}

void CudaDecoderModel::forward(KvState& state, std::span<const int32_t> tokens, std::vector<float>& logits,
                               bool all_logits) const {
  auto* st = dynamic_cast<CudaKvState*>(&state);
  KILN_CHECK(st != nullptr && st->owner() == this, "forward: the KV state was not made by this model's new_state");
  Impl& I = *impl_;
  const ModelConfig& c = I.cfg;
  const int64_t total = static_cast<int64_t>(tokens.size());
  KILN_CHECK(total > 0, "forward: no tokens to run");
  const int64_t pos_start = st->length();
  KILN_CHECK(pos_start + total <= st->capacity(),
             "forward: {} new tokens after {} cached exceed the KV state capacity of {}", total, pos_start,
             st->capacity());
  for (int64_t t = 0; t < total; ++t)
    KILN_CHECK(tokens[t] >= 0 && tokens[t] < c.vocab_size,
               "token id {} at position {} is outside the vocabulary [0, {})", tokens[t], t, c.vocab_size);

  const cuda::ElemType bf = cuda::ElemType::BF16;
  const int64_t H = c.hidden_size, In = c.intermediate_size, hd = c.head_dim, V = c.vocab_size;
  const int64_t nq = c.num_heads * hd, nkv = c.num_kv_heads * hd, ld_qkv = nq + 2 * nkv;
  const float eps = static_cast<float>(c.norm_eps);
  cuda::AttentionShape shape;
  shape.num_heads = static_cast<int32_t>(c.num_heads);
  shape.num_kv_heads = static_cast<int32_t>(c.num_kv_heads);
  shape.head_dim = static_cast<int32_t>(hd);
  shape.scale = c.attn_scale > 0 ? static_cast<float>(c.attn_scale) : 1.0f / std::sqrt(static_cast<float>(hd));
  shape.softcap = static_cast<float>(c.attn_logit_softcap);
  cudaStream_t s = I.stream;
  uint16_t* x = I.x.as<uint16_t>();
  uint16_t* h = I.h.as<uint16_t>();
  uint16_t* qkv = I.qkv.as<uint16_t>();
  uint16_t* att = I.att.as<uint16_t>();
  uint16_t* gu = I.gate_up.as<uint16_t>();
  uint16_t* act = I.act.as<uint16_t>();
  if (all_logits)
    logits.resize(static_cast<size_t>(total * V));
  else
    logits.resize(static_cast<size_t>(V));

  // Chunks of at most max_num_tokens rows: each is a prefill over the cached prefix (chunked prefill).
  for (int64_t done = 0; done < total; done += I.opt.max_num_tokens) {
    const int64_t T = std::min(I.opt.max_num_tokens, total - done);
    const int64_t pos0 = pos_start + done;
    // Metadata: ids, positions, slots (identity block tables: slot == position), cu_q, kv_len.
    int32_t* hm = I.host_meta.data();
    for (int64_t t = 0; t < T; ++t) {
      hm[t] = tokens[done + t];
      hm[T + t] = static_cast<int32_t>(pos0 + t);
    }
    hm[2 * T] = 0;
    hm[2 * T + 1] = static_cast<int32_t>(T);
    hm[2 * T + 2] = static_cast<int32_t>(pos0 + T);
    KILN_MODEL_CUDA(cudaMemcpyAsync(I.meta.p, hm, (2 * T + 3) * sizeof(int32_t), cudaMemcpyHostToDevice, s));
    const int32_t* d_ids = I.meta.as<int32_t>();
    const int32_t* d_pos = d_ids + T;
    const int32_t* d_cu = d_ids + 2 * T;
    const int32_t* d_kvlen = d_cu + 2;

    cuda::PagedKv kv;
    kv.block_tables = st->table();
    kv.max_blocks_per_seq = static_cast<int32_t>(st->blocks());
    kv.block_size = st->block_size();
    kv.kv_lens = d_kvlen;

    cuda::embedding(bf, I.embed, V, H, d_ids, T, x, s);
    for (int64_t l = 0; l < c.num_layers; ++l) {
      const Impl::Layer& L = I.layers[l];
      cuda::rms_norm(bf, x, L.attn_norm, h, T, H, eps, c.norm_add_one, s);
      I.gemm->run(bf, bf, h, T, H, L.wqkv, ld_qkv, L.bqkv, nullptr, qkv, s);
      cuda::RopeKvArgs r;
      r.num_tokens = T;
      r.num_heads = static_cast<int32_t>(c.num_heads);
      r.num_kv_heads = static_cast<int32_t>(c.num_kv_heads);
      r.head_dim = static_cast<int32_t>(hd);
      r.rotary_dim = static_cast<int32_t>(c.rope.rotary_dim);
      r.interleaved = c.rope.interleaved;
      r.ld_qkv = ld_qkv;
      r.positions = d_pos;
      r.inv_freq = I.inv_freq.as<double>();
      r.slot_mapping = d_pos;  // identity block table
      r.k_cache = st->k(l);
      r.v_cache = st->v(l);
      r.block_size = st->block_size();
      r.q_norm = L.q_norm;
      r.k_norm = L.k_norm;
      r.qk_norm_eps = eps;
      cuda::rope_kv_write(bf, qkv, r, s);

      kv.k_cache = st->k(l);
      kv.v_cache = st->v(l);
      shape.window = static_cast<int32_t>(c.window_for_layer(l));
      if (T == 1) {
        const cuda::DecodePlan plan = cuda::plan_decode_attention(shape, 1, static_cast<int32_t>(pos0 + 1), I.num_sms);
        KILN_CHECK(plan.workspace_bytes <= I.decode_ws.bytes, "forward: decode workspace too small");
        cuda::decode_attention(bf, plan, shape, qkv, ld_qkv, kv, att, nq, I.decode_ws.p, s);
      } else {
        const cuda::PrefillPlan plan = cuda::plan_prefill_attention(shape, 1, static_cast<int32_t>(T));
        cuda::prefill_attention(bf, plan, shape, qkv, ld_qkv, d_cu, kv, att, nq, s);
      }
      // x += att · Woᵀ (+ bo), the residual add in the GEMM epilogue.
      I.gemm->run(bf, bf, att, T, nq, L.wo, H, L.bo, x, x, s);
      cuda::rms_norm(bf, x, L.mlp_norm, h, T, H, eps, c.norm_add_one, s);
      I.gemm->run(bf, bf, h, T, H, L.w_in, 2 * In, L.b_in, nullptr, gu, s);
      cuda::gated_activation(bf, gu, gu + In, act, T, In, 2 * In, to_cuda(c.act), s);
      I.gemm->run(bf, bf, act, T, In, L.w_down, H, L.b_down, x, x, s);
    }

    // Logits of the rows wanted (the last of the whole call, or all), max_logit_rows at a time.
    const int64_t first = all_logits ? 0 : (done + T == total ? T - 1 : T);
    for (int64_t r0 = first; r0 < T; r0 += I.opt.max_logit_rows) {
      const int64_t rows = std::min(I.opt.max_logit_rows, T - r0);
      cuda::rms_norm(bf, x + r0 * H, I.final_norm, h, rows, H, eps, c.norm_add_one, s);
      I.gemm->run(bf, cuda::ElemType::F32, h, rows, H, I.lm_head, V, nullptr, nullptr, I.logits.p, s);
      float* dst = logits.data() + (all_logits ? (done + r0) * V : 0);
      KILN_MODEL_CUDA(cudaMemcpyAsync(dst, I.logits.p, rows * V * sizeof(float), cudaMemcpyDeviceToHost, s));
    }
  }
  KILN_MODEL_CUDA(cudaStreamSynchronize(s));
  st->set_length(pos_start + total);
}

}  // namespace kiln

#endif  // KILN_HAVE_CUDA
