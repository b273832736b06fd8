// The tensors a ModelConfig needs, by role, layer and shape: one list both backends place into their own
// storage (the CPU's f32 arena, the GPU's 16-bit and f32 arenas). Fused tensors (q|k|v, gate|up and their
// biases) follow their leader in the list and must be placed directly after it so their rows stack.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "model/model_config.h"
#include "model/weights.h"

namespace kiln {

struct PlannedTensor {
  WeightRole role;
  int64_t layer;
  Shape shape;
  bool fused = false;  // placed right after the previous tensor (no alignment gap)
};

// Indices into WeightPlan::tensors; kNoTensor where the config has no such tensor.
inline constexpr size_t kNoTensor = SIZE_MAX;

struct WeightPlan {
  std::vector<PlannedTensor> tensors;
  bool tied = false;  // lm_head is the embedding
  size_t embed = kNoTensor, final_norm = kNoTensor, final_norm_b = kNoTensor, lm_head = kNoTensor,
         lm_head_b = kNoTensor, pos_embed = kNoTensor, embed_norm = kNoTensor, embed_norm_b = kNoTensor;
  struct Layer {
    size_t attn_norm = kNoTensor, attn_norm_b = kNoTensor, q = kNoTensor /* q|k|v */, bq = kNoTensor /* bq|bk|bv */,
           q_norm = kNoTensor, k_norm = kNoTensor, o = kNoTensor, bo = kNoTensor, mlp_norm = kNoTensor,
           mlp_norm_b = kNoTensor, w_in = kNoTensor /* gate|up, or up */, b_in = kNoTensor, down = kNoTensor,
           b_down = kNoTensor, post_attn = kNoTensor, post_attn_b = kNoTensor, post_mlp = kNoTensor,
           post_mlp_b = kNoTensor;
  };
  std::vector<Layer> layers;
};

// The checks both decoders make before planning (sizes, heads, rotary dim, windows, norm layouts, learned
// positions), naming `path` in the kiln::Error they throw; fills in rotary_dim (0: the whole head).
void check_decoder_config(ModelConfig& c, const std::string& path);

// Every tensor `c` needs, in load order. lm_head is tied (absent from the list) when the
// config says so or the source has none.
WeightPlan plan_weights(const ModelConfig& c, const WeightSource& src);

}  // namespace kiln
