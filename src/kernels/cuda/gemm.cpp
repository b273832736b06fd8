// GEMM through cuBLASLt: y = x·Wᵀ (+ bias) (+ residual) with fp32 accumulation; one plan per shape, cached.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <unordered_map>

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
  cublasLtMatmulAlgo_t algo{};
  ~Plan() {
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

}  // namespace

struct Gemm::Impl {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  std::unordered_map<Key, std::unique_ptr<Plan>, KeyHash> plans;
};

Gemm::Gemm(void* workspace, size_t workspace_bytes) : impl_(std::make_unique<Impl>()) {
  KILN_CUBLAS_CHECK(cublasLtCreate(&impl_->handle));
  impl_->workspace = workspace;
  impl_->workspace_bytes = workspace ? workspace_bytes : 0;
}

Gemm::~Gemm() {
  impl_->plans.clear();
  if (impl_->handle) cublasLtDestroy(impl_->handle);
}

size_t Gemm::cached_plans() const {
  return impl_->plans.size();
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

    cublasLtMatmulPreference_t pref = nullptr;
    KILN_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const uint64_t ws = impl_->workspace_bytes;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &key.al_a, 4);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &key.al_b, 4);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &key.al_c, 4);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &key.al_d, 4);
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t st =
        cublasLtMatmulAlgoGetHeuristic(impl_->handle, p->desc, p->a, p->b, p->c, p->c, pref, 1, &result, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    KILN_CUBLAS_CHECK(st);
    KILN_CHECK(found > 0, "GEMM: cuBLASLt has no algorithm for T={} in={} out={}", T, in, out);
    p->algo = result.algo;
    it = impl_->plans.emplace(key, std::move(p)).first;
  }
  Plan& p = *it->second;
  if (bias)
    KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  const float alpha = 1.0f, beta = residual ? 1.0f : 0.0f;
  const void* c = residual ? residual : y;
  KILN_CUBLAS_CHECK(cublasLtMatmul(impl_->handle, p.desc, &alpha, w, p.a, x, p.b, &beta, c, p.c, y, p.c, &p.algo,
                                   impl_->workspace, impl_->workspace_bytes, stream));
}

}  // namespace kiln::cuda
