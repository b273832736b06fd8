// CudaDecoderModel: weights placed on the device (the placer), pools and workspaces, and the passes: forward_batch
// (logits copied back for the wanted rows) and forward_batch_sample (sampled on the GPU; pure-decode steps replay
// CUDA graphs).
#include "model/cuda/cuda_decoder_model.h"

#ifdef KILN_HAVE_CUDA

#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>

#include "core/random_normal.h"
#include "core/thread_pool.h"
#include "kernels/cpu/ops.h"
#include "model/cuda/cuda_model_impl.h"

namespace kiln {
namespace {

using cudadev::CudaKvPool;
using cudadev::CudaWorkspace;
using cudadev::StepMeta;

cuda::ElemType to_elem(DType t) {
  return t == DType::BF16 ? cuda::ElemType::BF16 : t == DType::F16 ? cuda::ElemType::F16 : cuda::ElemType::F32;
}

// An automatic f16 compute type met a weight outside the f16 range: the load starts again in bf16.
struct RetryInBf16 {};

// Weights on the device: matrices, the embedding (and learned positions) and q/k norms in the compute type; norm
// weights and biases in fp32, except the q|k|v bias, which the qkv GEMM adds to its 16-bit output.
class CudaPlacer final : public WeightPlacer {
 public:
  CudaPlacer(CudaDecoderModel::Impl& m, bool auto_type, const std::string& path)
      : m_(m), auto_type_(auto_type), path_(path) {}

  LinearFormat keep_format(DType stored) const override {
    LinearFormat f;
    f.weight = dtype_is_float(stored) ? stored : DType::F32;  // converted to the compute type as placed
    return f;
  }
  bool computes(const LinearFormat& f) const override { return f.weight == DType::BF16 || f.weight == DType::F16; }

  Linear place_linear(HostLinear&& w, const std::string& name, LinearRole role) override {
    KILN_CHECK(w.format.dense() && w.format.act == ActQuant::None,
               "{}: {} is stored as {}, which the CUDA backend has no kernel for yet", path_, name,
               format_name(w.format));
    const int64_t n = w.out * w.in;
    std::vector<uint16_t> b16(static_cast<size_t>(n));
    std::vector<float> f32;
    const float* src = nullptr;
    if (w.format.weight == DType::F32) {
      src = reinterpret_cast<const float*>(w.weight.data());
    } else {
      f32.resize(static_cast<size_t>(n));
      convert_to_f32(w.format.weight, w.weight.data(), f32.data(), f32.size());
      src = f32.data();
    }
    to_compute(src, n, b16.data(), name);
    Linear l;
    l.format.weight = m_.dtype;
    l.out = w.out;
    l.in = w.in;
    void* d = m_.weights.alloc(b16.size() * 2);
    KILN_MODEL_CUDA(cudaMemcpy(d, b16.data(), b16.size() * 2, cudaMemcpyHostToDevice));
    l.weight = d;
    place_bias(l, std::move(w.bias), role, name);
    return l;
  }

  bool computes_formulas() const override { return true; }
  Linear place_linear_formula(const std::vector<std::pair<WeightFormula, int64_t>>& parts, int64_t in,
                              std::vector<float>&& bias, const std::string& name, LinearRole role) override {
    Linear l;
    l.format.weight = m_.dtype;
    l.in = in;
    for (const auto& [f, rows] : parts) l.out += rows;
    auto* d = static_cast<uint16_t*>(m_.weights.alloc(static_cast<size_t>(l.out * in) * 2));
    int64_t row = 0;
    for (const auto& [f, rows] : parts) {
      const int64_t n = rows * in;
      const double max_abs = f.kind == WeightFormula::Constant ? std::fabs(f.value) : f.stddev * kRandomNormalMaxSigmas;
      check_range(max_abs, name);
      uint16_t* dst = d + row * in;
      if (f.kind == WeightFormula::Constant) {
        const uint16_t bits = m_.dtype == DType::BF16 ? f32_to_bf16(f.value) : f32_to_f16(f.value);
        std::vector<uint16_t> fill(static_cast<size_t>(n), bits);
        KILN_MODEL_CUDA(cudaMemcpy(dst, fill.data(), fill.size() * 2, cudaMemcpyHostToDevice));
      } else {
        cuda::fill_normal(m_.et, dst, n, f.key, f.stddev, to_elem(f.round_to), nullptr);
      }
      row += rows;
    }
    KILN_MODEL_CUDA(cudaDeviceSynchronize());  // the fills ran on the legacy stream
    l.weight = d;
    place_bias(l, std::move(bias), role, name);
    return l;
  }

  const float* place_vector(std::vector<float>&& v, VectorKind) override {
    void* d = m_.weights.alloc(v.size() * sizeof(float));
    KILN_MODEL_CUDA(cudaMemcpy(d, v.data(), v.size() * sizeof(float), cudaMemcpyHostToDevice));
    return static_cast<const float*>(d);
  }
  const void* place_head_norm(std::vector<float>&& v) override { return place_16(v.data(), static_cast<int64_t>(v.size()), "q/k norm"); }
  const void* place_table(const StoredTensor& t) override {
    const std::vector<float> v = t.to_f32();
    return place_16(v.data(), static_cast<int64_t>(v.size()), "learned positions");
  }

 private:
  void check_range(double max_abs, const std::string& name) const {
    if (m_.dtype != DType::F16 || !(max_abs > 65504.0)) return;
    KILN_CHECK(auto_type_, "{}: {} has values outside the f16 range; use bf16", path_, name);
    throw RetryInBf16{};
  }
  void to_compute(const float* src, int64_t n, uint16_t* dst, const std::string& name) const {
    if (m_.dtype == DType::F16) {
      float amax = 0.0f;
      for (int64_t j = 0; j < n; ++j) amax = std::max(amax, std::fabs(src[j]));
      check_range(amax, name);
    }
    const bool bf = m_.dtype == DType::BF16;
    ThreadPool::global().parallel_for(n, 1 << 16, [&](int64_t a, int64_t b) {
      for (int64_t j = a; j < b; ++j) dst[j] = bf ? f32_to_bf16(src[j]) : f32_to_f16(src[j]);
    });
  }
  const void* place_16(const float* v, int64_t n, const std::string& name) {
    std::vector<uint16_t> b16(static_cast<size_t>(n));
    to_compute(v, n, b16.data(), name);
    void* d = m_.weights.alloc(b16.size() * 2);
    KILN_MODEL_CUDA(cudaMemcpy(d, b16.data(), b16.size() * 2, cudaMemcpyHostToDevice));
    return d;
  }
  void place_bias(Linear& l, std::vector<float>&& bias, LinearRole role, const std::string& name) {
    if (bias.empty()) return;
    if (role == LinearRole::Qkv) {
      l.bias = place_16(bias.data(), static_cast<int64_t>(bias.size()), name + " bias");
      l.bias_dtype = m_.dtype;
    } else {
      l.bias = place_vector(std::move(bias), VectorKind::Bias);
      l.bias_dtype = DType::F32;
    }
  }

  CudaDecoderModel::Impl& m_;
  bool auto_type_;
  std::string path_;
};

}  // namespace

CudaDecoderModel::CudaDecoderModel() = default;
CudaDecoderModel::~CudaDecoderModel() = default;

DType CudaDecoderModel::compute_dtype() const { return impl_->dtype; }
size_t CudaDecoderModel::weight_bytes() const { return impl_->weights.allocated(); }
int32_t CudaDecoderModel::state_block_size(int64_t) const { return impl_->opt.state_block_size; }
int64_t CudaDecoderModel::state_chunk_tokens(int64_t) const { return impl_->opt.max_state_tokens; }

std::unique_ptr<CudaDecoderModel> CudaDecoderModel::create(ModelConfig c, const WeightSource& src,
                                                           const LoadOptions& options, const CudaModelOptions& co) {
  const std::string& path = src.path();
  KILN_CHECK(cuda::device_count() > 0, "{}: no CUDA device for the CUDA backend", path);
  KILN_CHECK(options.device_ordinal >= 0 && options.device_ordinal < cuda::device_count(),
             "{}: CUDA device {} does not exist ({} visible)", path, options.device_ordinal, cuda::device_count());
  check_decoder_config(c, path);
  KILN_CHECK(c.head_dim <= 256 && c.head_dim % 2 == 0,
             "{}: the CUDA backend does not support head_dim {} (it must be even and at most 256)", path, c.head_dim);
  KILN_CHECK(co.max_state_tokens > 0 && co.max_logit_rows > 0 && co.state_block_size > 0, "CUDA model: bad options");
  KILN_CHECK(!options.compute_dtype || *options.compute_dtype == DType::BF16 || *options.compute_dtype == DType::F16,
             "CUDA model: the compute type must be bf16 or f16");
  const auto t_start = std::chrono::steady_clock::now();
  KILN_MODEL_CUDA(cudaSetDevice(options.device_ordinal));

  // The compute type: asked for, or F16 whatever the checkpoint's type (three more mantissa bits than bf16 in every
  // GEMM operand; the residual stream is fp32 and the activation and norm stores saturate, so f16's range matters only
  // for the weights); a weight outside the f16 range sends an automatic choice back to BF16.
  std::unique_ptr<CudaDecoderModel> m;
  for (DType dtype : {options.compute_dtype.value_or(DType::F16), DType::BF16}) {
    m.reset(new CudaDecoderModel());
    m->impl_ = std::make_unique<Impl>(options);
    Impl& I = *m->impl_;
    I.opt = co;
    I.device = options.device_ordinal;
    I.dtype = dtype;
    I.et = to_elem(dtype);
    ModelConfig cfg = c;
    CudaPlacer placer(I, !options.compute_dtype.has_value(), path);
    try {
      m->weights_ = load_decoder_weights(cfg, src, options, placer, &m->num_parameters_, &m->linears_);
    } catch (const RetryInBf16&) {
      if (options.progress) std::fprintf(stderr, "\nkiln: a weight is outside the f16 range; loading again in bf16\n");
      continue;
    }
    m->cfg_ = std::move(cfg);
    break;
  }
  Impl& I = *m->impl_;
  const ModelConfig& cfg = m->cfg_;
  I.kv_fp8 = options.kv_cache_fp8;
  I.cuda_graphs = options.cuda_graphs;
  I.mlp16 = I.dtype == DType::F16 && cfg.gated_mlp;
  I.fault_after_steps = options.fault_after_steps;
  if (cfg.position == PositionKind::Alibi) {
    const std::vector<float> slopes = cpu::alibi_slopes(cfg.num_heads, cfg.alibi_bias_max);
    I.alibi_slopes = cudadev::DeviceMem(slopes.size() * sizeof(float));
    KILN_MODEL_CUDA(
        cudaMemcpy(I.alibi_slopes.p, slopes.data(), slopes.size() * sizeof(float), cudaMemcpyHostToDevice));
  }
  const std::vector<double> inv = cpu::rope_inv_freq(cfg.rope, cfg.rope.rotary_dim);
  I.inv_freq = cudadev::DeviceMem(inv.size() * sizeof(double));
  KILN_MODEL_CUDA(cudaMemcpy(I.inv_freq.p, inv.data(), inv.size() * sizeof(double), cudaMemcpyHostToDevice));
  KILN_MODEL_CUDA(cudaStreamCreateWithFlags(&I.stream, cudaStreamNonBlocking));
  I.num_sms = cuda::num_sms();
  I.gemm_ws = cudadev::DeviceMem(size_t{32} << 20);
  cuda::GemmOptions gemm_options;
  gemm_options.tuning = options.gemm_tuning;
  I.gemm = std::make_unique<cuda::Gemm>(I.gemm_ws.p, I.gemm_ws.bytes, gemm_options);
  cudadev::WorkspaceShape& s = I.ws_shape;
  s.hidden = cfg.hidden_size;
  s.intermediate = cfg.intermediate_size;
  s.q_width = cfg.num_heads * cfg.head_dim;
  s.ld_qkv = s.q_width + 2 * cfg.num_kv_heads * cfg.head_dim;
  s.vocab = cfg.vocab_size;
  s.num_heads = cfg.num_heads;
  s.head_dim = cfg.head_dim;
  s.gated = cfg.gated_mlp;
  s.post_norms = cfg.norm_layout == NormLayout::PrePost;
  s.max_logit_rows = co.max_logit_rows;
  s.num_sms = I.num_sms;
  if (options.progress) {
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    std::fprintf(stderr, "kiln: on the GPU: %.1f MiB as %s in %.2f s\n",
                 static_cast<double>(I.weights.allocated()) / (1 << 20), dtype_name(I.dtype).data(), secs);
  }
  return m;
}

int64_t CudaDecoderModel::kv_block_bytes(int32_t block_size) const {
  KILN_CHECK(block_size > 0, "KV block size must be positive, got {}", block_size);
  return cudadev::kv_block_bytes(cfg_, block_size, impl_->kv_fp8);
}

CudaDecoderModel::Memory CudaDecoderModel::memory() const {
  KILN_MODEL_CUDA(cudaSetDevice(impl_->device));
  size_t free_bytes = 0, total_bytes = 0;
  KILN_MODEL_CUDA(cudaMemGetInfo(&free_bytes, &total_bytes));
  return {static_cast<int64_t>(total_bytes), static_cast<int64_t>(free_bytes)};
}

std::unique_ptr<KvPool> CudaDecoderModel::new_kv_pool(int64_t num_blocks, int32_t block_size) const {
  KILN_CHECK(num_blocks > 0 && block_size > 0, "KV pool: blocks ({}) and block size ({}) must be positive", num_blocks,
             block_size);
  KILN_CHECK(num_blocks * block_size <= INT32_MAX, "KV pool: {} blocks of {} tokens exceed 2^31 slots", num_blocks,
             block_size);
  KILN_MODEL_CUDA(cudaSetDevice(impl_->device));
  return std::make_unique<CudaKvPool>(this, cfg_, num_blocks, block_size, impl_->kv_fp8, /*shuffle=*/true);
}

int64_t CudaDecoderModel::workspace_bytes(int64_t max_tokens) const {
  return CudaWorkspace::device_bytes(impl_->ws_shape, max_tokens);
}

std::unique_ptr<Workspace> CudaDecoderModel::new_workspace(int64_t max_tokens) const {
  const Impl& I = *impl_;
  KILN_MODEL_CUDA(cudaSetDevice(I.device));
  auto ws = std::make_unique<CudaWorkspace>(this, I.ws_shape, max_tokens);
  // With GEMM tuning on (LoadOptions::gemm_tuning), the layer and lm_head GEMMs are tuned now for every row-count
  // bucket up to the workspace's rows that cuda::Gemm tunes (from 1024 rows: the prefill GEMMs), as TensorRT-LLM
  // profiles its GEMMs when it builds an engine: the steps then never pay for it (a bucket is tuned once per model).
  // The recipe's first layer runs with only its linears (CudaOps gemms_only) on whatever the workspace holds, so the
  // GEMMs tuned are exactly the ones the passes run.
  if (I.gemm->tuning() && !weights_.layers.empty()) {
    cudadev::KvLayout no_kv;
    for (int64_t T = 1;; T = std::min(2 * T, ws->tokens)) {
      if (T >= I.gemm->tuning_min_rows()) {
        StepMeta meta;
        meta.T = T;
        CudaOps ops(cfg_, I, *ws, no_kv, meta, /*gemms_only=*/true);
        recipe_.layer(ops, weights_.layers[0], 0);
        if (T <= ws->logit_rows) ops.lm_head(weights_.lm_head, 0, T);
      }
      if (T == ws->tokens) break;
    }
    KILN_MODEL_CUDA(cudaStreamSynchronize(I.stream));
  }
  return ws;
}

namespace {

struct Checked {
  CudaKvPool& pool;
  CudaWorkspace& ws;
};

Checked checked(const void* model, KvPool& kv_pool, Workspace& workspace, const ForwardBatch& b,
                const ModelConfig& cfg) {
  auto* pool = dynamic_cast<CudaKvPool*>(&kv_pool);
  KILN_CHECK(pool != nullptr && pool->owner() == model, "forward_batch: the KV pool was not made by this model");
  auto* ws = dynamic_cast<CudaWorkspace*>(&workspace);
  KILN_CHECK(ws != nullptr && ws->owner() == model, "forward_batch: the workspace was not made by this model");
  check_batch(b, cfg, pool->num_blocks(), pool->block_size(), ws->max_tokens());
  return {*pool, *ws};
}

// A step kind for the op profile.
const char* step_kind(const StepMeta& m) {
  return m.np > 0 ? (m.nd == 0 ? "prefill" : "mixed")
         : m.T <= 64  ? "decode (batch <= 64)"
         : m.T <= 256 ? "decode (batch 65-256)"
                      : "decode (batch > 256)";
}

// LoadOptions::fault_after_steps: after that many passes, a kernel that writes far outside any allocation (a real
// sticky fault: the context is lost, as after a kernel bug), so the engine's handling of one is tested on the GPU.
void maybe_inject_fault(const CudaDecoderModel::Impl& I) {
  if (I.fault_after_steps <= 0 || ++I.passes <= I.fault_after_steps) return;
  cuda::fill_f32(reinterpret_cast<float*>(uintptr_t{1} << 40), 1 << 20, 0.0f, I.stream);
}

}  // namespace

void CudaDecoderModel::forward_batch(KvPool& kv_pool, Workspace& workspace, const ForwardBatch& b,
                                     std::vector<float>& logits) const {
  const Impl& I = *impl_;
  auto [pool, ws] = checked(this, kv_pool, workspace, b, cfg_);
  KILN_MODEL_CUDA(cudaSetDevice(I.device));
  maybe_inject_fault(I);
  const int64_t V = cfg_.vocab_size;
  logits.resize(b.logit_rows.size() * static_cast<size_t>(V));
  const StepMeta m = cudadev::upload_meta(ws, pool.layout(), b, 0, 0, I.stream);
  CudaOps ops(cfg_, I, ws, pool.layout(), m);
  recipe_.forward(ops, weights_);
  // Logits of the wanted rows only: gathered and normed, then lm_head in slices of the logits buffer.
  if (m.R > 0) {
    ops.final_norm(weights_.final_norm);
    for (int64_t r0 = 0; r0 < m.R; r0 += ws.logit_rows) {
      const int64_t rows = std::min(ws.logit_rows, m.R - r0);
      ops.lm_head(weights_.lm_head, r0, rows);
      I.mark("logits_copy");
      KILN_MODEL_CUDA(cudaMemcpyAsync(logits.data() + r0 * V, ws.logits.p, static_cast<size_t>(rows * V) * sizeof(float),
                                      cudaMemcpyDeviceToHost, I.stream));
    }
  }
  I.prof.end_step(step_kind(m), m.T, I.stream);
  KILN_MODEL_CUDA(cudaStreamSynchronize(I.stream));
}

void CudaDecoderModel::forward_batch_sample(KvPool& kv_pool, Workspace& workspace, const ForwardBatch& b,
                                            std::span<const RowSampling> rows, BatchSamples& out) const {
  const Impl& I = *impl_;
  auto [pool, ws] = checked(this, kv_pool, workspace, b, cfg_);
  const int64_t R0 = static_cast<int64_t>(b.logit_rows.size());
  KILN_CHECK(static_cast<int64_t>(rows.size()) == R0, "forward_batch_sample: {} sampling rows for {} logit rows",
             rows.size(), R0);
  KILN_MODEL_CUDA(cudaSetDevice(I.device));
  maybe_inject_fault(I);
  const int64_t T0 = static_cast<int64_t>(b.tokens.size());
  const int64_t bs = pool.block_size();

  // A pure-decode step (every sequence one row, every row sampled) replays its bucket's graph.
  const bool decode_only = b.num_decodes == static_cast<int64_t>(b.seqs.size()) && R0 == T0;
  const int64_t B = decode_only ? graph_bucket(T0) : 0;
  const bool use_graph = I.cuda_graphs && !I.prof.on() && decode_only && B <= ws.tokens;
  int64_t width = 0;
  if (use_graph) {
    int64_t mb = 1;
    for (const BatchSeq& s : b.seqs) mb = std::max(mb, (s.context_len + bs - 1) / bs);
    width = std::max<int64_t>(8, cudadev::pow2_at_least(mb));
  }
  const int64_t R = use_graph ? B : R0;

  // Each row's SamplingParams as given and its SampleRowInfo (one upload; padded rows greedy), then the rows'
  // penalty entries (a second), staged in pinned memory.
  int32_t top_k = 0;
  int64_t entries = 0;
  for (const RowSampling& r : rows) {
    KILN_CHECK(r.params.logprobs >= 0 && r.params.logprobs <= cuda::kMaxTopLogprobs,
               "forward_batch_sample: logprobs {} out of range", r.params.logprobs);
    if (r.params.logprobs > 0) top_k = cuda::kMaxTopLogprobs;  // one value for every step, so a graph serves them all
    if (r.params.has_penalties()) entries += static_cast<int64_t>(r.penalties.size());
  }
  KILN_CHECK(entries <= INT32_MAX, "forward_batch_sample: {} penalty entries", entries);
  ws.grow_penalties(entries);
  SamplingParams* hp = ws.host_params();
  cuda::SampleRowInfo* hi = ws.host_info(R);
  SamplePenalty* he = ws.host_pens();
  int64_t e = 0;
  for (int64_t i = 0; i < R; ++i) {
    cuda::SampleRowInfo info;
    if (i < R0) {
      const RowSampling& r = rows[i];
      hp[i] = r.params;
      info.step = r.step;
      if (r.params.has_penalties() && !r.penalties.empty()) {
        info.penalty_begin = static_cast<int32_t>(e);
        info.penalty_count = static_cast<int32_t>(r.penalties.size());
        std::copy(r.penalties.begin(), r.penalties.end(), he + e);
        e += info.penalty_count;
      }
    } else {
      hp[i] = SamplingParams{};
      hp[i].temperature = 0.0f;
    }
    hi[i] = info;
  }
  cudaStream_t s = I.stream;
  I.step_timer.begin(s);
  I.mark("upload");
  KILN_MODEL_CUDA(cudaMemcpyAsync(ws.samp_params(), hp,
                                  static_cast<size_t>(R) * cudadev::CudaWorkspace::kSampleRowBytes,
                                  cudaMemcpyHostToDevice, s));
  if (e > 0)
    KILN_MODEL_CUDA(
        cudaMemcpyAsync(ws.samp_pens(), he, static_cast<size_t>(e) * sizeof(SamplePenalty), cudaMemcpyHostToDevice, s));

  const StepMeta m = cudadev::upload_meta(ws, pool.layout(), b, use_graph ? B : 0, width, s);
  // The device work of the step after the uploads: the recipe, the final norm, then lm_head and sampling per slice.
  auto device_work = [&] {
    CudaOps ops(cfg_, I, ws, pool.layout(), m);
    recipe_.forward(ops, weights_);
    if (m.R == 0) return;
    ops.final_norm(weights_.final_norm);
    for (int64_t r0 = 0; r0 < m.R; r0 += ws.logit_rows) {
      const int64_t n = std::min(ws.logit_rows, m.R - r0);
      ops.lm_head(weights_.lm_head, r0, n);
      ops.sample(r0, n, top_k);
    }
  };
  if (use_graph) {
    std::unique_ptr<cudadev::GraphExec>& g = ws.graphs[{pool.id(), B, width, top_k}];
    if (!g) g = std::make_unique<cudadev::GraphExec>();
    if (!g->exec && ++g->uses >= 2 && !ws.graphs_failed) {
      // Captured the second time the bucket is used (the first ran eagerly, planning its GEMMs). A capture that fails
      // turns graphs off for this workspace (said once on stderr); the step then runs eagerly.
      cudaGraph_t graph = nullptr;
      std::string error;
      KILN_MODEL_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
      try {
        device_work();
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
      device_work();
      ++I.eager_steps;
    }
  } else {
    device_work();
    ++I.eager_steps;
  }
  I.prof.end_step(step_kind(m), m.T, s);

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
  I.step_timer.end(s);
  KILN_MODEL_CUDA(cudaStreamSynchronize(s));
  if (I.step_timer.on()) I.last_step_gpu_ms = I.step_timer.elapsed_ms();
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

int64_t CudaDecoderModel::graph_bucket(int64_t n) {
  for (int64_t b : {1, 2, 4, 8, 16, 24, 32, 48, 64})
    if (n <= b) return b;
  return n <= 256 ? (n + 31) / 32 * 32 : (n + 63) / 64 * 64;
}

}  // namespace kiln

#endif  // KILN_HAVE_CUDA
