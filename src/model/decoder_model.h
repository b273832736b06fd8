// DecoderModel: what every backend's Model shares — the config, the loaded weights, the recipe, and the contiguous
// KvState path (forward) written over the paged one (a state is a pool with an identity block table and its own
// workspace).
#pragma once

#include <memory>
#include <vector>

#include "kiln/model.h"
#include "model/decoder_recipe.h"
#include "model/decoder_weights.h"

namespace kiln {

class DecoderModel : public Model {
 public:
  const ModelConfig& config() const override { return cfg_; }
  int64_t num_parameters() const override { return num_parameters_; }
  std::vector<LinearInfo> linears() const override { return linears_; }
  std::unique_ptr<KvState> new_state(int64_t capacity) const override;
  void forward(KvState& state, std::span<const int32_t> tokens, std::vector<float>& logits,
               bool all_logits = false) const override;

 protected:
  DecoderModel() : recipe_(cfg_) {}
  DecoderModel(const DecoderModel&) = delete;
  DecoderModel& operator=(const DecoderModel&) = delete;
  // Tokens per block of a state of `capacity` tokens, and the rows one pass of forward() runs (longer inputs run
  // as chunks).
  virtual int32_t state_block_size(int64_t capacity) const = 0;
  virtual int64_t state_chunk_tokens(int64_t capacity) const = 0;

  ModelConfig cfg_;
  DecoderRecipe recipe_;  // reads cfg_
  ModelWeights weights_;
  int64_t num_parameters_ = 0;
  std::vector<LinearInfo> linears_;
};

// MemTotal and MemAvailable of /proc/meminfo in bytes (0 when unknown).
Model::Memory host_memory();

}  // namespace kiln
