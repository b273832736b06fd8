// CudaDecoderModel: the decoder forward of every family DecoderModel runs (the same ModelConfig traits) on the GPU:
// bf16 or f16 weights, GEMM inputs and KV cache, fp32 accumulation, an fp32 residual stream, fp32 norm weights.
// Behind the same Model interface as the CPU DecoderModel. Only in CUDA builds.
#pragma once

#ifdef KILN_HAVE_CUDA

#include <memory>
#include <optional>

#include "kiln/model.h"
#include "model/weights.h"

namespace kiln {

struct CudaModelOptions {
  int device = 0;
  // Rows one pass of forward() (the KvState path) handles; longer prompts run as chunks (chunked prefill). Its
  // activation workspace is made at the first forward(); a KvPool holds its own, sized for its max_batch_tokens.
  int64_t max_num_tokens = 2048;
  // Rows of logits computed per lm_head GEMM (all_logits runs in slices of this many; a pool's workspace holds
  // min(this, its max_batch_tokens) fp32 rows, 0.5 MiB each for a 128K vocabulary).
  int64_t max_logit_rows = 512;
  // forward_batch_sample replays a CUDA graph for pure-decode steps: batch sizes are padded to a bucket
  // (1, 2, 4, 8, 16, 24, 32, 48, 64, then steps of 32 to 256 and of 64 beyond) and block tables to a power of
  // two; a bucket is captured the second time it is used.
  bool cuda_graphs = true;
  // Tokens per KV block of the states this model makes.
  int32_t block_size = 16;
  // Weights, activations and KV cache: BF16 or F16. Unset: F16, whatever the checkpoint's type (falling back to
  // BF16 when a weight is outside the f16 range; the residual stream is fp32 either way).
  std::optional<DType> dtype;
  // The KV cache as fp8 e4m3 (LoadOptions::kv_cache_fp8); K and V are widened exactly to the compute type in
  // the attention kernels.
  bool kv_fp8 = false;
};

class CudaDecoderModel final : public Model {
 public:
  // Reads every tensor from `source` (the plan DecoderModel uses, model/weight_plan.h), converts the matrices to
  // bf16/f16 and uploads them once, with q|k|v and gate|up fused (norm weights and the biases of fp32 GEMM
  // outputs stay fp32). Throws kiln::Error (one line) for what this backend does not run (an odd head_dim or
  // one over 256, an f32 compute type) or when the device lacks memory.
  static std::unique_ptr<CudaDecoderModel> create(ModelConfig config, const WeightSource& source,
                                                  const LoadOptions& options, const CudaModelOptions& cuda = {});
  ~CudaDecoderModel() override;

  const ModelConfig& config() const override;
  int64_t num_parameters() const override;
  size_t weight_bytes() const override;  // on the device
  // A per-sequence paged KV cache on the device (blocks of CudaModelOptions::block_size, in order).
  std::unique_ptr<KvState> new_state(int64_t capacity) const override;
  void forward(KvState& state, std::span<const int32_t> tokens, std::vector<float>& logits,
               bool all_logits = false) const override;
  // The paged path (the runtime's): blocks of [layer][k|v][kv_head][block_size][head_dim] on the device, block
  // tables and batch metadata uploaded once per step, logits copied back for the wanted rows only.
  int64_t kv_block_bytes(int32_t block_size) const override;
  std::unique_ptr<KvPool> new_kv_pool(int64_t num_blocks, int32_t block_size, int64_t max_batch_tokens) const override;
  void forward_batch(KvPool& pool, const ForwardBatch& batch, std::vector<float>& logits) const override;
  int64_t kv_memory_available() const override;  // free device memory
  // Samples on the GPU: only ids and log-probs come back (to pinned memory), never logits.
  bool samples_on_device() const override { return true; }
  void forward_batch_sample(KvPool& pool, const ForwardBatch& batch, std::span<const RowSampling> rows,
                            BatchSamples& out) const override;
  ModelStats stats() const override;
  // What weights, activations and the KV cache are stored as (BF16 or F16).
  DType compute_dtype() const;
  // The batch size a pure-decode step of n sequences is padded to for its CUDA graph.
  static int64_t graph_bucket(int64_t n);

  struct Impl;

 private:
  CudaDecoderModel();
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln

#endif  // KILN_HAVE_CUDA
