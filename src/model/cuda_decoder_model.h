// CudaDecoderModel: the decoder forward of the Llama family on the GPU (bf16 weights and activations, fp32
// accumulation), behind the same Model interface as the CPU DecoderModel. Only in CUDA builds.
#pragma once

#ifdef KILN_HAVE_CUDA

#include <memory>

#include "model/model.h"
#include "model/weights.h"

namespace kiln {

struct CudaModelOptions {
  int device = 0;
  // Rows one pass of the forward handles; longer prompts run as chunks (chunked prefill). The activation
  // workspace is sized for this at creation, so no forward allocates.
  int64_t max_num_tokens = 2048;
  // Rows of logits computed per lm_head GEMM (all_logits runs in slices of this many).
  int64_t max_logit_rows = 64;
  // Tokens per KV block of the states this model makes.
  int32_t block_size = 16;
};

class CudaDecoderModel final : public Model {
 public:
  // Reads every tensor from `source` (as DecoderModel does), converts to bf16 and uploads it once, with
  // q|k|v and gate|up fused. Throws kiln::Error for a configuration this backend does not run yet
  // (naming the trait) or when the device lacks memory.
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

  struct Impl;

 private:
  CudaDecoderModel();
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln

#endif  // KILN_HAVE_CUDA
