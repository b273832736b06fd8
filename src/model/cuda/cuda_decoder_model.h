// CudaDecoderModel: the decoder of every family on one GPU — bf16 or f16 weights, activations and paged KV (or an
// fp8 KV cache), fp32 accumulation and residual stream — running the same recipe and weights as the CPU backend.
// Only in CUDA builds. The pieces live beside it: device memory (device_memory), KV storage (kv_storage), the
// workspace (cuda_workspace), the step's metadata (step_meta), timing (profiler), the forward's ops (cuda_forward).
#pragma once

#ifdef KILN_HAVE_CUDA

#include <memory>
#include <optional>

#include "model/decoder_model.h"
#include "model/weights.h"

namespace kiln {

// Sizes of the CUDA backend that tests set (LoadOptions holds the rest).
struct CudaModelOptions {
  // Rows one pass of forward() (the KvState path) handles; longer prompts run as chunks.
  int64_t max_state_tokens = 2048;
  // Rows of logits computed per lm_head GEMM (all_logits runs in slices of this many; a workspace holds
  // min(this, its max_tokens) fp32 rows, 0.5 MiB each for a 128K vocabulary).
  int64_t max_logit_rows = 512;
  // Tokens per KV block of the states this model makes.
  int32_t state_block_size = 16;
};

class CudaDecoderModel final : public DecoderModel {
 public:
  // Reads every tensor from `source` (decoder_weights.h), converts the matrices to bf16/f16 (options.compute_dtype;
  // unset: f16, or bf16 when a weight is outside the f16 range) and uploads them once, with q|k|v and gate|up fused.
  // Throws kiln::Error (one line) for what this backend does not run (an odd head_dim or one over 256, an f32
  // compute type, a quantized format it has no kernels for) or when the device lacks memory.
  static std::unique_ptr<CudaDecoderModel> create(ModelConfig config, const WeightSource& source,
                                                  const LoadOptions& options, const CudaModelOptions& cuda = {});
  ~CudaDecoderModel() override;

  Device device() const override { return Device::CUDA; }
  DType compute_dtype() const override;
  size_t weight_bytes() const override;  // on the device
  int64_t kv_block_bytes(int32_t block_size) const override;
  std::unique_ptr<KvPool> new_kv_pool(int64_t num_blocks, int32_t block_size) const override;
  int64_t workspace_bytes(int64_t max_tokens) const override;
  std::unique_ptr<Workspace> new_workspace(int64_t max_tokens) const override;
  void forward_batch(KvPool& pool, Workspace& ws, const ForwardBatch& batch,
                     std::vector<float>& logits) const override;
  // Samples on the GPU: only ids and log-probs come back (to pinned memory), never logits. Pure-decode steps replay
  // a CUDA graph per batch bucket (1, 2, 4, 8, 16, 24, 32, 48, 64, then steps of 32 to 256 and of 64 beyond) and
  // block-table width (a power of two), captured the second time it is used.
  bool samples_on_device() const override { return true; }
  void forward_batch_sample(KvPool& pool, Workspace& ws, const ForwardBatch& batch, std::span<const RowSampling> rows,
                            BatchSamples& out) const override;
  ModelStats stats() const override;
  Memory memory() const override;  // the GPU's total and free memory
  // The batch size a pure-decode step of n sequences is padded to for its CUDA graph.
  static int64_t graph_bucket(int64_t n);

  struct Impl;

 private:
  CudaDecoderModel();
  int32_t state_block_size(int64_t capacity) const override;
  int64_t state_chunk_tokens(int64_t capacity) const override;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln

#endif  // KILN_HAVE_CUDA
