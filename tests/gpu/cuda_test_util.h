// Helpers for the GPU tests: device buffers, bf16/f16 rounding on the host, random data, error norms.
#pragma once

#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_ops.h"
#include "kiln/dtype.h"
#include "kiln/model.h"

namespace kiln::testing {

inline void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}
#define KILN_TEST_CUDA(expr) ::kiln::testing::cuda_ok((expr), #expr)

#define KILN_REQUIRE_GPU() \
  ASSERT_GT(::kiln::cuda::device_count(), 0) << "no CUDA device: run the gpu label on a GPU machine"

// A device allocation of n elements of T, freed on destruction.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n) : n_(n) {
    if (n) KILN_TEST_CUDA(cudaMalloc(&p_, n * sizeof(T)));
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { upload(host); }
  ~DeviceBuffer() {
    if (p_) cudaFree(p_);
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr, o.n_ = 0; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    return *this;
  }
  T* get() const { return p_; }
  size_t size() const { return n_; }
  void upload(const std::vector<T>& host) {
    if (host.size() != n_) throw std::runtime_error("upload size mismatch");
    if (n_) KILN_TEST_CUDA(cudaMemcpy(p_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    KILN_TEST_CUDA(cudaDeviceSynchronize());
    std::vector<T> h(n_);
    if (n_) KILN_TEST_CUDA(cudaMemcpy(h.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
  // Fills every byte with 0xff: NaN in f32/f16/bf16, so an element nothing wrote shows up.
  void poison() {
    if (n_) KILN_TEST_CUDA(cudaMemset(p_, 0xff, n_ * sizeof(T)));
  }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

inline uint16_t to_bits(float f, cuda::ElemType t) {
  return t == cuda::ElemType::BF16 ? f32_to_bf16(f) : f32_to_f16(f);
}
inline float from_bits(uint16_t b, cuda::ElemType t) {
  return t == cuda::ElemType::BF16 ? bf16_to_f32(b) : f16_to_f32(b);
}
inline const char* type_name(cuda::ElemType t) {
  return t == cuda::ElemType::BF16 ? "bf16" : "f16";
}

// Values in 16-bit form (for the device) and the same values as floats (for the CPU reference).
struct Half16 {
  std::vector<uint16_t> bits;
  std::vector<float> f;
};

inline Half16 round16(const std::vector<float>& v, cuda::ElemType t) {
  Half16 r;
  r.bits.resize(v.size());
  r.f.resize(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    r.bits[i] = to_bits(v[i], t);
    r.f[i] = from_bits(r.bits[i], t);
  }
  return r;
}

inline std::vector<float> to_float(const std::vector<uint16_t>& bits, cuda::ElemType t) {
  std::vector<float> f(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) f[i] = from_bits(bits[i], t);
  return f;
}

inline std::vector<float> randn(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// ‖got − want‖ / ‖want‖ over all elements; NaN anywhere gives infinity.
inline double rel_err(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) return INFINITY;
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    const double d = static_cast<double>(got[i]) - want[i];
    num += d * d;
    den += static_cast<double>(want[i]) * want[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// Relative error allowed for outputs rounded to a 16-bit type after fp32 arithmetic on rounded inputs.
inline double tol16(cuda::ElemType t) {
  return t == cuda::ElemType::BF16 ? 1e-2 : 2e-3;
}

// A two-layer Llama with head_dim 64 (the tensor-core attention kernels) and seeded random bf16 weights, on the GPU;
// its config.json is written to a temporary folder named `name`.
inline std::shared_ptr<const Model> random_llama_hd64(const std::string& name, uint64_t seed, bool cuda_graphs = true) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / name;
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "config.json") << R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "vocab_size": 1000, "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 1024,
    "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "torch_dtype": "bfloat16", "bos_token_id": 1,
    "eos_token_id": 2, "tie_word_embeddings": false})";
  LoadOptions o;
  o.device = Device::CUDA;
  o.random_weights = true;
  o.random_seed = seed;
  o.cuda_graphs = cuda_graphs;
  return std::shared_ptr<const Model>(Model::load((dir / "config.json").string(), o));
}

// fp8 e4m3 bits of f by NVIDIA's conversion (cuda_fp8.h: nearest even, saturating), and the value of bits.
inline uint8_t fp8_bits(float f) { return __nv_cvt_float_to_fp8(f, __NV_SATFINITE, __NV_E4M3); }
inline float fp8_value(uint8_t b) {
  return static_cast<float>(__half(__nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(b), __NV_E4M3)));
}

}  // namespace kiln::testing
