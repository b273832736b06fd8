// CudaDecoderModel: weights uploaded once as bf16/f16 (fused q|k|v and gate|up; norm weights and the biases of
// fp32 GEMM outputs as fp32), a workspace sized at start, and the decoder forward of every family DecoderModel
// runs, driven by the same ModelConfig traits, on the CUDA ops (cuBLASLt GEMMs, fused RoPE + paged KV write,
// paged attention with ALiBi / soft-cap / windows). The residual stream stays in fp32.
#include "model/cuda_decoder_model.h"

#ifdef KILN_HAVE_CUDA

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <tuple>

#include "core/random_normal.h"
#include "core/thread_pool.h"
#include "kernels/cpu/ops.h"
#include "kernels/cuda/cuda_ops.h"
#include "kiln/dtype.h"
#include "kiln/error.h"
#include "model/weight_plan.h"

namespace kiln {
namespace {

#define KILN_MODEL_CUDA(expr)                                                                                \
  do {                                                                                                       \
    cudaError_t e_ = (expr);                                                                                 \
    if (e_ != cudaSuccess) KILN_THROW("CUDA error {} at {}:{}", cudaGetErrorString(e_), __FILE__, __LINE__); \
  } while (0)

cuda::ElemType to_elem(DType t) {
  return t == DType::BF16 ? cuda::ElemType::BF16 : t == DType::F16 ? cuda::ElemType::F16 : cuda::ElemType::F32;
}

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

// A page-locked host allocation freed on destruction (the per-step metadata is staged here).
struct PinnedMem {
  void* p = nullptr;
  size_t bytes = 0;
  PinnedMem() = default;
  explicit PinnedMem(size_t n) : bytes(n) {
    if (n) KILN_MODEL_CUDA(cudaMallocHost(&p, n));
  }
  PinnedMem(PinnedMem&& o) noexcept : p(o.p), bytes(o.bytes) { o.p = nullptr, o.bytes = 0; }
  PinnedMem& operator=(PinnedMem&& o) noexcept {
    std::swap(p, o.p);
    std::swap(bytes, o.bytes);
    return *this;
  }
  ~PinnedMem() {
    if (p) cudaFreeHost(p);
  }
  template <typename T>
  T* as() const {
    return static_cast<T*>(p);
  }
};

// Where the K/V of a pass live: block b of layer l holds K at base + b * block_stride + 2 l * per and V at
// + (2 l + 1) * per elements, each [kv_head][block_size][head_dim] (per is that size rounded up to 16 bytes,
// so every layer's K and V start 16-byte aligned). The CPU pool's layout, so both pools have one shape.
// Elements are of the compute type, or one-byte fp8 e4m3 (CudaModelOptions::kv_fp8).
struct KvLayout {
  unsigned char* base = nullptr;
  int64_t elem_bytes = 2;
  int64_t per = 0;
  int64_t block_stride = 0;
  int32_t block_size = 0;
  int64_t num_blocks = 0;
  // Logical block b (the runtime's id) lives at physical block phys[b]; null: b itself. The runtime hands out
  // blocks in order, so a prefill's blocks are neighbours and the concurrent reads of decode attention land
  // 2 num_layers per apart, a regular stride that the DRAM channels serve unevenly: at batch 384 x 1024 tokens,
  // tables in allocation order read at 85% of copy bandwidth, shuffled ones at 94% (docs/kernels.md). The pool
  // therefore places blocks by a fixed random permutation.
  const int32_t* phys = nullptr;
  int64_t physical(int64_t b) const { return phys ? phys[b] : b; }
  void* k(int64_t layer) const { return base + 2 * layer * per * elem_bytes; }
  void* v(int64_t layer) const { return base + (2 * layer + 1) * per * elem_bytes; }
};

// Elements of one layer's K (or V) in a block: whole 16-byte units.
int64_t kv_per_layer(const ModelConfig& c, int32_t block_size, bool fp8) {
  const int64_t unit = fp8 ? 16 : 8;
  return (c.num_kv_heads * block_size * c.head_dim + unit - 1) / unit * unit;
}

// One K/V allocation of num_blocks blocks in KvLayout's layout.
struct KvStorage {
  DeviceMem mem;
  KvLayout layout;
  KvStorage(const ModelConfig& c, int64_t num_blocks, int32_t block_size, bool fp8) {
    layout.elem_bytes = fp8 ? 1 : 2;
    layout.per = kv_per_layer(c, block_size, fp8);
    layout.block_stride = 2 * c.num_layers * layout.per;
    layout.block_size = block_size;
    layout.num_blocks = num_blocks;
    mem = DeviceMem(static_cast<size_t>(num_blocks * layout.block_stride * layout.elem_bytes));
    layout.base = mem.as<unsigned char>();
  }
};

int64_t pow2_at_least(int64_t n) {
  int64_t p = 1;
  while (p < n) p <<= 1;
  return p;
}

// Block-table entries the metadata buffers are first made with (4 MiB each on the device and pinned host).
constexpr int64_t kInitialTableEntries = int64_t{1} << 20;

// A captured CUDA graph of one pure-decode bucket, ready to replay.
struct GraphExec {
  cudaGraphExec_t exec = nullptr;
  int64_t uses = 0;
  GraphExec() = default;
  GraphExec(const GraphExec&) = delete;
  GraphExec& operator=(const GraphExec&) = delete;
  ~GraphExec() {
    if (exec) cudaGraphExecDestroy(exec);
  }
};

// The activation buffers and staging of one forward pass of up to `tokens` rows whose block tables have up to
// `table` entries in all (sequences x the longest table). Made once; a pass allocates nothing (but see
// grow_tables and grow_penalties, which also drop the graphs that point at the old buffers).
struct CudaWorkspace {
  int64_t tokens = 0, table = 0;
  int64_t logit_rows = 0;  // fp32 logit rows `logits` holds
  // x: the fp32 residual stream [T, H]; h: its 16-bit norm [T, H]; mlp_in: the fp32 up (or gate|up) GEMM
  // output; act: the 16-bit activation; y: fp32 [T, H] for a block output before its post-norm (PrePost only).
  DeviceMem x, h, qkv, att, mlp_in, act, y, logits, decode_ws, meta;
  PinnedMem host_meta;
  // Sampling: per-row parameters [tokens] then penalty entries [pen_cap] (device, and staged in pinned memory);
  // results: tokens [tokens] | logprobs [tokens] | top ids [tokens, 20] | top logprobs [tokens, 20].
  int64_t pen_cap = 0;
  DeviceMem samp, samp_out;
  PinnedMem host_samp, host_out;
  // Pure-decode graphs by (batch bucket, table width, top log-probs).
  std::map<std::tuple<int64_t, int64_t, int32_t>, std::unique_ptr<GraphExec>> graphs;
  bool graphs_failed = false;

  cuda::SampleRowParams* samp_params() const { return samp.as<cuda::SampleRowParams>(); }
  cuda::PenaltyToken* samp_pens() const { return reinterpret_cast<cuda::PenaltyToken*>(samp_params() + tokens); }
  cuda::SampleRowParams* host_params() const { return host_samp.as<cuda::SampleRowParams>(); }
  cuda::PenaltyToken* host_pens() const { return reinterpret_cast<cuda::PenaltyToken*>(host_params() + tokens); }
  int32_t* out_tokens() const { return samp_out.as<int32_t>(); }
  float* out_logprobs() const { return reinterpret_cast<float*>(out_tokens() + tokens); }
  int32_t* out_top_ids() const { return reinterpret_cast<int32_t*>(out_logprobs() + tokens); }
  float* out_top_logprobs() const { return reinterpret_cast<float*>(out_top_ids() + tokens * cuda::kMaxTopLogprobs); }
  size_t out_bytes() const { return static_cast<size_t>(tokens) * (2 + 2 * cuda::kMaxTopLogprobs) * 4; }
};

// One sequence's KV cache: blocks 0 .. n-1 in order (its block table is the identity).
class CudaKvState final : public KvState {
 public:
  CudaKvState(const void* owner, const ModelConfig& c, int64_t capacity, int32_t block_size, bool fp8)
      : owner_(owner), kv_(c, (capacity + block_size - 1) / block_size, block_size, fp8) {
    capacity_ = capacity;
    table_.resize(static_cast<size_t>(kv_.layout.num_blocks));
    for (size_t i = 0; i < table_.size(); ++i) table_[i] = static_cast<int32_t>(i);
  }
  const void* owner() const { return owner_; }
  const KvLayout& layout() const { return kv_.layout; }
  std::span<const int32_t> table() const { return table_; }
  void set_length(int64_t n) { length_ = n; }

  std::vector<int64_t> positions, slots, logit_rows;

 private:
  const void* owner_;
  KvStorage kv_;
  std::vector<int32_t> table_;
};

// The runtime's pool: K/V blocks on the device and the workspace of forward_batch.
class CudaKvPool final : public KvPool {
 public:
  CudaKvPool(const void* owner, const ModelConfig& c, int64_t num_blocks, int32_t block_size, int64_t max_batch_tokens,
             bool fp8)
      : owner_(owner), kv_(c, num_blocks, block_size, fp8) {
    perm_.resize(static_cast<size_t>(num_blocks));
    std::iota(perm_.begin(), perm_.end(), 0);
    std::shuffle(perm_.begin(), perm_.end(), std::mt19937_64(0x6b696c6e));
    kv_.layout.phys = perm_.data();
    num_blocks_ = num_blocks;
    block_size_ = block_size;
    max_batch_tokens_ = max_batch_tokens;
  }
  const void* owner() const { return owner_; }
  const KvLayout& layout() const { return kv_.layout; }
  CudaWorkspace ws;

 private:
  const void* owner_;
  KvStorage kv_;
  std::vector<int32_t> perm_;  // kv_.layout.phys
};

// KILN_PROFILE=1 in the environment: CUDA events between the ops of every step (graphs off), the time of each
// op summed per step kind (decode, prefill, mixed) and printed on stderr when the model is destroyed. The
// events cost a few microseconds per op; the figures are for finding where a step's time goes, not for speed.
class OpProfile {
 public:
  OpProfile() {
    const char* e = std::getenv("KILN_PROFILE");
    on = e != nullptr && *e != '\0' && std::string(e) != "0";
  }
  ~OpProfile() {
    if (!on) return;
    print();
    for (cudaEvent_t ev : events_) cudaEventDestroy(ev);
  }
  OpProfile(const OpProfile&) = delete;
  OpProfile& operator=(const OpProfile&) = delete;

  bool on = false;

  // The op `name` starts here (it ends where the next one starts).
  void mark(const char* name, cudaStream_t s) {
    if (used_ == events_.size()) {
      cudaEvent_t ev = nullptr;
      KILN_CHECK(cudaEventCreate(&ev) == cudaSuccess, "KILN_PROFILE: cudaEventCreate failed");
      events_.push_back(ev);
    }
    names_.resize(used_ + 1);
    names_[used_] = name;
    KILN_CHECK(cudaEventRecord(events_[used_], s) == cudaSuccess, "KILN_PROFILE: cudaEventRecord failed");
    ++used_;
  }
  // Closes the step (enqueued on s, waited for here) and adds its ops to the kind's totals.
  void end_step(const char* kind, int64_t tokens, cudaStream_t s) {
    if (used_ == 0) return;
    mark("", s);
    KILN_CHECK(cudaEventSynchronize(events_[used_ - 1]) == cudaSuccess, "KILN_PROFILE: cudaEventSynchronize failed");
    Kind& k = kinds_[kind];
    ++k.steps;
    k.tokens += tokens;
    for (size_t i = 0; i + 1 < used_; ++i) {
      float ms = 0;
      cudaEventElapsedTime(&ms, events_[i], events_[i + 1]);
      k.ops[names_[i]] += ms;
      k.ms += ms;
    }
    used_ = 0;
  }

 private:
  struct Kind {
    int64_t steps = 0, tokens = 0;
    double ms = 0;
    std::map<std::string, double> ops;
  };
  void print() const {
    for (const auto& [kind, k] : kinds_) {
      std::fprintf(stderr, "kiln profile: %s steps: %lld, %lld tokens, %.1f ms on the GPU (%.3f ms per step)\n",
                   kind.c_str(), static_cast<long long>(k.steps), static_cast<long long>(k.tokens), k.ms,
                   k.ms / static_cast<double>(k.steps));
      std::vector<std::pair<double, std::string>> by_time;
      for (const auto& [op, ms] : k.ops) by_time.emplace_back(ms, op);
      std::sort(by_time.rbegin(), by_time.rend());
      for (const auto& [ms, op] : by_time)
        std::fprintf(stderr, "kiln profile:   %-14s %10.1f ms %5.1f%%  %8.3f ms per step\n", op.c_str(), ms,
                     100.0 * ms / k.ms, ms / static_cast<double>(k.steps));
    }
  }
  std::vector<cudaEvent_t> events_;
  std::vector<const char*> names_;
  size_t used_ = 0;
  std::map<std::string, Kind> kinds_;
};

}  // namespace

struct CudaDecoderModel::Impl {
  // 16-bit: matrices, the qkv bias (a 16-bit GEMM output's) and q/k norms (read by rope_kv). fp32: norm
  // weights and biases, and the biases of the fp32 GEMM outputs (o_proj, up / gate|up, down).
  struct Layer {
    const uint16_t *wqkv = nullptr, *bqkv = nullptr, *q_norm = nullptr, *k_norm = nullptr, *wo = nullptr,
                   *w_in = nullptr, *w_down = nullptr;
    const float *attn_norm = nullptr, *attn_norm_b = nullptr, *mlp_norm = nullptr, *mlp_norm_b = nullptr,
                *post_attn = nullptr, *post_attn_b = nullptr, *post_mlp = nullptr, *post_mlp_b = nullptr,
                *bo = nullptr, *b_in = nullptr, *b_down = nullptr;
  };
  // What one pass's layers read: its sizes, the split into decodes and prefills, and the device metadata.
  struct Pass {
    int64_t T = 0, nd = 0, np = 0, mb = 1, max_q = 0, max_kv_decode = 0, row0_p = 0;
    const int32_t *pos = nullptr, *slots = nullptr, *lens = nullptr, *cu = nullptr, *tab = nullptr;
  };
  ModelConfig cfg;
  CudaModelOptions opt;
  DType dtype = DType::BF16;
  cuda::ElemType et = cuda::ElemType::BF16;
  int64_t num_parameters = 0;
  DeviceMem weights, weights_f32;
  const uint16_t *embed = nullptr, *lm_head = nullptr, *pos_embed = nullptr;
  const float *final_norm = nullptr, *final_norm_b = nullptr, *embed_norm = nullptr, *embed_norm_b = nullptr,
              *lm_head_b = nullptr;
  std::vector<Layer> layers;
  DeviceMem inv_freq;      // double [rotary_dim / 2]
  DeviceMem alibi_slopes;  // float [num_heads] (ALiBi models)
  cudaStream_t stream = nullptr;
  int num_sms = 0;
  DeviceMem gemm_ws;
  std::unique_ptr<cuda::Gemm> gemm;
  // forward()'s workspace, made at its first call (forward runs from one thread at a time).
  std::unique_ptr<CudaWorkspace> state_ws;

  ~Impl() {
    gemm.reset();
    if (stream) cudaStreamDestroy(stream);
  }

  // Counters of stats() (atomic: read from other threads).
  mutable std::atomic<int64_t> graph_captures{0}, graph_replays{0}, eager_steps{0};
  // KILN_STEP_LOG set: two events around each sampled step's device work, its time in last_step_gpu_ms.
  struct StepTimer {
    StepTimer() {
      const char* e = std::getenv("KILN_STEP_LOG");
      if (e == nullptr || *e == '\0') return;
      if (cudaEventCreate(&begin) != cudaSuccess || cudaEventCreate(&end) != cudaSuccess) {
        cudaGetLastError();
        return;
      }
      on = true;
    }
    ~StepTimer() {
      if (begin) cudaEventDestroy(begin);
      if (end) cudaEventDestroy(end);
    }
    StepTimer(const StepTimer&) = delete;
    StepTimer& operator=(const StepTimer&) = delete;
    bool on = false;
    cudaEvent_t begin = nullptr, end = nullptr;
  };
  mutable StepTimer step_timer;
  mutable std::atomic<double> last_step_gpu_ms{-1.0};

  // Where a step's batch metadata sits on the device, and the sizes the kernels are planned for.
  struct StepMeta {
    int64_t T = 0, R = 0, ns = 0, nd = 0, np = 0, mb = 1, row0_p = 0, max_q = 0, max_kv_decode = 0;
    const int32_t *d_ids = nullptr, *d_pos = nullptr, *d_slots = nullptr, *d_rows = nullptr, *d_lens = nullptr,
                  *d_cu = nullptr, *d_tab = nullptr;
  };
  // gate|up GEMM output in 16 bits (f16 compute, a gated MLP without an up bias): the activation's input is
  // then f16 (|x| <= 65504, ten mantissa bits, against fp32 otherwise). KILN_MLP_F16=0 keeps fp32.
  bool mlp16 = false;
  bool mlp_in_16bit(const Layer& L) const { return mlp16 && L.b_in == nullptr; }

  mutable OpProfile prof;
  void mark(const char* op) const {
    if (prof.on) prof.mark(op, stream);
  }
  void end_step(const StepMeta& m) const {
    if (!prof.on) return;
    const char* kind = m.np > 0 ? (m.nd == 0 ? "prefill" : "mixed")
                       : m.T <= 64  ? "decode (batch <= 64)"
                       : m.T <= 256 ? "decode (batch 65-256)"
                                    : "decode (batch > 256)";
    prof.end_step(kind, m.T, stream);
  }

  void make_workspace(CudaWorkspace& ws, int64_t tokens, int64_t table) const;
  void tune_gemms(CudaWorkspace& ws) const;
  void grow_tables(CudaWorkspace& ws, int64_t table) const;
  void grow_penalties(CudaWorkspace& ws, int64_t entries) const;
  StepMeta upload_meta(CudaWorkspace& ws, const KvLayout& kv, const ForwardBatch& b, int64_t pad_to,
                       int64_t width) const;
  void forward_layers(CudaWorkspace& ws, const KvLayout& kv, const StepMeta& m) const;
  const uint16_t* final_hidden(CudaWorkspace& ws, const StepMeta& m) const;
  void sample_tail(CudaWorkspace& ws, const StepMeta& m, int32_t top_k) const;
  void run(CudaWorkspace& ws, const KvLayout& kv, const ForwardBatch& b, float* logits) const;
  // The embedding into the fp32 residual (scale, learned positions, embedding norm), one layer, and the final
  // norm of the logit rows into ws.h: device work only, enqueued on `stream` (no host sync or allocation).
  void embed_rows(CudaWorkspace& ws, const int32_t* ids, const Pass& p) const;
  void layer(CudaWorkspace& ws, const KvLayout& kv, const Pass& p, int64_t l) const;
  void final_norm_rows(CudaWorkspace& ws, const int32_t* rows, int64_t R) const;
  void logits_slice(CudaWorkspace& ws, const uint16_t* h, int64_t r0, int64_t rows) const;
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
  return impl_->weights.bytes + impl_->weights_f32.bytes;
}
DType CudaDecoderModel::compute_dtype() const {
  return impl_->dtype;
}

std::unique_ptr<CudaDecoderModel> CudaDecoderModel::create(ModelConfig c, const WeightSource& src,
                                                           const LoadOptions& options, const CudaModelOptions& co) {
  const auto t_start = std::chrono::steady_clock::now();
  const std::string& path = src.path();
  KILN_CHECK(cuda::device_count() > 0, "{}: no CUDA device for the CUDA backend", path);
  // Every DecoderModel trait runs here; what is refused is a one-line reason.
  check_decoder_config(c, path);
  KILN_CHECK(c.head_dim <= 256 && c.head_dim % 2 == 0,
             "{}: the CUDA backend does not support head_dim {} (it must be even and at most 256)", path, c.head_dim);
  KILN_CHECK(co.max_num_tokens > 0 && co.max_logit_rows > 0 && co.block_size > 0, "CUDA model: bad options");
  KILN_CHECK(!co.dtype || *co.dtype == DType::BF16 || *co.dtype == DType::F16,
             "CUDA model: the compute type must be bf16 or f16");

  std::unique_ptr<CudaDecoderModel> m(new CudaDecoderModel());
  Impl& I = *m->impl_;
  I.opt = co;
  KILN_MODEL_CUDA(cudaSetDevice(co.device));

  // Place the planned tensors (model/weight_plan.h, shared with DecoderModel) in two arenas: 16-bit for the
  // matrices (GEMM operands), the qkv bias and q/k norms; fp32 for norm weights and biases and the biases of
  // the fp32 GEMM outputs. 256-byte aligned starts for cuBLASLt; fused tensors back to back.
  auto in_f32 = [](WeightRole r) {
    switch (r) {
      case WeightRole::FinalNorm:
      case WeightRole::FinalNormBias:
      case WeightRole::AttnNorm:
      case WeightRole::AttnNormBias:
      case WeightRole::MlpNorm:
      case WeightRole::MlpNormBias:
      case WeightRole::PostAttnNorm:
      case WeightRole::PostAttnNormBias:
      case WeightRole::PostMlpNorm:
      case WeightRole::PostMlpNormBias:
      case WeightRole::EmbedNorm:
      case WeightRole::EmbedNormBias:
      case WeightRole::OBias:
      case WeightRole::GateBias:
      case WeightRole::UpBias:
      case WeightRole::DownBias:
      case WeightRole::LmHeadBias:
        return true;
      default:
        return false;
    }
  };
  struct Slot {
    WeightRole role;
    int64_t layer;
    Shape shape;
    bool f32;
    size_t offset;  // in elements of its arena
  };
  const WeightPlan wp = plan_weights(c, src);
  std::vector<Slot> slots;
  size_t total = 0, total_f32 = 0;
  for (const PlannedTensor& t : wp.tensors) {
    const bool f32 = in_f32(t.role);
    size_t& end = f32 ? total_f32 : total;
    if (!t.fused) end = (end + (f32 ? 63 : 127)) / (f32 ? 64 : 128) * (f32 ? 64 : 128);
    slots.push_back({t.role, t.layer, t.shape, f32, end});
    end += static_cast<size_t>(shape_numel(t.shape));
  }
  for (const Slot& s : slots)
    KILN_CHECK(src.has(s.role, s.layer), "{}: missing tensor '{}'", path, src.name(s.role, s.layer));

  // The compute type: asked for, or F16 whatever the checkpoint's type (three more mantissa bits than bf16 in
  // every GEMM operand; the residual stream is fp32 and the activation and norm stores saturate, so f16's range
  // matters only for the weights); a weight outside the f16 range sends an automatic choice back to BF16.
  const bool auto_type = !co.dtype.has_value();
  I.dtype = co.dtype.value_or(DType::F16);

  // Upload tensor by tensor through one host staging buffer.
  I.weights = DeviceMem(total * sizeof(uint16_t));
  I.weights_f32 = DeviceMem(total_f32 * sizeof(float));
  std::vector<float> f32;
  std::vector<uint16_t> b16;
  for (size_t i = 0; i < slots.size(); ++i) {
    const Slot& s = slots[i];
    const size_t n = static_cast<size_t>(shape_numel(s.shape));
    if (const std::optional<WeightFormula> f = src.formula(s.role, s.layer)) {
      // Computed in place on the device (random weights): no host values, no copy.
      const double max_abs =
          f->kind == WeightFormula::Constant ? std::fabs(f->value) : f->stddev * kRandomNormalMaxSigmas;
      if (!s.f32 && I.dtype == DType::F16 && max_abs > 65504.0) {
        KILN_CHECK(auto_type, "{}: tensor '{}' has values outside the f16 range; use bf16", path,
                   src.name(s.role, s.layer));
        I.dtype = DType::BF16;
        i = static_cast<size_t>(-1);
        I.num_parameters = 0;
        continue;
      }
      const cuda::ElemType t = s.f32 ? cuda::ElemType::F32 : to_elem(I.dtype);
      void* dst = s.f32 ? static_cast<void*>(I.weights_f32.as<float>() + s.offset)
                        : static_cast<void*>(I.weights.as<uint16_t>() + s.offset);
      if (f->kind == WeightFormula::Constant && s.f32) {
        cuda::fill_f32(static_cast<float*>(dst), static_cast<int64_t>(n), f->value, nullptr);
      } else if (f->kind == WeightFormula::Constant) {
        const uint16_t bits = I.dtype == DType::BF16 ? f32_to_bf16(f->value) : f32_to_f16(f->value);
        std::vector<uint16_t> fill(n, bits);
        KILN_MODEL_CUDA(cudaMemcpy(dst, fill.data(), n * sizeof(uint16_t), cudaMemcpyHostToDevice));
      } else {
        cuda::fill_normal(t, dst, static_cast<int64_t>(n), f->key, f->stddev, to_elem(f->round_to), nullptr);
      }
    } else {
      f32.resize(n);
      src.read(s.role, s.layer, s.shape, f32.data());
      if (s.f32) {
        KILN_MODEL_CUDA(
            cudaMemcpy(I.weights_f32.as<float>() + s.offset, f32.data(), n * sizeof(float), cudaMemcpyHostToDevice));
      } else {
        if (I.dtype == DType::F16) {
          bool fits = true;
          for (size_t j = 0; j < n && fits; ++j) fits = !(std::fabs(f32[j]) > 65504.0f);
          if (!fits) {
            KILN_CHECK(auto_type, "{}: tensor '{}' has values outside the f16 range; use bf16", path,
                       src.name(s.role, s.layer));
            I.dtype = DType::BF16;  // and convert again what was uploaded as f16
            i = static_cast<size_t>(-1);
            I.num_parameters = 0;
            continue;
          }
        }
        b16.resize(n);
        const bool to_bf16 = I.dtype == DType::BF16;
        ThreadPool::global().parallel_for(static_cast<int64_t>(n), 1 << 16, [&](int64_t j0, int64_t j1) {
          for (int64_t j = j0; j < j1; ++j) b16[j] = to_bf16 ? f32_to_bf16(f32[j]) : f32_to_f16(f32[j]);
        });
        KILN_MODEL_CUDA(
            cudaMemcpy(I.weights.as<uint16_t>() + s.offset, b16.data(), n * sizeof(uint16_t), cudaMemcpyHostToDevice));
      }
    }
    I.num_parameters += static_cast<int64_t>(n);
    if (options.progress && (i + 1 == slots.size() || i % 8 == 0))
      std::fprintf(stderr, "\rkiln: uploading %s: %zu/%zu tensors", path.c_str(), i + 1, slots.size());
  }
  KILN_MODEL_CUDA(cudaDeviceSynchronize());  // the fills ran on the legacy stream
  I.et = to_elem(I.dtype);
  {
    const char* e = std::getenv("KILN_MLP_F16");
    I.mlp16 = I.dtype == DType::F16 && c.gated_mlp && !(e != nullptr && std::string(e) == "0");
  }
  auto at = [&](size_t slot) -> const uint16_t* {
    if (slot == kNoTensor) return nullptr;
    KILN_CHECK(!slots[slot].f32, "CUDA model: tensor {} is not 16-bit", slot);
    return I.weights.as<uint16_t>() + slots[slot].offset;
  };
  auto at32 = [&](size_t slot) -> const float* {
    if (slot == kNoTensor) return nullptr;
    KILN_CHECK(slots[slot].f32, "CUDA model: tensor {} is not fp32", slot);
    return I.weights_f32.as<float>() + slots[slot].offset;
  };
  I.embed = at(wp.embed);
  I.lm_head = wp.tied ? I.embed : at(wp.lm_head);
  I.pos_embed = at(wp.pos_embed);
  I.final_norm = at32(wp.final_norm);
  I.final_norm_b = at32(wp.final_norm_b);
  I.embed_norm = at32(wp.embed_norm);
  I.embed_norm_b = at32(wp.embed_norm_b);
  I.lm_head_b = at32(wp.lm_head_b);
  I.layers.resize(static_cast<size_t>(c.num_layers));
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const WeightPlan::Layer& s = wp.layers[static_cast<size_t>(l)];
    Impl::Layer& L = I.layers[l];
    L.wqkv = at(s.q);
    L.bqkv = at(s.bq);
    L.q_norm = at(s.q_norm);
    L.k_norm = at(s.k_norm);
    L.wo = at(s.o);
    L.w_in = at(s.w_in);
    L.w_down = at(s.down);
    L.attn_norm = at32(s.attn_norm);
    L.attn_norm_b = at32(s.attn_norm_b);
    L.mlp_norm = at32(s.mlp_norm);
    L.mlp_norm_b = at32(s.mlp_norm_b);
    L.post_attn = at32(s.post_attn);
    L.post_attn_b = at32(s.post_attn_b);
    L.post_mlp = at32(s.post_mlp);
    L.post_mlp_b = at32(s.post_mlp_b);
    L.bo = at32(s.bo);
    L.b_in = at32(s.b_in);
    L.b_down = at32(s.b_down);
  }
  if (c.position == PositionKind::Alibi) {
    const std::vector<float> slopes = cpu::alibi_slopes(c.num_heads, c.alibi_bias_max);
    I.alibi_slopes = DeviceMem(slopes.size() * sizeof(float));
    KILN_MODEL_CUDA(
        cudaMemcpy(I.alibi_slopes.p, slopes.data(), slopes.size() * sizeof(float), cudaMemcpyHostToDevice));
  }
  const std::vector<double> inv = cpu::rope_inv_freq(c.rope, c.rope.rotary_dim);
  I.inv_freq = DeviceMem(inv.size() * sizeof(double));
  KILN_MODEL_CUDA(cudaMemcpy(I.inv_freq.p, inv.data(), inv.size() * sizeof(double), cudaMemcpyHostToDevice));
  c.tie_word_embeddings = wp.tied;

  KILN_MODEL_CUDA(cudaStreamCreateWithFlags(&I.stream, cudaStreamNonBlocking));
  I.num_sms = cuda::num_sms();
  I.gemm_ws = DeviceMem(size_t{32} << 20);
  I.gemm = std::make_unique<cuda::Gemm>(I.gemm_ws.p, I.gemm_ws.bytes);
  I.cfg = std::move(c);
  if (options.progress) {
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    std::fprintf(stderr, "\rkiln: uploaded %s: %lld parameters, %.1f MiB as %s on the GPU, in %.2f s\n", path.c_str(),
                 static_cast<long long>(I.num_parameters), static_cast<double>(I.weights.bytes + I.weights_f32.bytes) / (1 << 20),
                 I.dtype == DType::BF16 ? "bf16" : "f16", secs);
  }
  return m;
}

void CudaDecoderModel::Impl::make_workspace(CudaWorkspace& ws, int64_t T, int64_t table) const {
  const ModelConfig& c = cfg;
  const int64_t H = c.hidden_size, In = c.intermediate_size, hd = c.head_dim;
  const int64_t nq = c.num_heads * hd, ld_qkv = nq + 2 * c.num_kv_heads * hd;
  ws = CudaWorkspace();
  ws.tokens = T;
  ws.x = DeviceMem(T * H * sizeof(float));
  ws.h = DeviceMem(T * H * 2);
  ws.qkv = DeviceMem(T * ld_qkv * 2);
  ws.att = DeviceMem(T * nq * 2);
  ws.mlp_in = DeviceMem(T * (c.gated_mlp ? 2 * In : In) * sizeof(float));
  ws.act = DeviceMem(T * In * 2);
  if (c.norm_layout == NormLayout::PrePost) ws.y = DeviceMem(T * H * sizeof(float));
  ws.logit_rows = std::min(opt.max_logit_rows, T);
  ws.logits = DeviceMem(static_cast<size_t>(ws.logit_rows * c.vocab_size) * sizeof(float));
  ws.samp_out = DeviceMem(ws.out_bytes());
  ws.host_out = PinnedMem(ws.out_bytes());
  grow_penalties(ws, 4096);
  // Split-K decode: small batches split up to about a wave of CTAs (4 SMs + 2 (sequence, split) pairs cover
  // it), large ones into the few splits that round their waves up (2 per sequence at batch 320); a plan that
  // would need more than this workspace runs unsplit.
  const int64_t pairs = 4 * num_sms + 2 + 2 * std::min<int64_t>(T, 1024);
  ws.decode_ws = DeviceMem(static_cast<size_t>(c.num_heads) * static_cast<size_t>(pairs) * (hd + 1) * sizeof(float));
  grow_tables(ws, std::min<int64_t>(table, kInitialTableEntries));
  tune_gemms(ws);
}

// With GEMM tuning on (cuda::Gemm; KILN_GEMM_TUNE=0 turns it off), tunes the layer and lm_head GEMMs now, for
// every row-count bucket up to the workspace's tokens that the Gemm tunes (from 1024 rows by default: the prefill
// GEMMs), as TensorRT-LLM profiles its GEMMs when it builds an engine: the steps then never pay for it (a bucket is
// tuned once per model). Timing only: the operands are the workspace's (whatever they hold) and layer 0's weights;
// the outputs land in the workspace, which every step writes before it reads.
void CudaDecoderModel::Impl::tune_gemms(CudaWorkspace& ws) const {
  if (!gemm->tuning() || layers.empty()) return;
  const ModelConfig& c = cfg;
  const Layer& L = layers[0];
  const cuda::ElemType f32 = cuda::ElemType::F32;
  const int64_t H = c.hidden_size, In = c.intermediate_size, hd = c.head_dim;
  const int64_t nq = c.num_heads * hd, ld_qkv = nq + 2 * c.num_kv_heads * hd, n_in = c.gated_mlp ? 2 * In : In;
  float* x = ws.x.as<float>();
  const uint16_t* h = ws.h.as<uint16_t>();
  for (int64_t T = 1;; T = std::min(2 * T, ws.tokens)) {
    if (T >= gemm->tuning_min_rows()) {
      gemm->run(et, et, h, T, H, L.wqkv, ld_qkv, L.bqkv, nullptr, ws.qkv.p, stream);
      gemm->run(et, f32, ws.att.as<uint16_t>(), T, nq, L.wo, H, L.bo, x, x, stream);
      if (mlp_in_16bit(L))
        gemm->run(et, et, h, T, H, L.w_in, n_in, nullptr, nullptr, ws.mlp_in.p, stream);
      else
        gemm->run(et, f32, h, T, H, L.w_in, n_in, L.b_in, nullptr, ws.mlp_in.p, stream);
      gemm->run(et, f32, ws.act.as<uint16_t>(), T, In, L.w_down, H, L.b_down, x, x, stream);
      if (T <= ws.logit_rows)
        gemm->run(et, f32, h, T, H, lm_head, c.vocab_size, lm_head_b, nullptr, ws.logits.p, stream);
    }
    if (T == ws.tokens) break;
  }
  KILN_MODEL_CUDA(cudaStreamSynchronize(stream));
}

// The metadata buffers (ids, positions, slots, logit rows, kv lengths and cu_q: at most 6 T + 1 ints) with room
// for `table` block-table entries. Made at start; only a batch whose tables outgrow the first sizing (more than
// kInitialTableEntries, e.g. hundreds of sequences at a 128K context) makes them again, once.
void CudaDecoderModel::Impl::grow_tables(CudaWorkspace& ws, int64_t table) const {
  ws.graphs.clear();  // they point at the old buffers
  const int64_t ints = 6 * ws.tokens + 1 + table;
  ws.meta = DeviceMem();
  ws.host_meta = PinnedMem();
  ws.meta = DeviceMem(static_cast<size_t>(ints) * sizeof(int32_t));
  ws.host_meta = PinnedMem(static_cast<size_t>(ints) * sizeof(int32_t));
  ws.table = table;
}

// Room for `entries` penalty entries after the per-row sampling parameters (doubling, so growth is rare).
void CudaDecoderModel::Impl::grow_penalties(CudaWorkspace& ws, int64_t entries) const {
  if (entries <= ws.pen_cap && ws.samp.p) return;
  ws.graphs.clear();
  const int64_t cap = std::max<int64_t>(entries, 2 * ws.pen_cap);
  const size_t bytes = static_cast<size_t>(ws.tokens) * sizeof(cuda::SampleRowParams) +
                       static_cast<size_t>(cap) * sizeof(cuda::PenaltyToken);
  ws.samp = DeviceMem();
  ws.host_samp = PinnedMem();
  ws.samp = DeviceMem(bytes);
  ws.host_samp = PinnedMem(bytes);
  ws.pen_cap = cap;
}

std::unique_ptr<KvState> CudaDecoderModel::new_state(int64_t capacity) const {
  KILN_CHECK(capacity > 0, "KV state capacity must be positive, got {}", capacity);
  KILN_MODEL_CUDA(cudaSetDevice(impl_->opt.device));
  return std::make_unique<CudaKvState>(this, impl_->cfg, capacity, impl_->opt.block_size, impl_->opt.kv_fp8);
}

void CudaDecoderModel::forward(KvState& state, std::span<const int32_t> tokens, std::vector<float>& logits,
                               bool all_logits) const {
  auto* st = dynamic_cast<CudaKvState*>(&state);
  KILN_CHECK(st != nullptr && st->owner() == this, "forward: the KV state was not made by this model's new_state");
  Impl& I = *impl_;
  const int64_t V = I.cfg.vocab_size;
  const int64_t total = static_cast<int64_t>(tokens.size());
  KILN_CHECK(total > 0, "forward: no tokens to run");
  const int64_t pos_start = st->length();
  KILN_CHECK(pos_start + total <= st->capacity(),
             "forward: {} new tokens after {} cached exceed the KV state capacity of {}", total, pos_start,
             st->capacity());
  KILN_CHECK(I.cfg.position != PositionKind::Learned || pos_start + total <= I.cfg.max_position_embeddings,
             "forward: position {} exceeds the model's {} learned positions", pos_start + total - 1,
             I.cfg.max_position_embeddings);
  for (int64_t t = 0; t < total; ++t)
    KILN_CHECK(tokens[t] >= 0 && tokens[t] < V, "token id {} at position {} is outside the vocabulary [0, {})",
               tokens[t], t, V);
  KILN_MODEL_CUDA(cudaSetDevice(I.opt.device));
  const int64_t blocks = st->layout().num_blocks;
  if (!I.state_ws) {
    I.state_ws = std::make_unique<CudaWorkspace>();
    I.make_workspace(*I.state_ws, I.opt.max_num_tokens, blocks);
  }
  logits.resize(static_cast<size_t>((all_logits ? total : 1) * V));

  // Chunks of at most max_num_tokens rows: each is a prefill over the cached prefix (chunked prefill), one
  // sequence whose block table is the identity (slot == position).
  const int64_t bs = st->layout().block_size;
  for (int64_t done = 0; done < total; done += I.opt.max_num_tokens) {
    const int64_t T = std::min(I.opt.max_num_tokens, total - done);
    const int64_t pos0 = pos_start + done;
    st->positions.resize(static_cast<size_t>(T));
    st->slots.resize(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) st->positions[t] = st->slots[t] = pos0 + t;
    st->logit_rows.clear();
    const bool last = done + T == total;
    for (int64_t t = all_logits ? 0 : (last ? T - 1 : T); t < T; ++t) st->logit_rows.push_back(t);
    const int64_t ctx = pos0 + T;
    const BatchSeq seq{0, T, ctx, st->table().first(static_cast<size_t>((ctx + bs - 1) / bs))};
    const ForwardBatch batch{tokens.subspan(static_cast<size_t>(done), static_cast<size_t>(T)),
                             st->positions,
                             st->slots,
                             {&seq, 1},
                             st->logit_rows};
    I.run(*I.state_ws, st->layout(), batch, logits.data() + (all_logits ? done * V : 0));
  }
  st->set_length(pos_start + total);
}

int64_t CudaDecoderModel::kv_block_bytes(int32_t block_size) const {
  KILN_CHECK(block_size > 0, "KV block size must be positive, got {}", block_size);
  const bool fp8 = impl_->opt.kv_fp8;
  return 2 * impl_->cfg.num_layers * kv_per_layer(impl_->cfg, block_size, fp8) * (fp8 ? 1 : 2);
}

int64_t CudaDecoderModel::kv_memory_available() const {
  KILN_MODEL_CUDA(cudaSetDevice(impl_->opt.device));
  size_t free_bytes = 0, total_bytes = 0;
  KILN_MODEL_CUDA(cudaMemGetInfo(&free_bytes, &total_bytes));
  return static_cast<int64_t>(free_bytes);
}

std::unique_ptr<KvPool> CudaDecoderModel::new_kv_pool(int64_t num_blocks, int32_t block_size,
                                                      int64_t max_batch_tokens) const {
  KILN_CHECK(num_blocks > 0 && block_size > 0 && max_batch_tokens > 0,
             "KV pool: blocks ({}), block size ({}) and batch tokens ({}) must be positive", num_blocks, block_size,
             max_batch_tokens);
  KILN_CHECK(num_blocks * block_size <= INT32_MAX, "KV pool: {} blocks of {} tokens exceed 2^31 slots", num_blocks,
             block_size);
  KILN_MODEL_CUDA(cudaSetDevice(impl_->opt.device));
  auto pool =
      std::make_unique<CudaKvPool>(this, impl_->cfg, num_blocks, block_size, max_batch_tokens, impl_->opt.kv_fp8);
  // Block tables: up to max_batch_tokens sequences x the longest table a sequence can have (the context, and
  // never more than the pool), or kInitialTableEntries if that is less.
  int64_t longest = num_blocks;
  if (impl_->cfg.max_position_embeddings > 0)
    longest = std::min(longest, (impl_->cfg.max_position_embeddings + block_size - 1) / block_size);
  impl_->make_workspace(pool->ws, max_batch_tokens, max_batch_tokens * longest);
  return pool;
}

namespace {
// The pool of a forward_batch call, with the batch checked against it.
CudaKvPool& checked_pool(const void* model, KvPool& kv_pool, const ForwardBatch& b, const ModelConfig& cfg) {
  const int64_t V = cfg.vocab_size;
  auto* pool = dynamic_cast<CudaKvPool*>(&kv_pool);
  KILN_CHECK(pool != nullptr && pool->owner() == model, "forward_batch: the KV pool was not made by this model");
  const int64_t T = static_cast<int64_t>(b.tokens.size());
  const int64_t bs = pool->block_size(), nb = pool->num_blocks();
  KILN_CHECK(T > 0 && b.positions.size() == b.tokens.size() && b.slots.size() == b.tokens.size(),
             "forward_batch: {} tokens, {} positions and {} slots must be equal and non-zero", T, b.positions.size(),
             b.slots.size());
  KILN_CHECK(T <= pool->max_batch_tokens(), "forward_batch: {} rows exceed the pool's {} batch tokens", T,
             pool->max_batch_tokens());
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
                 "forward_batch: row {} has position {} and slot {}, expected {} and {}", row + t, b.positions[row + t],
                 b.slots[row + t], p, s.block_table[p / bs] * bs + p % bs);
      KILN_CHECK(cfg.position != PositionKind::Learned || p < cfg.max_position_embeddings,
                 "forward_batch: position {} exceeds the model's {} learned positions", p,
                 cfg.max_position_embeddings);
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
  return *pool;
}
}  // namespace

void CudaDecoderModel::forward_batch(KvPool& kv_pool, const ForwardBatch& b, std::vector<float>& logits) const {
  const Impl& I = *impl_;
  const int64_t V = I.cfg.vocab_size;
  CudaKvPool& pool = checked_pool(this, kv_pool, b, impl_->cfg);
  KILN_MODEL_CUDA(cudaSetDevice(I.opt.device));
  logits.resize(b.logit_rows.size() * static_cast<size_t>(V));
  I.run(pool.ws, pool.layout(), b, logits.data());
}

void CudaDecoderModel::forward_batch_sample(KvPool& kv_pool, const ForwardBatch& b, std::span<const RowSampling> rows,
                                            BatchSamples& out) const {
  const Impl& I = *impl_;
  CudaKvPool& pool = checked_pool(this, kv_pool, b, impl_->cfg);
  const int64_t R0 = static_cast<int64_t>(b.logit_rows.size());
  KILN_CHECK(static_cast<int64_t>(rows.size()) == R0, "forward_batch_sample: {} sampling rows for {} logit rows",
             rows.size(), R0);
  KILN_MODEL_CUDA(cudaSetDevice(I.opt.device));
  CudaWorkspace& ws = pool.ws;
  const int64_t T0 = static_cast<int64_t>(b.tokens.size());
  const int64_t bs = pool.block_size();

  // A pure-decode step (every sequence one row, every row sampled) replays its bucket's graph.
  const bool decode_only = T0 == static_cast<int64_t>(b.seqs.size()) && R0 == T0;
  const int64_t B = decode_only ? graph_bucket(T0) : 0;
  const bool use_graph = I.opt.cuda_graphs && !I.prof.on && decode_only && B <= ws.tokens;
  int64_t width = 0;
  if (use_graph) {
    int64_t mb = 1;
    for (const BatchSeq& s : b.seqs) mb = std::max(mb, (s.context_len + bs - 1) / bs);
    width = std::max<int64_t>(8, pow2_at_least(mb));
  }
  const int64_t R = use_graph ? B : R0;

  // Sampling parameters and penalty entries, staged in pinned memory and uploaded in two copies.
  int32_t top_k = 0;
  int64_t entries = 0;
  for (const RowSampling& r : rows) {
    KILN_CHECK(r.logprobs >= 0 && r.logprobs <= cuda::kMaxTopLogprobs, "forward_batch_sample: logprobs {} out of range",
               r.logprobs);
    if (r.logprobs > 0) top_k = cuda::kMaxTopLogprobs;  // one value for every step, so a graph serves them all
    if (r.repetition_penalty != 1.0f || r.presence_penalty != 0.0f || r.frequency_penalty != 0.0f)
      entries += static_cast<int64_t>(r.penalties.size());
  }
  I.grow_penalties(ws, entries);
  cuda::SampleRowParams* hp = ws.host_params();
  cuda::PenaltyToken* he = ws.host_pens();
  int64_t e = 0;
  for (int64_t i = 0; i < R; ++i) {
    cuda::SampleRowParams q;
    if (i < R0) {
      const RowSampling& r = rows[i];
      q.temperature = r.temperature;
      q.top_k = r.top_k;
      q.top_p = r.top_p;
      q.min_p = r.min_p;
      q.repetition_penalty = r.repetition_penalty;
      q.presence_penalty = r.presence_penalty;
      q.frequency_penalty = r.frequency_penalty;
      q.seed = r.seed;
      q.step = r.step;
      if (r.repetition_penalty != 1.0f || r.presence_penalty != 0.0f || r.frequency_penalty != 0.0f) {
        q.penalty_begin = static_cast<int32_t>(e);
        q.penalty_count = static_cast<int32_t>(r.penalties.size());
        for (const SamplePenalty& p : r.penalties) he[e++] = {p.token, p.output_count, p.in_prompt, 0.0f};
      }
    }
    hp[i] = q;
  }
  cudaStream_t s = I.stream;
  if (I.step_timer.on) KILN_MODEL_CUDA(cudaEventRecord(I.step_timer.begin, s));
  I.mark("upload");
  KILN_MODEL_CUDA(cudaMemcpyAsync(ws.samp_params(), hp, static_cast<size_t>(R) * sizeof(cuda::SampleRowParams),
                                  cudaMemcpyHostToDevice, s));
  if (e > 0)
    KILN_MODEL_CUDA(cudaMemcpyAsync(ws.samp_pens(), he, static_cast<size_t>(e) * sizeof(cuda::PenaltyToken),
                                    cudaMemcpyHostToDevice, s));

  const Impl::StepMeta m = I.upload_meta(ws, pool.layout(), b, use_graph ? B : 0, width);
  if (use_graph) {
    std::unique_ptr<GraphExec>& g = ws.graphs[{B, width, top_k}];
    if (!g) g = std::make_unique<GraphExec>();
    if (!g->exec && ++g->uses >= 2 && !ws.graphs_failed) {
      // Captured the second time the bucket is used (the first ran eagerly, planning its GEMMs). A capture
      // that fails turns graphs off for this pool (said once on stderr); the step then runs eagerly.
      cudaGraph_t graph = nullptr;
      std::string error;
      KILN_MODEL_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
      try {
        I.forward_layers(ws, pool.layout(), m);
        I.sample_tail(ws, m, top_k);
      } catch (const std::exception& ex) {
        error = ex.what();
      }
      cudaError_t err = cudaStreamEndCapture(s, &graph);
      if (error.empty() && err != cudaSuccess) error = cudaGetErrorString(err);
      if (error.empty()) {
        err = cudaGraphInstantiate(&g->exec, graph, 0);
        if (err != cudaSuccess) error = cudaGetErrorString(err), g->exec = nullptr;
      }
      if (graph) cudaGraphDestroy(graph);
      if (error.empty()) {
        ++I.graph_captures;
      } else {
        cudaGetLastError();
        ws.graphs_failed = true;
        std::fprintf(stderr, "kiln: CUDA graph capture failed (%s); decode steps run without graphs\n", error.c_str());
      }
    }
    if (g->exec) {
      KILN_MODEL_CUDA(cudaGraphLaunch(g->exec, s));
      ++I.graph_replays;
    } else {
      I.forward_layers(ws, pool.layout(), m);
      I.sample_tail(ws, m, top_k);
      ++I.eager_steps;
    }
  } else {
    I.forward_layers(ws, pool.layout(), m);
    I.sample_tail(ws, m, top_k);
    ++I.eager_steps;
  }
  I.end_step(m);

  // Only ids and log-probs come back, into pinned memory.
  const size_t r0 = static_cast<size_t>(R0);
  const int64_t cap = ws.tokens;
  int32_t* h_tok = ws.host_out.as<int32_t>();
  float* h_lp = reinterpret_cast<float*>(h_tok + cap);
  int32_t* h_top = reinterpret_cast<int32_t*>(h_lp + cap);
  float* h_toplp = reinterpret_cast<float*>(h_top + cap * cuda::kMaxTopLogprobs);
  KILN_MODEL_CUDA(cudaMemcpyAsync(h_tok, ws.out_tokens(), r0 * sizeof(int32_t), cudaMemcpyDeviceToHost, s));
  KILN_MODEL_CUDA(cudaMemcpyAsync(h_lp, ws.out_logprobs(), r0 * sizeof(float), cudaMemcpyDeviceToHost, s));
  if (top_k > 0) {
    KILN_MODEL_CUDA(cudaMemcpyAsync(h_top, ws.out_top_ids(), r0 * top_k * sizeof(int32_t), cudaMemcpyDeviceToHost, s));
    KILN_MODEL_CUDA(
        cudaMemcpyAsync(h_toplp, ws.out_top_logprobs(), r0 * top_k * sizeof(float), cudaMemcpyDeviceToHost, s));
  }
  if (I.step_timer.on) KILN_MODEL_CUDA(cudaEventRecord(I.step_timer.end, s));
  KILN_MODEL_CUDA(cudaStreamSynchronize(s));
  if (I.step_timer.on) {
    float ms = -1.0f;
    KILN_MODEL_CUDA(cudaEventElapsedTime(&ms, I.step_timer.begin, I.step_timer.end));
    I.last_step_gpu_ms = ms;
  }
  out.tokens.assign(h_tok, h_tok + r0);
  out.logprobs.assign(h_lp, h_lp + r0);
  out.top_stride = top_k;
  out.top_ids.assign(h_top, h_top + r0 * top_k);
  out.top_logprobs.assign(h_toplp, h_toplp + r0 * top_k);
}

ModelStats CudaDecoderModel::stats() const {
  ModelStats st;
  st.graph_captures = impl_->graph_captures.load();
  st.graph_replays = impl_->graph_replays.load();
  st.eager_steps = impl_->eager_steps.load();
  st.last_step_gpu_ms = impl_->last_step_gpu_ms.load();
  return st;
}

// The batch bucket a pure-decode step of n rows is padded to for its CUDA graph.
int64_t CudaDecoderModel::graph_bucket(int64_t n) {
  for (int64_t b : {1, 2, 4, 8, 16, 24, 32, 48, 64})
    if (n <= b) return b;
  return n <= 256 ? (n + 31) / 32 * 32 : (n + 63) / 64 * 64;
}

// The metadata of a validated batch in one upload: ids, positions, slots [T]; logit rows [R]; kv lengths [ns];
// cu_q [np + 1]; block tables [ns, mb]. The leading sequences with one row each (the scheduler puts decodes
// first) run through split-K decode attention, planned for a context of a power of two blocks (so that a plan
// only changes when the longest context doubles, and a graph's plan stays valid). pad_to > 0 (pure-decode
// batches only) pads the batch with harmless rows to pad_to sequences (id 0, no KV write, one valid block) and
// gives the tables `width` entries, for a CUDA graph whose pointers and sizes are fixed.
CudaDecoderModel::Impl::StepMeta CudaDecoderModel::Impl::upload_meta(CudaWorkspace& ws, const KvLayout& kv_layout,
                                                                     const ForwardBatch& b, int64_t pad_to,
                                                                     int64_t width) const {
  StepMeta m;
  const int64_t T0 = static_cast<int64_t>(b.tokens.size());
  const int64_t ns0 = static_cast<int64_t>(b.seqs.size());
  const int64_t bs = kv_layout.block_size;
  KILN_CHECK(T0 <= ws.tokens && pad_to <= ws.tokens, "forward: {} rows exceed the workspace's {}", std::max(T0, pad_to),
             ws.tokens);
  int64_t nd = 0;
  while (nd < ns0 && b.seqs[nd].query_len == 1 && b.seqs[nd].query_start == nd) ++nd;
  const bool pad = pad_to > 0;
  KILN_ASSERT(!pad || (nd == ns0 && T0 == ns0 && static_cast<int64_t>(b.logit_rows.size()) == T0 && pad_to >= T0));
  const int64_t T = pad ? pad_to : T0, ns = pad ? pad_to : ns0,
                R = pad ? pad_to : static_cast<int64_t>(b.logit_rows.size());
  if (pad) nd = ns;
  const int64_t np = ns - nd;
  int64_t mb = 1, max_q = 0, max_kv_decode = 0;
  for (int64_t i = 0; i < ns0; ++i) {
    const BatchSeq& s = b.seqs[i];
    mb = std::max(mb, (s.context_len + bs - 1) / bs);
    if (i < nd)
      max_kv_decode = std::max(max_kv_decode, s.context_len);
    else
      max_q = std::max(max_q, s.query_len);
  }
  if (pad) mb = std::max(mb, width);
  // (At least 8 blocks, the narrowest graph table, so that a graph's plan covers every context it replays for.)
  if (max_kv_decode > 0) max_kv_decode = std::max<int64_t>(8, pow2_at_least((max_kv_decode + bs - 1) / bs)) * bs;
  if (pad) max_kv_decode = width * bs;
  if (ns * mb > ws.table) grow_tables(ws, ns * mb);

  int32_t* hm = ws.host_meta.as<int32_t>();
  int32_t* h_ids = hm;
  int32_t* h_pos = h_ids + T;
  int32_t* h_slots = h_pos + T;
  int32_t* h_rows = h_slots + T;
  int32_t* h_lens = h_rows + R;
  int32_t* h_cu = h_lens + ns;
  int32_t* h_tab = h_cu + np + 1;
  for (int64_t t = 0; t < T0; ++t) {
    h_ids[t] = b.tokens[t];
    h_pos[t] = static_cast<int32_t>(b.positions[t]);
    const int64_t slot = b.slots[t];
    h_slots[t] = static_cast<int32_t>(slot < 0 ? slot : kv_layout.physical(slot / bs) * bs + slot % bs);
  }
  for (int64_t t = T0; t < T; ++t) h_ids[t] = 0, h_pos[t] = 0, h_slots[t] = -1;
  if (pad) {
    for (int64_t r = 0; r < R; ++r) h_rows[r] = static_cast<int32_t>(r);
  } else {
    for (int64_t r = 0; r < R; ++r) h_rows[r] = static_cast<int32_t>(b.logit_rows[r]);
  }
  const int64_t row0_p = np > 0 ? b.seqs[nd].query_start : 0;
  h_cu[0] = 0;
  for (int64_t i = 0; i < ns0; ++i) {
    const BatchSeq& s = b.seqs[i];
    h_lens[i] = static_cast<int32_t>(s.context_len);
    if (i >= nd) h_cu[i - nd + 1] = static_cast<int32_t>(s.query_start + s.query_len - row0_p);
    const int64_t n = (s.context_len + bs - 1) / bs;
    int32_t* row = h_tab + i * mb;
    for (int64_t j = 0; j < n; ++j) row[j] = static_cast<int32_t>(kv_layout.physical(s.block_table[j]));
    std::fill(row + n, row + mb, 0);
  }
  for (int64_t i = ns0; i < ns; ++i) {
    h_lens[i] = 1;
    std::fill(h_tab + i * mb, h_tab + (i + 1) * mb, 0);
  }
  const int64_t ints = (h_tab + ns * mb) - hm;
  KILN_MODEL_CUDA(
      cudaMemcpyAsync(ws.meta.p, hm, static_cast<size_t>(ints) * sizeof(int32_t), cudaMemcpyHostToDevice, stream));
  m.T = T, m.R = R, m.ns = ns, m.nd = nd, m.np = np, m.mb = mb, m.row0_p = row0_p, m.max_q = max_q;
  m.max_kv_decode = max_kv_decode;
  m.d_ids = ws.meta.as<int32_t>();
  m.d_pos = m.d_ids + T;
  m.d_slots = m.d_pos + T;
  m.d_rows = m.d_slots + T;
  m.d_lens = m.d_rows + R;
  m.d_cu = m.d_lens + ns;
  m.d_tab = m.d_cu + np + 1;
  return m;
}

// The embedding and the decoder layers of a step whose metadata is on the device: leaves the fp32 residual
// stream in ws.x. Only stream work (no host synchronization, no allocation): CUDA graphs capture it.
void CudaDecoderModel::Impl::forward_layers(CudaWorkspace& ws, const KvLayout& kv_layout, const StepMeta& m) const {
  Pass p;
  p.T = m.T;
  p.nd = m.nd;
  p.np = m.np;
  p.mb = m.mb;
  p.max_q = m.max_q;
  p.max_kv_decode = m.max_kv_decode;
  p.row0_p = m.row0_p;
  p.pos = m.d_pos;
  p.slots = m.d_slots;
  p.lens = m.d_lens;
  p.cu = m.d_cu;
  p.tab = m.d_tab;
  mark("embed");
  embed_rows(ws, m.d_ids, p);
  for (int64_t l = 0; l < cfg.num_layers; ++l) layer(ws, kv_layout, p, l);
}

// The final norm of the wanted rows (gathered): [R, H] 16-bit in ws.h, ready for lm_head.
const uint16_t* CudaDecoderModel::Impl::final_hidden(CudaWorkspace& ws, const StepMeta& m) const {
  mark("final_norm");
  final_norm_rows(ws, m.d_rows, m.R);
  return ws.h.as<uint16_t>();
}

// lm_head (+ bias, final soft-cap) over rows [r0, r0 + rows) of the normed hidden rows into ws.logits.
void CudaDecoderModel::Impl::logits_slice(CudaWorkspace& ws, const uint16_t* h, int64_t r0, int64_t rows) const {
  const int64_t H = cfg.hidden_size, V = cfg.vocab_size;
  mark("lm_head");
  gemm->run(et, cuda::ElemType::F32, h + r0 * H, rows, H, lm_head, V, lm_head_b, nullptr, ws.logits.p, stream);
  if (cfg.final_logit_softcap > 0)
    cuda::softcap(ws.logits.as<float>(), rows * V, static_cast<float>(cfg.final_logit_softcap), stream);
}

// One pass over a validated packed batch, the logits of its wanted rows copied to logits_out.
void CudaDecoderModel::Impl::run(CudaWorkspace& ws, const KvLayout& kv_layout, const ForwardBatch& b,
                                 float* logits_out) const {
  const StepMeta m = upload_meta(ws, kv_layout, b, 0, 0);
  forward_layers(ws, kv_layout, m);
  const int64_t R = m.R, V = cfg.vocab_size;
  cudaStream_t s = stream;
  // Logits of the wanted rows only: gathered and normed, then lm_head in slices of the logits buffer.
  if (R > 0) {
    const uint16_t* h = final_hidden(ws, m);
    const int64_t slice = ws.logit_rows;
    for (int64_t r0 = 0; r0 < R; r0 += slice) {
      const int64_t rows = std::min(slice, R - r0);
      logits_slice(ws, h, r0, rows);
      mark("logits_copy");
      KILN_MODEL_CUDA(cudaMemcpyAsync(logits_out + r0 * V, ws.logits.p, static_cast<size_t>(rows * V) * sizeof(float),
                                      cudaMemcpyDeviceToHost, s));
    }
  }
  end_step(m);
  KILN_MODEL_CUDA(cudaStreamSynchronize(s));
}

// x (fp32) = embed[id] * embed_scale (+ learned position row), then the embedding LayerNorm (BLOOM) in place.
void CudaDecoderModel::Impl::embed_rows(CudaWorkspace& ws, const int32_t* ids, const Pass& p) const {
  const ModelConfig& c = cfg;
  float* x = ws.x.as<float>();
  cuda::embedding_f32(et, embed, c.vocab_size, c.hidden_size, ids, p.T, static_cast<float>(c.embed_scale), pos_embed,
                      c.max_position_embeddings, p.pos, x, stream);
  if (embed_norm != nullptr)
    cuda::norm_f32(cuda::ElemType::F32, true, x, embed_norm, embed_norm_b, x, p.T, c.hidden_size,
                   static_cast<float>(c.norm_eps), false, false, nullptr, stream);
}

// h (16-bit) [R, H] = final_norm(x[rows[r]]).
void CudaDecoderModel::Impl::final_norm_rows(CudaWorkspace& ws, const int32_t* rows, int64_t R) const {
  const ModelConfig& c = cfg;
  cuda::norm_f32(et, c.norm == NormKind::LayerNorm, ws.x.as<float>(), final_norm, final_norm_b, ws.h.p, R,
                 c.hidden_size, static_cast<float>(c.norm_eps), c.norm_add_one, false, rows, stream);
}

// One decoder layer over the pass, as DecoderModel::run's loop body: norm, qkv (+ clip), RoPE and the K/V write,
// attention (decodes split-K, prefills flash), then the sequential or parallel residual with its norms; o_proj
// and down add into the fp32 residual in the GEMM epilogue.
void CudaDecoderModel::Impl::layer(CudaWorkspace& ws, const KvLayout& kv_layout, const Pass& p, int64_t l) const {
  const ModelConfig& c = cfg;
  const Layer& L = layers[l];
  cudaStream_t s = stream;
  const cuda::ElemType et = this->et, f32 = cuda::ElemType::F32;
  const int64_t T = p.T, bs = kv_layout.block_size;
  const int64_t H = c.hidden_size, In = c.intermediate_size, hd = c.head_dim;
  const int64_t nq = c.num_heads * hd, nkv = c.num_kv_heads * hd, ld_qkv = nq + 2 * nkv;
  const float eps = static_cast<float>(c.norm_eps);
  const bool ln = c.norm == NormKind::LayerNorm;
  float* x = ws.x.as<float>();
  uint16_t* h = ws.h.as<uint16_t>();
  uint16_t* qkv = ws.qkv.as<uint16_t>();
  uint16_t* att = ws.att.as<uint16_t>();
  float* y = ws.y.as<float>();
  // out (type ot) = norm(in) with this model's norm; accumulate: out (fp32) += norm(in).
  auto norm = [&](const float* in, const float* w, const float* b, void* out, cuda::ElemType ot, bool accumulate) {
    mark("norm");
    cuda::norm_f32(ot, ln, in, w, b, out, T, H, eps, c.norm_add_one, accumulate, nullptr, s);
  };
  // out (fp32) = residual + mlp(in): up (or gate|up) into fp32 with its bias, the activation into 16-bit, down
  // with its bias (and the residual, which may be out). gate|up without a bias under f16 compute goes into f16
  // instead (mlp_in_16bit): half the bytes written and read between the GEMM and the activation.
  auto mlp = [&](const uint16_t* in, const float* residual, float* out) {
    uint16_t* a = ws.act.as<uint16_t>();
    const int64_t n_in = c.gated_mlp ? 2 * In : In;
    mark("mlp_in_gemm");
    if (mlp_in_16bit(L)) {
      uint16_t* mi = ws.mlp_in.as<uint16_t>();
      gemm->run(et, et, in, T, H, L.w_in, n_in, nullptr, nullptr, mi, s);
      mark("activation");
      cuda::gated_activation(et, mi, mi + In, a, T, In, n_in, to_cuda(c.act), s);
    } else {
      float* mi = ws.mlp_in.as<float>();
      gemm->run(et, f32, in, T, H, L.w_in, n_in, L.b_in, nullptr, mi, s);
      mark("activation");
      cuda::activation_f32(et, mi, n_in, a, T, In, to_cuda(c.act), c.gated_mlp, s);
    }
    mark("down_gemm");
    gemm->run(et, f32, a, T, In, L.w_down, H, L.b_down, residual, out, s);
  };

  norm(x, L.attn_norm, L.attn_norm_b, h, et, false);
  mark("qkv_gemm");
  gemm->run(et, et, h, T, H, L.wqkv, ld_qkv, L.bqkv, nullptr, qkv, s);
  if (c.clip_qkv > 0) {
    mark("clamp");
    cuda::clamp(et, qkv, T * ld_qkv, static_cast<float>(-c.clip_qkv), static_cast<float>(c.clip_qkv), s);
  }
  const bool rotary = c.position == PositionKind::Rope;
  cuda::RopeKvArgs r;
  r.num_tokens = T;
  r.num_heads = static_cast<int32_t>(c.num_heads);
  r.num_kv_heads = static_cast<int32_t>(c.num_kv_heads);
  r.head_dim = static_cast<int32_t>(hd);
  r.rotary_dim = rotary ? static_cast<int32_t>(c.rope.rotary_dim) : 0;  // 0: only the K/V write
  r.interleaved = c.rope.interleaved;
  r.ld_qkv = ld_qkv;
  r.positions = p.pos;
  r.inv_freq = rotary ? inv_freq.as<double>() : nullptr;
  r.slot_mapping = p.slots;
  r.k_cache = kv_layout.k(l);
  r.v_cache = kv_layout.v(l);
  r.block_size = static_cast<int32_t>(bs);
  r.block_stride = kv_layout.block_stride;
  r.q_norm = L.q_norm;
  r.k_norm = L.k_norm;
  r.qk_norm_eps = eps;
  r.kv_fp8 = opt.kv_fp8;
  mark("rope_kv");
  cuda::rope_kv_write(et, qkv, r, s);

  cuda::AttentionShape shape;
  shape.num_heads = static_cast<int32_t>(c.num_heads);
  shape.num_kv_heads = static_cast<int32_t>(c.num_kv_heads);
  shape.head_dim = static_cast<int32_t>(hd);
  shape.scale = c.attn_scale > 0 ? static_cast<float>(c.attn_scale) : 1.0f / std::sqrt(static_cast<float>(hd));
  shape.softcap = static_cast<float>(c.attn_logit_softcap);
  shape.alibi_slopes = alibi_slopes.as<float>();
  shape.window = static_cast<int32_t>(c.window_for_layer(l));
  shape.kv_fp8 = opt.kv_fp8;
  cuda::PagedKv kv;
  kv.k_cache = kv_layout.k(l);
  kv.v_cache = kv_layout.v(l);
  kv.max_blocks_per_seq = static_cast<int32_t>(p.mb);
  kv.block_size = static_cast<int32_t>(bs);
  kv.block_stride = kv_layout.block_stride;
  if (p.nd > 0) {
    cuda::DecodePlan plan = cuda::plan_decode_attention(shape, static_cast<int32_t>(p.nd),
                                                        static_cast<int32_t>(p.max_kv_decode), num_sms);
    if (plan.workspace_bytes > ws.decode_ws.bytes)
      plan = cuda::plan_decode_attention(shape, static_cast<int32_t>(p.nd), static_cast<int32_t>(p.max_kv_decode),
                                         num_sms, 1);
    kv.block_tables = p.tab;
    kv.kv_lens = p.lens;
    mark("attn_decode");
    cuda::decode_attention(et, plan, shape, qkv, ld_qkv, kv, att, nq, ws.decode_ws.p, s);
  }
  if (p.np > 0) {
    const cuda::PrefillPlan plan =
        cuda::plan_prefill_attention(shape, static_cast<int32_t>(p.np), static_cast<int32_t>(p.max_q));
    kv.block_tables = p.tab + p.nd * p.mb;
    kv.kv_lens = p.lens + p.nd;
    mark("attn_prefill");
    cuda::prefill_attention(et, plan, shape, qkv + p.row0_p * ld_qkv, ld_qkv, p.cu, kv, att + p.row0_p * nq, nq, s);
  }

  if (c.parallel_residual) {
    // Attention and MLP both read this layer's input: the MLP's norm (or, shared, the attention's, still in h)
    // is taken before o_proj adds into x; then x += o_proj(att) and x += mlp(h), in the CPU's order.
    if (c.norm_layout != NormLayout::Shared) norm(x, L.mlp_norm, L.mlp_norm_b, h, et, false);
    mark("o_gemm");
    gemm->run(et, f32, att, T, nq, L.wo, H, L.bo, x, x, s);
    mlp(h, x, x);
    return;
  }
  if (L.post_attn != nullptr) {
    mark("o_gemm");
    gemm->run(et, f32, att, T, nq, L.wo, H, L.bo, nullptr, y, s);
    norm(y, L.post_attn, L.post_attn_b, x, f32, true);
  } else {
    mark("o_gemm");
    gemm->run(et, f32, att, T, nq, L.wo, H, L.bo, x, x, s);  // x += att · Woᵀ (+ bo)
  }
  norm(x, L.mlp_norm, L.mlp_norm_b, h, et, false);
  if (L.post_mlp != nullptr) {
    mlp(h, nullptr, y);
    norm(y, L.post_mlp, L.post_mlp_b, x, f32, true);
  } else {
    mlp(h, x, x);
  }
}

// lm_head over the wanted rows (in slices of the logits buffer) and the sampling kernel on each slice; the
// results land in ws.samp_out. Stream work only (captured by CUDA graphs).
void CudaDecoderModel::Impl::sample_tail(CudaWorkspace& ws, const StepMeta& m, int32_t top_k) const {
  const int64_t R = m.R, V = cfg.vocab_size;
  if (R == 0) return;
  const uint16_t* h = final_hidden(ws, m);
  const int64_t slice = ws.logit_rows;
  for (int64_t r0 = 0; r0 < R; r0 += slice) {
    const int64_t rows = std::min(slice, R - r0);
    logits_slice(ws, h, r0, rows);
    cuda::SampleArgs a;
    a.logits = ws.logits.as<float>();
    a.rows = rows;
    a.vocab = V;
    a.params = ws.samp_params() + r0;
    a.penalties = ws.samp_pens();
    a.top_k = top_k;
    a.tokens = ws.out_tokens() + r0;
    a.token_logprobs = ws.out_logprobs() + r0;
    a.top_ids = ws.out_top_ids() + r0 * top_k;
    a.top_logprobs = ws.out_top_logprobs() + r0 * top_k;
    mark("sample");
    cuda::sample(a, stream);
  }
}

}  // namespace kiln

#endif  // KILN_HAVE_CUDA
