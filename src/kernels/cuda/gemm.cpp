// GEMM through cuBLASLt: y = x·Wᵀ (+ bias) (+ residual) with fp32 accumulation; one plan per shape, cached,
// its algorithm autotuned on the first call of its row-count bucket (as TensorRT-LLM's GEMM plugin profiles).
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "kernels/cuda/cuda_ops.h"
#include "kiln/error.h"

namespace kiln::cuda {
namespace {

#define KILN_CUBLAS_CHECK(expr)                                                                                    \
  do {                                                                                                             \
    cublasStatus_t st_ = (expr);                                                                                   \
    if (st_ != CUBLAS_STATUS_SUCCESS)                                                                              \
      KILN_THROW("cuBLASLt error {} ({}) at {}:{}", static_cast<int>(st_), cublasLtGetStatusString(st_), __FILE__, \
                 __LINE__);                                                                                        \
  } while (0)

cudaDataType_t to_cuda(ElemType t) {
  switch (t) {
    case ElemType::BF16:
      return CUDA_R_16BF;
    case ElemType::F16:
      return CUDA_R_16F;
    case ElemType::F32:
      return CUDA_R_32F;
  }
  return CUDA_R_32F;
}

// Largest power of two (<= 256) dividing the address: what cuBLASLt's kernels may assume.
uint32_t alignment(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && (a % al) != 0) al >>= 1;
  return al;
}

struct Key {
  int in_type, out_type;
  int64_t m, n, k, lda, ldb, ldc;
  bool bias, residual;
  uint32_t al_a, al_b, al_c, al_d, al_bias;
  bool operator==(const Key& o) const {
    return std::tie(in_type, out_type, m, n, k, lda, ldb, ldc, bias, residual, al_a, al_b, al_c, al_d, al_bias) ==
           std::tie(o.in_type, o.out_type, o.m, o.n, o.k, o.lda, o.ldb, o.ldc, o.bias, o.residual, o.al_a, o.al_b,
                    o.al_c, o.al_d, o.al_bias);
  }
};
struct KeyHash {
  size_t operator()(const Key& k) const {
    uint64_t h = 1469598103934665603ull;
    auto mix = [&](uint64_t v) { h = (h ^ v) * 1099511628211ull; };
    mix(k.in_type);
    mix(k.out_type);
    mix(k.m);
    mix(k.n);
    mix(k.k);
    mix(k.lda);
    mix(k.ldb);
    mix(k.ldc);
    mix(k.bias);
    mix(k.residual);
    mix(k.al_a | (uint64_t{k.al_b} << 16) | (uint64_t{k.al_c} << 32) | (uint64_t{k.al_d} << 48));
    mix(k.al_bias);
    return h;
  }
};

// Descriptors and the chosen algorithm of one shape.
struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};       // what run() uses
  cublasLtMatmulAlgo_t heuristic{};  // the heuristic's top choice (the fallback of a reused tuned algo)
  bool reused = false;               // algo is a tuned one taken over from another T of the bucket
  ~Plan() {
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

// The row count of the key a tuned algorithm is kept under: T rounded up to a power of two, so that prefill
// chunks of every length tune at most ~log2(max T) times per weight shape.
int64_t row_bucket(int64_t T) {
  int64_t b = 1;
  while (b < T) b <<= 1;
  return b;
}

size_t elem_bytes(ElemType t) {
  return t == ElemType::F32 ? 4 : 2;
}

std::string algo_desc(const cublasLtMatmulAlgo_t& a) {
  int32_t id = -1, tile = -1, splitk = -1, stages = -1;
  size_t w = 0;
  cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof(id), &w);
  cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof(tile), &w);
  cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk, sizeof(splitk), &w);
  cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stages, sizeof(stages), &w);
  return "id " + std::to_string(id) + " tile " + std::to_string(tile) + " splitK " + std::to_string(splitk) +
         " stages " + std::to_string(stages);
}

// Tuning cost bound per key (host wall time, the candidates' runs included): each candidate gets one untimed
// and one timed run; more candidates only while within it (at least two), more timed rounds only while within it.
// Once the top candidate's first timed run is known, the bound grows (up to kTuneMaxBudgetMs) so that every
// candidate gets all its timed runs: the prefill GEMMs run for milliseconds, and two runs each left choices to noise.
constexpr double kTuneBudgetMs = 50.0, kTuneMaxBudgetMs = 250.0;
constexpr int kTuneCandidates = 8, kTuneMaxTimedRuns = 5;
// A candidate replaces the heuristic's top choice only when this much faster (noise must not flip choices).
constexpr double kTuneMargin = 0.97;

}  // namespace

struct Gemm::Impl {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  bool tune = true;           // GemmOptions::tuning
  int64_t tune_min_rows = 1;  // buckets below this row count keep the heuristic's choice
  bool log = false;           // GemmOptions::log_tuning
  int l2_bytes = 0;
  std::unordered_map<Key, std::unique_ptr<Plan>, KeyHash> plans;
  // Key with n = row_bucket(T) -> the algorithm tuned for it (fixed for the Gemm's lifetime).
  std::unordered_map<Key, cublasLtMatmulAlgo_t, KeyHash> tuned;

  cublasLtMatmulPreference_t preference(const Key& key) const {
    cublasLtMatmulPreference_t pref = nullptr;
    KILN_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const uint64_t ws = workspace_bytes;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &key.al_a, 4);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &key.al_b, 4);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &key.al_c, 4);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &key.al_d, 4);
    return pref;
  }

  // Times up to kTuneCandidates heuristic candidates on the call's operands and returns the index of the
  // fastest in `cands` (0, the heuristic's top, unless another beats it by the margin). Runs on `stream`, ahead
  // of the real call, and synchronizes with it. -1 when tuning could not run (no memory for the scratch
  // output, say): the caller keeps the heuristic's choice and leaves the bucket untuned.
  //
  // The timing runs must leave the call's result alone. y is written by the real call after them, so runs that
  // only write y are harmless: also with a residual C that does not overlap y (beta = 1 reads C, writes D = y).
  // But when C overlaps D (the fp32 residual stream: o_proj and down accumulate in place, C == D), every run
  // would add x·Wᵀ to the residual once more. Those candidates are timed on the same descriptors, alpha and
  // beta = 1 with C = the residual (read only) and D = a scratch buffer of y's size, allocated stream-ordered
  // on `stream` for the tuning alone: the same work and memory traffic as the real call, which then runs once.
  //
  // Small-T GEMMs are memory-bound and their weights can stay in L2 from run to run, unlike in the model,
  // where every layer has its own: for T <= 256 each timed run follows a write over twice the L2 size.
  int time_candidates(const Plan& p, const cublasLtMatmulHeuristicResult_t* cands, int n, const void* x, int64_t T,
                      int64_t k, int64_t m, const void* w, const void* c, void* y, size_t y_bytes, bool aliased,
                      float beta, cudaStream_t stream) {
    using Clock = std::chrono::steady_clock;
    const auto t0 = Clock::now();
    double budget_ms = kTuneBudgetMs;
    auto elapsed_ms = [&] { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); };
    void* scratch = nullptr;
    void* flush = nullptr;
    size_t flush_bytes = 0;
    cudaEvent_t ev[2] = {nullptr, nullptr};
    std::vector<double> best(n, -1.0);  // min timed run in ms; < 0: failed or not run
    bool ok = true;
    // A failed allocation or event creation leaves no error behind for the caller's checks.
    if (aliased && cudaMallocAsync(&scratch, y_bytes, stream) != cudaSuccess)
      ok = false, scratch = nullptr, cudaGetLastError();
    if (ok && T <= 256 && l2_bytes > 0) {
      flush_bytes = size_t{2} * static_cast<size_t>(l2_bytes);
      if (cudaMallocAsync(&flush, flush_bytes, stream) != cudaSuccess)
        flush = nullptr, flush_bytes = 0, cudaGetLastError();
    }
    if (ok && (cudaEventCreate(&ev[0]) != cudaSuccess || cudaEventCreate(&ev[1]) != cudaSuccess))
      ok = false, cudaGetLastError();
    void* d = aliased ? scratch : y;
    const float alpha = 1.0f;
    auto launch = [&](int i) {
      return cublasLtMatmul(handle, p.desc, &alpha, w, p.a, x, p.b, &beta, c, p.c, d, p.c, &cands[i].algo, workspace,
                            workspace_bytes, stream) == CUBLAS_STATUS_SUCCESS;
    };
    // One timed run of candidate i (ms), < 0 when it failed.
    auto timed = [&](int i) -> double {
      if (flush) cudaMemsetAsync(flush, 0, flush_bytes, stream);
      cudaEventRecord(ev[0], stream);
      const bool launched = launch(i);
      cudaEventRecord(ev[1], stream);
      float ms = -1.0f;
      if (cudaEventSynchronize(ev[1]) != cudaSuccess || !launched ||
          cudaEventElapsedTime(&ms, ev[0], ev[1]) != cudaSuccess)
        return -1.0;
      return ms;
    };
    int timed_candidates = 0;
    for (int i = 0; ok && i < n; ++i) {
      if (timed_candidates >= 2 && elapsed_ms() > budget_ms) break;
      if (!launch(i)) continue;  // first run: loads the kernel, warms up
      best[i] = timed(i);
      if (best[i] >= 0 && timed_candidates++ == 0)
        budget_ms = std::clamp(1.25 * n * (kTuneMaxTimedRuns + 1) * best[i], kTuneBudgetMs, kTuneMaxBudgetMs);
    }
    for (int round = 1; ok && round < kTuneMaxTimedRuns && elapsed_ms() < budget_ms; ++round)
      for (int i = 0; i < n; ++i)
        if (best[i] >= 0) {
          const double t = timed(i);
          if (t >= 0) best[i] = std::min(best[i], t);
        }
    if (ev[0]) cudaEventDestroy(ev[0]);
    if (ev[1]) cudaEventDestroy(ev[1]);
    if (scratch) cudaFreeAsync(scratch, stream);
    if (flush) cudaFreeAsync(flush, stream);
    if (!ok || timed_candidates == 0) return -1;
    int pick = -1;
    for (int i = 0; i < n; ++i)
      if (best[i] >= 0 && (pick < 0 || best[i] < best[pick])) pick = i;
    if (best[0] >= 0 && best[pick] > kTuneMargin * best[0]) pick = 0;
    if (log) {
      std::fprintf(stderr,
                   "kiln: gemm tune T=%lld (bucket %lld) in=%lld out=%lld%s: %d candidates (%d timed), top %.2f us, "
                   "chose #%d %.2f us (%s), %.1f ms\n",
                   static_cast<long long>(T), static_cast<long long>(row_bucket(T)), static_cast<long long>(k),
                   static_cast<long long>(m), aliased ? " in place" : "", n, timed_candidates,
                   best[0] >= 0 ? 1000.0 * best[0] : -1.0, pick, 1000.0 * best[pick],
                   algo_desc(cands[pick].algo).c_str(), elapsed_ms());
    }
    return pick;
  }
};

Gemm::Gemm(void* workspace, size_t workspace_bytes, const GemmOptions& options) : impl_(std::make_unique<Impl>()) {
  KILN_CHECK(options.tuning_min_rows >= 1, "GEMM: the tuning threshold must be at least 1 row, got {}",
             options.tuning_min_rows);
  KILN_CUBLAS_CHECK(cublasLtCreate(&impl_->handle));
  impl_->workspace = workspace;
  impl_->workspace_bytes = workspace ? workspace_bytes : 0;
  impl_->tune = options.tuning;
  impl_->tune_min_rows = options.tuning_min_rows;
  impl_->log = options.log_tuning;
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&impl_->l2_bytes, cudaDevAttrL2CacheSize, dev) != cudaSuccess)
    impl_->l2_bytes = 0, cudaGetLastError();
}

Gemm::~Gemm() {
  impl_->plans.clear();
  if (impl_->handle) cublasLtDestroy(impl_->handle);
}

size_t Gemm::cached_plans() const {
  return impl_->plans.size();
}

bool Gemm::tuning() const {
  return impl_->tune;
}

int64_t Gemm::tuning_min_rows() const {
  return impl_->tune_min_rows;
}

size_t Gemm::tuned_shapes() const {
  return impl_->tuned.size();
}

void Gemm::run(ElemType in_type, ElemType out_type, const void* x, int64_t T, int64_t in, const void* w, int64_t out,
               const void* bias, const void* residual, void* y, cudaStream_t stream, int64_t ldx, int64_t ldy) {
  KILN_CHECK(in_type != ElemType::F32, "GEMM: inputs must be bf16 or f16");
  KILN_CHECK(T >= 0 && in > 0 && out > 0, "GEMM: bad shape T={} in={} out={}", T, in, out);
  if (T == 0) return;
  if (ldx == 0) ldx = in;
  if (ldy == 0) ldy = out;
  KILN_CHECK(ldx >= in && ldy >= out, "GEMM: row strides ({}, {}) smaller than the rows ({}, {})", ldx, ldy, in, out);

  // Row-major y[T, out] = x[T, in] · w[out, in]ᵀ is column-major yᵀ[out, T] = op(w)[out, in] · xᵀ[in, T]
  // with w read as a column-major [in, out] matrix and transposed.
  Key key{static_cast<int>(in_type),
          static_cast<int>(out_type),
          out,
          T,
          in,
          in,
          ldx,
          ldy,
          bias != nullptr,
          residual != nullptr,
          alignment(w),
          alignment(x),
          residual ? alignment(residual) : 256u,
          alignment(y),
          bias ? alignment(bias) : 256u};
  const float alpha = 1.0f, beta = residual ? 1.0f : 0.0f;
  const void* c = residual ? residual : y;
  auto it = impl_->plans.find(key);
  if (it == impl_->plans.end()) {
    auto p = std::make_unique<Plan>();
    const cudaDataType_t ti = to_cuda(in_type), to = to_cuda(out_type);
    KILN_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t opT = CUBLAS_OP_T, opN = CUBLAS_OP_N;
    KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &opT, sizeof(opT)));
    KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &opN, sizeof(opN)));
    if (bias) {
      const cublasLtEpilogue_t ep = CUBLASLT_EPILOGUE_BIAS;
      KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof(ep)));
      const int32_t bt = static_cast<int32_t>(to);
      KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof(bt)));
      KILN_CUBLAS_CHECK(
          cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
    }
    KILN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->a, ti, in, out, in));
    KILN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->b, ti, in, T, ldx));
    KILN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->c, to, out, T, ldy));

    // Tuning (never while the stream is being captured into a CUDA graph: the model runs each graph bucket
    // eagerly first, which tunes). The tuned algorithm is kept per bucket of T (row_bucket) and reused for the
    // other T of the bucket when cuBLASLt accepts it for their descriptors (cublasLtMatmulAlgoCheck), else
    // those T take the heuristic's top choice.
    Key bkey = key;
    bkey.n = row_bucket(T);
    const bool tunable = impl_->tune && bkey.n >= impl_->tune_min_rows;
    cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
    const bool capturing = cudaStreamIsCapturing(stream, &cap) != cudaSuccess || cap != cudaStreamCaptureStatusNone;
    if (capturing) cudaGetLastError();

    cublasLtMatmulPreference_t pref = impl_->preference(key);
    cublasLtMatmulHeuristicResult_t results[kTuneCandidates]{};
    int found = 0;
    const bool tune = tunable && !capturing && !impl_->tuned.count(bkey);
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(impl_->handle, p->desc, p->a, p->b, p->c, p->c, pref,
                                                             tune ? kTuneCandidates : 1, results, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    KILN_CUBLAS_CHECK(st);
    KILN_CHECK(found > 0, "GEMM: cuBLASLt has no algorithm for T={} in={} out={}", T, in, out);
    p->heuristic = p->algo = results[0].algo;
    if (tunable) {
      if (auto t = impl_->tuned.find(bkey); t != impl_->tuned.end()) {
        cublasLtMatmulHeuristicResult_t check{};
        if (cublasLtMatmulAlgoCheck(impl_->handle, p->desc, p->a, p->b, p->c, p->c, &t->second, &check) ==
                CUBLAS_STATUS_SUCCESS &&
            check.workspaceSize <= impl_->workspace_bytes) {
          p->algo = t->second;
          p->reused = true;
        }
      } else if (tune && found > 1) {
        // In place when the residual C overlaps D = y (C == D in the model): see time_candidates.
        const size_t y_bytes = static_cast<size_t>(T) * ldy * elem_bytes(out_type);
        const auto yb = reinterpret_cast<uintptr_t>(y), cb = reinterpret_cast<uintptr_t>(c);
        const bool aliased = residual && cb < yb + y_bytes && yb < cb + y_bytes;
        const int pick =
            impl_->time_candidates(*p, results, found, x, T, in, out, w, c, y, y_bytes, aliased, beta, stream);
        if (pick >= 0) {
          p->algo = results[pick].algo;
          impl_->tuned.emplace(bkey, p->algo);
        }
      } else if (tune) {
        impl_->tuned.emplace(bkey, p->algo);  // a single candidate: nothing to time
      }
    }
    it = impl_->plans.emplace(key, std::move(p)).first;
  }
  Plan& p = *it->second;
  if (bias)
    KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  cublasStatus_t st = cublasLtMatmul(impl_->handle, p.desc, &alpha, w, p.a, x, p.b, &beta, c, p.c, y, p.c, &p.algo,
                                     impl_->workspace, impl_->workspace_bytes, stream);
  if (st != CUBLAS_STATUS_SUCCESS && p.reused) {
    // cublasLtMatmulAlgoCheck does not promise that the algorithm runs: a tuned one taken over from another T
    // that is refused gives way to the heuristic's choice for this shape, for good.
    p.algo = p.heuristic;
    p.reused = false;
    st = cublasLtMatmul(impl_->handle, p.desc, &alpha, w, p.a, x, p.b, &beta, c, p.c, y, p.c, &p.algo, impl_->workspace,
                        impl_->workspace_bytes, stream);
  }
  KILN_CUBLAS_CHECK(st);
}

}  // namespace kiln::cuda
