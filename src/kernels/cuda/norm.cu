// RMSNorm and LayerNorm of the fp32 residual stream (norm_f32): a row per CTA, fp32 statistics, 16-bit or fp32 out.
#include <algorithm>

#include "kernels/cuda/cuda_common.cuh"

namespace kiln::cuda {
namespace {

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
