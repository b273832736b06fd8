// Element-wise ops: gated activations (SwiGLU, GeGLU) of a 16-bit gate|up buffer, 16-byte accesses; and the ops
// around the fp32 residual stream (embedding into fp32, activations of fp32 GEMM outputs, clamp, soft-cap).
#include <algorithm>
#include <type_traits>

#include "kernels/cuda/cuda_common.cuh"

namespace kiln::cuda {
namespace {

template <Act kAct>
__device__ __forceinline__ float act_one(float v) {
  if constexpr (kAct == Act::SiLU) {
    return v / (1.0f + __expf(-v));
  } else if constexpr (kAct == Act::GeluTanh) {
    constexpr float kC = 0.7978845608028654f;  // sqrt(2 / pi)
    return 0.5f * v * (1.0f + tanhf(kC * (v + 0.044715f * v * v * v)));
  } else {
    return 0.5f * v * (1.0f + erff(v * 0.7071067811865476f));
  }
}

// Grid: (rows, column chunks). kVec: 8 elements per thread.
template <typename T, Act kAct, bool kVec>
__global__ void gated_kernel(const T* gate, const T* up, T* out, int64_t n, int64_t ld_in) {
  const int64_t row = blockIdx.x;
  const T* g = gate + row * ld_in;
  const T* u = up + row * ld_in;
  T* o = out + row * n;
  if constexpr (kVec) {
    const int64_t c = blockIdx.y * static_cast<int64_t>(blockDim.x) + threadIdx.x;
    if (c * 8 >= n) return;
    float gv[8], uv[8];
    load8(g + c * 8, gv);
    load8(u + c * 8, uv);
    Vec8<T> v;
#pragma unroll
    for (int i = 0; i < 8; ++i) v.h[i] = from_f_sat<T>(act_one<kAct>(gv[i]) * uv[i]);
    *reinterpret_cast<uint4*>(o + c * 8) = v.u;
  } else {
    const int64_t i = blockIdx.y * static_cast<int64_t>(blockDim.x) + threadIdx.x;
    if (i >= n) return;
    o[i] = from_f_sat<T>(act_one<kAct>(to_f(g[i])) * to_f(u[i]));
  }
}

// embedding_f32: one CTA per token.
template <typename T>
__global__ void embedding_f32_kernel(const T* table, int64_t vocab, int64_t dim, const int32_t* ids, float scale,
                                     const T* pos_table, int64_t n_positions, const int32_t* positions, float* out) {
  const int64_t t = blockIdx.x;
  const int32_t id = ids[t];
  const bool valid = id >= 0 && id < vocab;
  const T* src = table + (valid ? static_cast<int64_t>(id) : 0) * dim;
  const T* prow = nullptr;
  if (pos_table) {
    const int32_t p = positions[t];
    if (p >= 0 && p < n_positions) prow = pos_table + static_cast<int64_t>(p) * dim;
  }
  float* o = out + t * dim;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    float v = valid ? to_f(src[i]) * scale : 0.0f;
    if (prow) v += to_f(prow[i]);
    o[i] = v;
  }
}

// activation_f32: grid (rows, column chunks).
template <typename T, Act kAct, bool kGated>
__global__ void activation_f32_kernel(const float* in, int64_t ld_in, T* out, int64_t n) {
  const int64_t row = blockIdx.x;
  const int64_t i = blockIdx.y * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const float* r = in + row * ld_in;
  float v = act_one<kAct>(r[i]);
  if constexpr (kGated) v *= r[n + i];
  out[row * n + i] = from_f_sat<T>(v);
}

// The same, four columns per thread in 16-byte loads (n and ld_in multiples of 4, `in` 16-byte and `out` 8-byte
// aligned): the op is bound by reading the fp32 input.
template <typename T, Act kAct, bool kGated>
__global__ void activation_f32_vec4_kernel(const float* in, int64_t ld_in, T* out, int64_t n) {
  const int64_t row = blockIdx.x;
  const int64_t i = 4 * (blockIdx.y * static_cast<int64_t>(blockDim.x) + threadIdx.x);
  if (i >= n) return;
  const float* r = in + row * ld_in;
  const float4 a = *reinterpret_cast<const float4*>(r + i);
  float v[4] = {act_one<kAct>(a.x), act_one<kAct>(a.y), act_one<kAct>(a.z), act_one<kAct>(a.w)};
  if constexpr (kGated) {
    const float4 u = *reinterpret_cast<const float4*>(r + n + i);
    v[0] *= u.x, v[1] *= u.y, v[2] *= u.z, v[3] *= u.w;
  }
  union {
    uint2 u;
    T h[4];
  } o;
#pragma unroll
  for (int j = 0; j < 4; ++j) o.h[j] = from_f_sat<T>(v[j]);
  *reinterpret_cast<uint2*>(out + row * n + i) = o.u;
}

template <typename T>
__global__ void clamp_kernel(T* x, int64_t n, float lo, float hi) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    x[i] = from_f<T>(fminf(fmaxf(to_f(x[i]), lo), hi));
}

__global__ void softcap_kernel(float* x, int64_t n, float cap) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    x[i] = cap * tanhf(x[i] / cap);
}

// Runs f(std::integral_constant<Act, act>) (a kernel per activation).
template <typename F>
void with_act(Act act, F&& f) {
  switch (act) {
    case Act::SiLU:
      return f(std::integral_constant<Act, Act::SiLU>{});
    case Act::GeluTanh:
      return f(std::integral_constant<Act, Act::GeluTanh>{});
    case Act::GeluErf:
      return f(std::integral_constant<Act, Act::GeluErf>{});
  }
}

unsigned grid_1d(int64_t n, int threads) {
  return static_cast<unsigned>(std::clamp<int64_t>((n + threads - 1) / threads, 1, 65535));
}

}  // namespace

void gated_activation(ElemType t, const void* gate, const void* up, void* out, int64_t rows, int64_t n, int64_t ld_in,
                      Act act, cudaStream_t stream) {
  if (rows <= 0 || n <= 0) return;
  KILN_CHECK(rows <= 0x7fffffff, "gated activation: {} rows is too many for one launch", rows);
  const bool vec = n % 8 == 0 && ld_in % 8 == 0 && aligned16(gate) && aligned16(up) && aligned16(out);
  const int threads = 256;
  const int64_t work = vec ? n / 8 : n;
  const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>((work + threads - 1) / threads));
  KILN_DISPATCH_16(t, T, {
    const T* g = static_cast<const T*>(gate);
    const T* u = static_cast<const T*>(up);
    T* o = static_cast<T*>(out);
    with_act(act, [&](auto act_tag) {
      constexpr Act kA = decltype(act_tag)::value;
      if (vec)
        gated_kernel<T, kA, true><<<grid, threads, 0, stream>>>(g, u, o, n, ld_in);
      else
        gated_kernel<T, kA, false><<<grid, threads, 0, stream>>>(g, u, o, n, ld_in);
    });
  });
  KILN_CUDA_LAUNCH_CHECK();
}

void embedding_f32(ElemType t, const void* table, int64_t vocab, int64_t dim, const int32_t* ids, int64_t T,
                   float scale, const void* pos_table, int64_t n_positions, const int32_t* positions, float* out,
                   cudaStream_t stream) {
  if (T <= 0) return;
  KILN_CHECK(T <= 0x7fffffff, "embedding: {} tokens is too many for one launch", T);
  KILN_CHECK(!pos_table || positions, "embedding: a position table needs the positions");
  const int threads = static_cast<int>(std::clamp<int64_t>((dim + 31) / 32 * 32, 32, 512));
  KILN_DISPATCH_16(t, E, {
    embedding_f32_kernel<E><<<static_cast<unsigned>(T), threads, 0, stream>>>(
        static_cast<const E*>(table), vocab, dim, ids, scale, static_cast<const E*>(pos_table), n_positions, positions,
        out);
  });
  KILN_CUDA_LAUNCH_CHECK();
}

void activation_f32(ElemType t, const float* in, int64_t ld_in, void* out, int64_t rows, int64_t n, Act act, bool gated,
                    cudaStream_t stream) {
  if (rows <= 0 || n <= 0) return;
  KILN_CHECK(rows <= 0x7fffffff, "activation: {} rows is too many for one launch", rows);
  KILN_CHECK(ld_in >= (gated ? 2 * n : n), "activation: input row stride {} is too small for {} columns", ld_in, n);
  const int threads = 256;
  const bool vec = n % 4 == 0 && ld_in % 4 == 0 && aligned16(in) && reinterpret_cast<uintptr_t>(out) % 8 == 0;
  const int64_t per_row = vec ? n / 4 : n;
  const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>((per_row + threads - 1) / threads));
  KILN_DISPATCH_16(t, T, {
    T* o = static_cast<T*>(out);
    auto launch = [&](auto act_tag, auto gated_tag) {
      constexpr Act kA = decltype(act_tag)::value;
      constexpr bool kG = decltype(gated_tag)::value;
      if (vec)
        activation_f32_vec4_kernel<T, kA, kG><<<grid, threads, 0, stream>>>(in, ld_in, o, n);
      else
        activation_f32_kernel<T, kA, kG><<<grid, threads, 0, stream>>>(in, ld_in, o, n);
    };
    with_act(act, [&](auto act_tag) {
      if (gated)
        launch(act_tag, std::true_type{});
      else
        launch(act_tag, std::false_type{});
    });
  });
  KILN_CUDA_LAUNCH_CHECK();
}

void clamp(ElemType t, void* x, int64_t n, float lo, float hi, cudaStream_t stream) {
  if (n <= 0) return;
  KILN_DISPATCH_16(t, T, { clamp_kernel<T><<<grid_1d(n, 256), 256, 0, stream>>>(static_cast<T*>(x), n, lo, hi); });
  KILN_CUDA_LAUNCH_CHECK();
}

void softcap(float* x, int64_t n, float cap, cudaStream_t stream) {
  if (n <= 0) return;
  KILN_CHECK(cap > 0.0f, "softcap: the cap must be positive, got {}", cap);
  softcap_kernel<<<grid_1d(n, 256), 256, 0, stream>>>(x, n, cap);
  KILN_CUDA_LAUNCH_CHECK();
}

}  // namespace kiln::cuda
