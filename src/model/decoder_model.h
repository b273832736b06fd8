// DecoderModel: the one forward pass shared by every decoder-only family, fp32 on the CPU.
#pragma once

#include <memory>
#include <vector>

#include "kiln/tensor.h"
#include "model/model.h"
#include "model/weights.h"

namespace kiln {

class DecoderModel final : public Model {
 public:
  // Reads every tensor the config calls for from `source` (shapes checked, converted to f32).
  static std::unique_ptr<DecoderModel> create(ModelConfig config, const WeightSource& source,
                                              const LoadOptions& options);

  const ModelConfig& config() const override { return cfg_; }
  int64_t num_parameters() const override { return num_parameters_; }
  size_t weight_bytes() const override { return weight_bytes_; }
  std::unique_ptr<KvState> new_state(int64_t capacity) const override;
  void forward(KvState& state, std::span<const int32_t> tokens, std::vector<float>& logits,
               bool all_logits = false) const override;
  int64_t kv_block_bytes(int32_t block_size) const override;
  std::unique_ptr<KvPool> new_kv_pool(int64_t num_blocks, int32_t block_size, int64_t max_batch_tokens) const override;
  void forward_batch(KvPool& pool, const ForwardBatch& batch, std::vector<float>& logits) const override;

  struct Workspace;  // the scratch of one forward pass

 private:
  struct Layer {
    const float* attn_norm = nullptr;
    const float* attn_norm_b = nullptr;
    const float* wqkv = nullptr;  // [(n_heads + 2 n_kv_heads) * head_dim, hidden]: q, k, v rows stacked
    const float* bqkv = nullptr;
    const float* q_norm = nullptr;  // [head_dim]
    const float* k_norm = nullptr;
    const float* wo = nullptr;  // [hidden, n_heads * head_dim]
    const float* bo = nullptr;
    const float* mlp_norm = nullptr;  // null in the Shared layout (the MLP reads the attention norm)
    const float* mlp_norm_b = nullptr;
    const float* post_attn_norm = nullptr;  // PrePost layout: norms of the attention and MLP outputs
    const float* post_attn_norm_b = nullptr;
    const float* post_mlp_norm = nullptr;
    const float* post_mlp_norm_b = nullptr;
    const float* w_in = nullptr;  // gated: [2 * intermediate, hidden] (gate rows, then up rows); else [inter, hidden]
    const float* b_in = nullptr;
    const float* w_down = nullptr;  // [hidden, intermediate]
    const float* b_down = nullptr;
  };

  // Where the K/V of a batch live: block b's floats start at base + b * block_stride, laid out
  // [layer][k|v][kv_head][block_size][head_dim]. A contiguous KvState is one block of `capacity` slots.
  struct KvView {
    float* base;
    int64_t block_stride;
    int64_t block_size;
  };

  DecoderModel() = default;
  void reserve(Workspace& ws, int64_t T) const;
  void run(const ForwardBatch& batch, const KvView& kv, Workspace& ws, std::vector<float>& logits) const;
  void norm(const float* x, const float* w, const float* b, float* y, int64_t rows) const;

  ModelConfig cfg_;
  HostBuffer arena_;
  const float* embed_ = nullptr;
  const float* final_norm_ = nullptr;
  const float* final_norm_b_ = nullptr;
  const float* lm_head_ = nullptr;
  const float* lm_head_b_ = nullptr;
  const float* pos_embed_ = nullptr;  // learned positions [max_position_embeddings, hidden]
  const float* embed_norm_ = nullptr;
  const float* embed_norm_b_ = nullptr;
  std::vector<float> alibi_slopes_;  // per head, when position == Alibi
  std::vector<Layer> layers_;
  std::vector<double> inv_freq_;
  int64_t num_parameters_ = 0;
  size_t weight_bytes_ = 0;
  bool kv_fp8_ = false;  // LoadOptions::kv_cache_fp8: K and V stored rounded to e4m3
};

}  // namespace kiln
