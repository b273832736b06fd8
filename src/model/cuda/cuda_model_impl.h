// What the CUDA model's files share: the model's device state (CudaDecoderModel::Impl) and the recipe's operations
// on the CUDA kernels (CudaOps).
#pragma once

#ifdef KILN_HAVE_CUDA

#include <cuda_runtime.h>

#include <atomic>
#include <memory>

#include "kernels/cuda/cuda_ops.h"
#include "model/cuda/cuda_decoder_model.h"
#include "model/cuda/cuda_workspace.h"
#include "model/cuda/device_memory.h"
#include "model/cuda/kv_storage.h"
#include "model/cuda/profiler.h"
#include "model/cuda/step_meta.h"
#include "model/decoder_recipe.h"

namespace kiln {

struct CudaDecoderModel::Impl {
  explicit Impl(const LoadOptions& o) : prof(o.profile), step_timer(o.time_steps) {}
  ~Impl() {
    gemm.reset();
    if (stream) cudaStreamDestroy(stream);
  }

  CudaModelOptions opt;
  int device = 0;
  DType dtype = DType::F16;
  cuda::ElemType et = cuda::ElemType::F16;
  bool kv_fp8 = false;
  bool cuda_graphs = true;  // LoadOptions::cuda_graphs
  // gate|up GEMM output in 16 bits (f16 compute, a gated MLP, the layer's gate|up without a bias): the activation's
  // input is then f16 (|x| <= 65504, ten mantissa bits, against fp32 otherwise): half the bytes written and read
  // between the GEMM and the activation.
  bool mlp16 = false;
  cudadev::DeviceArena weights;
  cudadev::DeviceMem inv_freq;      // double [rotary_dim / 2]
  cudadev::DeviceMem alibi_slopes;  // float [num_heads] (ALiBi models)
  cudaStream_t stream = nullptr;
  int num_sms = 0;
  cudadev::DeviceMem gemm_ws;
  std::unique_ptr<cuda::Gemm> gemm;
  cudadev::WorkspaceShape ws_shape;

  mutable cudadev::OpProfile prof;
  mutable cudadev::StepTimer step_timer;
  // Counters of stats() (atomic: read from other threads).
  mutable std::atomic<int64_t> graph_captures{0}, graph_replays{0}, eager_steps{0};
  mutable std::atomic<double> last_step_gpu_ms{-1.0};
  int64_t fault_after_steps = 0;  // LoadOptions::fault_after_steps
  mutable int64_t passes = 0;

  void mark(const char* op) const { prof.mark(op, stream); }
};

// The recipe's operations over one pass on the CUDA kernels: device work only, enqueued on the model's stream (no host
// synchronization, no allocation), so CUDA graphs capture it. gemms_only: only the linears run (the GEMM tuning pass).
class CudaOps final : public ForwardOps {
 public:
  CudaOps(const ModelConfig& c, const CudaDecoderModel::Impl& m, cudadev::CudaWorkspace& ws,
          const cudadev::KvLayout& kv, const cudadev::StepMeta& meta, bool gemms_only = false);

  void embed(const Linear& table, float scale, const void* positions) override;
  void norm(const NormWeights& n, Buf in, Buf out, bool accumulate) override;
  void linear(const Linear& w, Buf in, Buf out, bool accumulate) override;
  void clamp(Buf buf, float limit) override;
  void rope_kv_write(const LayerWeights& L, int64_t layer, bool rotary) override;
  void attention(const AttentionParams& p) override;
  void activation() override;

  // The tail: the final norm of the logit rows (gathered) into H, lm_head over rows [r0, r0 + rows) of it into the
  // workspace's logits (+ bias, final soft-cap), and the sampling kernel over such a slice.
  void final_norm(const NormWeights& n);
  void lm_head(const Linear& w, int64_t r0, int64_t rows);
  void sample(int64_t r0, int64_t rows, int32_t top_k);

 private:
  void* buf(Buf b) const;
  const ModelConfig& c_;
  const CudaDecoderModel::Impl& m_;
  cudadev::CudaWorkspace& ws_;
  const cudadev::KvLayout& kv_;
  const cudadev::StepMeta& meta_;
  bool gemms_only_;
  bool mlp_in_16_ = false;  // what the last MLP input GEMM wrote (mlp16 layers)
  int64_t nq_ = 0, nkv_ = 0, ld_qkv_ = 0;
};

}  // namespace kiln

#endif  // KILN_HAVE_CUDA
