// RMSNorm and LayerNorm, each optionally fused with the residual add: one CTA per row, 16-byte accesses; and
// the norms of the fp32 residual stream (norm_f32).
#include <algorithm>

#include "kernels/cuda/cuda_common.cuh"

namespace kiln::cuda {
namespace {

struct NormArgs {
  const void* x;
  void* residual;  // non-null: residual += x, then normalize residual
  const void* w;
  const void* b;
  void* y;
  int64_t dim, ldx, ldy;
  float eps;
  bool add_one;
};

// kVec: dim, strides and pointers allow 8-element (16-byte) accesses.
template <typename T, bool kRms, bool kVec>
__global__ void norm_kernel(NormArgs a) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const T* x = static_cast<const T*>(a.x) + row * a.ldx;
  T* res = a.residual ? static_cast<T*>(a.residual) + row * a.dim : nullptr;
  T* y = static_cast<T*>(a.y) + row * a.ldy;
  const T* w = static_cast<const T*>(a.w);
  const T* bias = static_cast<const T*>(a.b);
  const int64_t dim = a.dim;
  // The values normalized: x, or the updated residual (rounded to T as it is stored).
  const T* src = res ? res : x;

  float s1 = 0.0f, s2 = 0.0f;
  if constexpr (kVec) {
    for (int64_t c = threadIdx.x; c < dim / 8; c += blockDim.x) {
      float v[8];
      load8(x + c * 8, v);
      if (res) {
        float r[8];
        load8(res + c * 8, r);
#pragma unroll
        for (int i = 0; i < 8; ++i) v[i] = to_f(from_f<T>(r[i] + v[i]));
        store8(res + c * 8, v);
      }
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        s1 += v[i];
        s2 += v[i] * v[i];
      }
    }
  } else {
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
      float v = to_f(x[i]);
      if (res) {
        const T r = from_f<T>(to_f(res[i]) + v);
        res[i] = r;
        v = to_f(r);
      }
      s1 += v;
      s2 += v * v;
    }
  }
  float inv, mean = 0.0f;
  if constexpr (kRms) {
    s2 = block_sum(s2, scratch);
    inv = rsqrtf(s2 / static_cast<float>(dim) + a.eps);
  } else {
    s1 = block_sum(s1, scratch);
    mean = s1 / static_cast<float>(dim);
    // Second pass for the variance (as the CPU does): E[x^2] - mean^2 cancels badly.
    float s3 = 0.0f;
    if constexpr (kVec) {
      for (int64_t c = threadIdx.x; c < dim / 8; c += blockDim.x) {
        float v[8];
        load8(src + c * 8, v);
#pragma unroll
        for (int i = 0; i < 8; ++i) s3 += (v[i] - mean) * (v[i] - mean);
      }
    } else {
      for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
        const float d = to_f(src[i]) - mean;
        s3 += d * d;
      }
    }
    s3 = block_sum(s3, scratch);
    inv = rsqrtf(s3 / static_cast<float>(dim) + a.eps);
  }

  const float one = a.add_one ? 1.0f : 0.0f;
  if constexpr (kVec) {
    for (int64_t c = threadIdx.x; c < dim / 8; c += blockDim.x) {
      float v[8];
      load8(src + c * 8, v);
      float wv[8] = {1, 1, 1, 1, 1, 1, 1, 1}, bv[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      if (w) {
        load8(w + c * 8, wv);
#pragma unroll
        for (int i = 0; i < 8; ++i) wv[i] += one;
      }
      if (bias) load8(bias + c * 8, bv);
#pragma unroll
      for (int i = 0; i < 8; ++i) v[i] = (v[i] - mean) * inv * wv[i] + bv[i];
      store8(y + c * 8, v);
    }
  } else {
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
      float v = (to_f(src[i]) - mean) * inv;
      if (w) v *= to_f(w[i]) + one;
      if (bias) v += to_f(bias[i]);
      y[i] = from_f<T>(v);
    }
  }
}

// Rows of up to 8192 elements: each of 128 threads keeps its kPer 16-byte chunks in registers, so the row
// is read once and every load is in flight before the first reduction.
template <typename T, bool kRms, int kPer>
__global__ void __launch_bounds__(128) norm_reg_kernel(NormArgs a) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const T* x = static_cast<const T*>(a.x) + row * a.ldx;
  T* res = a.residual ? static_cast<T*>(a.residual) + row * a.dim : nullptr;
  T* y = static_cast<T*>(a.y) + row * a.ldy;
  const T* w = static_cast<const T*>(a.w);
  const T* bias = static_cast<const T*>(a.b);
  const int chunks = static_cast<int>(a.dim / 8);
  float v[kPer][8];
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int c = threadIdx.x + i * 128;
    if (c < chunks) load8(x + c * 8, v[i]);
  }
  if (res) {
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      const int c = threadIdx.x + i * 128;
      if (c >= chunks) continue;
      float r[8];
      load8(res + c * 8, r);
#pragma unroll
      for (int j = 0; j < 8; ++j) v[i][j] = to_f(from_f<T>(r[j] + v[i][j]));
      store8(res + c * 8, v[i]);
    }
  }
  float s1 = 0.0f, s2 = 0.0f;
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    if (static_cast<int>(threadIdx.x) + i * 128 >= chunks) continue;
#pragma unroll
    for (int j = 0; j < 8; ++j) s1 += v[i][j], s2 += v[i][j] * v[i][j];
  }
  float inv, mean = 0.0f;
  if constexpr (kRms) {
    inv = rsqrtf(block_sum(s2, scratch) / static_cast<float>(a.dim) + a.eps);
  } else {
    mean = block_sum(s1, scratch) / static_cast<float>(a.dim);
    float s3 = 0.0f;
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      if (static_cast<int>(threadIdx.x) + i * 128 >= chunks) continue;
#pragma unroll
      for (int j = 0; j < 8; ++j) s3 += (v[i][j] - mean) * (v[i][j] - mean);
    }
    inv = rsqrtf(block_sum(s3, scratch) / static_cast<float>(a.dim) + a.eps);
  }
  const float one = a.add_one ? 1.0f : 0.0f;
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int c = threadIdx.x + i * 128;
    if (c >= chunks) continue;
    float wv[8] = {1, 1, 1, 1, 1, 1, 1, 1}, bv[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    if (w) {
      load8(w + c * 8, wv);
#pragma unroll
      for (int j = 0; j < 8; ++j) wv[j] += one;
    }
    if (bias) load8(bias + c * 8, bv);
#pragma unroll
    for (int j = 0; j < 8; ++j) v[i][j] = (v[i][j] - mean) * inv * wv[j] + bv[j];
    store8(y + c * 8, v[i]);
  }
}

template <typename T, int kPer>
void launch_norm_reg(bool rms, const NormArgs& a, dim3 grid, cudaStream_t stream) {
  if (rms)
    norm_reg_kernel<T, true, kPer><<<grid, 128, 0, stream>>>(a);
  else
    norm_reg_kernel<T, false, kPer><<<grid, 128, 0, stream>>>(a);
}

void launch_norm(ElemType t, bool rms, const NormArgs& a, int64_t rows, cudaStream_t stream) {
  if (rows <= 0) return;
  KILN_CHECK(a.dim > 0, "norm: dimension must be positive, got {}", a.dim);
  const bool vec = a.dim % 8 == 0 && a.ldx % 8 == 0 && a.ldy % 8 == 0 && aligned16(a.x) && aligned16(a.y) &&
                   (!a.residual || aligned16(a.residual)) && (!a.w || aligned16(a.w)) && (!a.b || aligned16(a.b));
  const int64_t work = vec ? a.dim / 8 : a.dim;
  int threads = static_cast<int>(std::min<int64_t>(512, (work + 31) / 32 * 32));
  threads = std::max(threads, 32);
  KILN_CHECK(rows <= 0x7fffffff, "norm: {} rows is too many for one launch", rows);
  const dim3 grid(static_cast<unsigned>(rows));
  if (vec && a.dim <= 8 * 128 * 8) {
    const int64_t per = (a.dim / 8 + 127) / 128;
    KILN_DISPATCH_16(t, T, {
      if (per <= 1)
        launch_norm_reg<T, 1>(rms, a, grid, stream);
      else if (per <= 2)
        launch_norm_reg<T, 2>(rms, a, grid, stream);
      else if (per <= 4)
        launch_norm_reg<T, 4>(rms, a, grid, stream);
      else
        launch_norm_reg<T, 8>(rms, a, grid, stream);
    });
    KILN_CUDA_LAUNCH_CHECK();
    return;
  }
  KILN_DISPATCH_16(t, T, {
    if (rms) {
      if (vec)
        norm_kernel<T, true, true><<<grid, threads, 0, stream>>>(a);
      else
        norm_kernel<T, true, false><<<grid, threads, 0, stream>>>(a);
    } else {
      if (vec)
        norm_kernel<T, false, true><<<grid, threads, 0, stream>>>(a);
      else
        norm_kernel<T, false, false><<<grid, threads, 0, stream>>>(a);
    }
  });
  KILN_CUDA_LAUNCH_CHECK();
}

// norm_f32: one CTA per output row; fp32 row in, fp32 statistics, 16-bit or fp32 out.
template <typename TO, bool kLayer>
__global__ void norm_f32_kernel(const float* x, const int32_t* rows_idx, const float* w, const float* b, TO* y,
                                int64_t dim, float eps, float one, bool accumulate) {
  __shared__ float scratch[32];
  const int64_t r = blockIdx.x;
  const float* xr = x + (rows_idx ? static_cast<int64_t>(rows_idx[r]) : r) * dim;
  TO* yr = y + r * dim;
  float mean = 0.0f, inv;
  if constexpr (kLayer) {
    float s1 = 0.0f;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) s1 += xr[i];
    mean = block_sum(s1, scratch) / static_cast<float>(dim);
    float s2 = 0.0f;  // a second pass (E[x^2] - mean^2 cancels badly), as the CPU does
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
      const float d = xr[i] - mean;
      s2 += d * d;
    }
    inv = rsqrtf(block_sum(s2, scratch) / static_cast<float>(dim) + eps);
  } else {
    float s2 = 0.0f;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) s2 += xr[i] * xr[i];
    inv = rsqrtf(block_sum(s2, scratch) / static_cast<float>(dim) + eps);
  }
  // Each thread reads back only the elements it writes, after both reductions: x may equal y.
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    float v = (xr[i] - mean) * inv;
    if (w) v *= w[i] + one;
    if (b) v += b[i];
    if constexpr (sizeof(TO) == sizeof(float)) {
      if (accumulate) v += to_f(yr[i]);
    }
    yr[i] = from_f_sat<TO>(v);
  }
}

// The same with the row held in registers: float4 loads, kMaxVec of them per thread (dim a multiple of 4 up to
// 4 * kMaxVec * blockDim.x; x, w, b and an fp32 y 16-byte aligned, a 16-bit y 8-byte aligned). One read of x, one
// write of y: the op is bound by memory, which the scalar kernel's three passes over x are not.
template <typename TO, bool kLayer, int kMaxVec>
__global__ void norm_f32_vec_kernel(const float* x, const int32_t* rows_idx, const float* w, const float* b, TO* y,
                                    int64_t dim, float eps, float one, bool accumulate) {
  __shared__ float scratch[32];
  const int64_t r = blockIdx.x;
  const float4* xr = reinterpret_cast<const float4*>(x + (rows_idx ? static_cast<int64_t>(rows_idx[r]) : r) * dim);
  const int n4 = static_cast<int>(dim / 4);
  float4 v[kMaxVec];
  float s1 = 0.0f;
#pragma unroll
  for (int j = 0; j < kMaxVec; ++j) {
    const int c = j * blockDim.x + threadIdx.x;
    v[j] = c < n4 ? xr[c] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if constexpr (kLayer) s1 += (v[j].x + v[j].y) + (v[j].z + v[j].w);
  }
  float mean = 0.0f;
  if constexpr (kLayer) mean = block_sum(s1, scratch) / static_cast<float>(dim);
  float s2 = 0.0f;
#pragma unroll
  for (int j = 0; j < kMaxVec; ++j) {
    const int c = j * blockDim.x + threadIdx.x;
    if (c >= n4) continue;
    const float a = v[j].x - mean, bb = v[j].y - mean, cc = v[j].z - mean, d = v[j].w - mean;
    s2 += (a * a + bb * bb) + (cc * cc + d * d);
  }
  const float inv = rsqrtf(block_sum(s2, scratch) / static_cast<float>(dim) + eps);
  TO* yr = y + r * dim;
#pragma unroll
  for (int j = 0; j < kMaxVec; ++j) {
    const int c = j * blockDim.x + threadIdx.x;
    if (c >= n4) continue;
    float o[4] = {(v[j].x - mean) * inv, (v[j].y - mean) * inv, (v[j].z - mean) * inv, (v[j].w - mean) * inv};
    if (w) {
      const float4 wv = reinterpret_cast<const float4*>(w)[c];
      o[0] *= wv.x + one, o[1] *= wv.y + one, o[2] *= wv.z + one, o[3] *= wv.w + one;
    }
    if (b) {
      const float4 bv = reinterpret_cast<const float4*>(b)[c];
      o[0] += bv.x, o[1] += bv.y, o[2] += bv.z, o[3] += bv.w;
    }
    if constexpr (sizeof(TO) == sizeof(float)) {
      float4* yv = reinterpret_cast<float4*>(yr) + c;
      if (accumulate) {
        const float4 p = *yv;
        o[0] += p.x, o[1] += p.y, o[2] += p.z, o[3] += p.w;
      }
      *yv = make_float4(o[0], o[1], o[2], o[3]);
    } else {
      union {
        uint2 u;
        TO h[4];
      } pk;
#pragma unroll
      for (int k = 0; k < 4; ++k) pk.h[k] = from_f_sat<TO>(o[k]);
      reinterpret_cast<uint2*>(yr)[c] = pk.u;
    }
  }
}

template <typename TO>
void launch_norm_f32(bool layer, const float* x, const int32_t* rows_idx, const float* w, const float* b, void* y,
                     int64_t rows, int64_t dim, float eps, float one, bool accumulate, cudaStream_t stream) {
  const int threads = static_cast<int>(std::clamp<int64_t>((dim / 4 + 31) / 32 * 32, 32, 512));
  const dim3 grid(static_cast<unsigned>(rows));
  // The register kernel: 128..256 threads with up to 8 float4 each (dim <= 8192); 256 for dim 4096 (4 each).
  constexpr int kMaxVec = 8;
  const int vthreads = static_cast<int>(std::clamp<int64_t>((dim / 4 / 4 + 31) / 32 * 32, 128, 256));
  const bool vec = dim % 4 == 0 && dim / 4 <= int64_t{kMaxVec} * vthreads && aligned16(x) && (!w || aligned16(w)) &&
                   (!b || aligned16(b)) && reinterpret_cast<uintptr_t>(y) % (sizeof(TO) == 4 ? 16 : 8) == 0;
  if (vec) {
    if (layer)
      norm_f32_vec_kernel<TO, true, kMaxVec><<<grid, vthreads, 0, stream>>>(x, rows_idx, w, b, static_cast<TO*>(y),
                                                                           dim, eps, one, accumulate);
    else
      norm_f32_vec_kernel<TO, false, kMaxVec><<<grid, vthreads, 0, stream>>>(x, rows_idx, w, b, static_cast<TO*>(y),
                                                                            dim, eps, one, accumulate);
    return;
  }
  if (layer)
    norm_f32_kernel<TO, true><<<grid, threads, 0, stream>>>(x, rows_idx, w, b, static_cast<TO*>(y), dim, eps, one,
                                                            accumulate);
  else
    norm_f32_kernel<TO, false><<<grid, threads, 0, stream>>>(x, rows_idx, w, b, static_cast<TO*>(y), dim, eps, one,
                                                             accumulate);
}

}  // namespace

void rms_norm(ElemType t, const void* x, const void* w, void* y, int64_t rows, int64_t dim, float eps, bool add_one,
              cudaStream_t stream, int64_t ldx, int64_t ldy) {
  NormArgs a{x, nullptr, w, nullptr, y, dim, ldx ? ldx : dim, ldy ? ldy : dim, eps, add_one};
  launch_norm(t, true, a, rows, stream);
}

void add_rms_norm(ElemType t, const void* x, void* residual, const void* w, void* y, int64_t rows, int64_t dim,
                  float eps, bool add_one, cudaStream_t stream) {
  NormArgs a{x, residual, w, nullptr, y, dim, dim, dim, eps, add_one};
  launch_norm(t, true, a, rows, stream);
}

void layer_norm(ElemType t, const void* x, const void* w, const void* b, void* y, int64_t rows, int64_t dim, float eps,
                cudaStream_t stream) {
  NormArgs a{x, nullptr, w, b, y, dim, dim, dim, eps, false};
  launch_norm(t, false, a, rows, stream);
}

void add_layer_norm(ElemType t, const void* x, void* residual, const void* w, const void* b, void* y, int64_t rows,
                    int64_t dim, float eps, cudaStream_t stream) {
  NormArgs a{x, residual, w, b, y, dim, dim, dim, eps, false};
  launch_norm(t, false, a, rows, stream);
}

void norm_f32(ElemType out_type, bool layer_norm, const float* x, const float* w, const float* b, void* y,
              int64_t rows, int64_t dim, float eps, bool add_one, bool accumulate, const int32_t* rows_idx,
              cudaStream_t stream) {
  if (rows <= 0) return;
  KILN_CHECK(dim > 0, "norm: dimension must be positive, got {}", dim);
  KILN_CHECK(rows <= 0x7fffffff, "norm: {} rows is too many for one launch", rows);
  KILN_CHECK(!accumulate || out_type == ElemType::F32, "norm: only an fp32 output accumulates");
  KILN_CHECK(!accumulate || x != y, "norm: an accumulating norm cannot run in place");
  KILN_CHECK(!rows_idx || x != y, "norm: a gathering norm cannot run in place");
  const float one = add_one && !layer_norm ? 1.0f : 0.0f;
  if (out_type == ElemType::F32) {
    launch_norm_f32<float>(layer_norm, x, rows_idx, w, b, y, rows, dim, eps, one, accumulate, stream);
  } else {
    KILN_DISPATCH_16(out_type, T,
                     { launch_norm_f32<T>(layer_norm, x, rows_idx, w, b, y, rows, dim, eps, one, false, stream); });
  }
  KILN_CUDA_LAUNCH_CHECK();
}

}  // namespace kiln::cuda
