// CpuDecoderModel: the decoder on the CPU in f32 — the numerical reference of every other backend and format.
#pragma once

#include <memory>

#include "model/decoder_model.h"
#include "model/weights.h"

namespace kiln {

class CpuDecoderModel final : public DecoderModel {
 public:
  // Reads every tensor the config calls for from `source` (dense weights as f32; other formats kept as stored or
  // quantized as options.quantization asks, and dequantized on the fly by cpu::linear).
  static std::unique_ptr<CpuDecoderModel> create(ModelConfig config, const WeightSource& source,
                                                 const LoadOptions& options);
  ~CpuDecoderModel() override;

  Device device() const override { return Device::CPU; }
  DType compute_dtype() const override { return DType::F32; }
  size_t weight_bytes() const override;
  int64_t kv_block_bytes(int32_t block_size) const override;
  std::unique_ptr<KvPool> new_kv_pool(int64_t num_blocks, int32_t block_size) const override;
  int64_t workspace_bytes(int64_t max_tokens) const override;
  std::unique_ptr<Workspace> new_workspace(int64_t max_tokens) const override;
  void forward_batch(KvPool& pool, Workspace& ws, const ForwardBatch& batch,
                     std::vector<float>& logits) const override;
  Memory memory() const override { return host_memory(); }

  struct Impl;

 private:
  CpuDecoderModel();
  int32_t state_block_size(int64_t capacity) const override;
  int64_t state_chunk_tokens(int64_t capacity) const override;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln
