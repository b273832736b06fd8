// ModelConfig: one normalized description of a decoder-only model, traits rather than class types.
// Each family file (model/families/*.cpp) fills it from an HF config.json or GGUF metadata.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kiln/dtype.h"

namespace kiln {

enum class NormKind : uint8_t { RMSNorm, LayerNorm };
enum class ActKind : uint8_t { SiLU, GeluTanh, GeluErf };
enum class RopeScaling : uint8_t { None, Linear, Llama3 };

struct RopeConfig {
  double theta = 10000.0;
  int64_t rotary_dim = 0;  // dims rotated per head (== head_dim for full rotary)
  bool interleaved = false;  // pairs (2i, 2i+1) (GPT-J) instead of (i, i + d/2) (NeoX / HF Llama)
  RopeScaling scaling = RopeScaling::None;
  double factor = 1.0;
  double low_freq_factor = 1.0;   // llama3
  double high_freq_factor = 4.0;  // llama3
  int64_t original_max_position = 8192;  // llama3
  // Per-pair divisors of the inverse frequencies (GGUF `rope_freqs`, llama3 baked in); empty: none.
  std::vector<double> freq_factors;
};

struct ModelConfig {
  std::string architecture;  // as found: HF `architectures[0]`, GGUF `general.architecture`, "llama2.c"
  std::string family;        // the family file that handled it: "llama", "mistral", "qwen2", "qwen3", ...
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 0;

  NormKind norm = NormKind::RMSNorm;
  double norm_eps = 1e-6;
  ActKind act = ActKind::SiLU;
  bool gated_mlp = true;       // gate/up/down (SwiGLU, GeGLU) vs fc1/fc2
  RopeConfig rope;
  int64_t sliding_window = 0;  // 0: full attention
  // Per-layer window (0: full) when layers differ (Qwen2 max_window_layers); empty: sliding_window for all.
  std::vector<int64_t> layer_sliding_window;
  bool qkv_bias = false;
  bool o_bias = false;
  bool mlp_bias = false;
  bool qk_norm = false;        // per-head RMSNorm of q and k before RoPE (Qwen3)
  bool tie_word_embeddings = false;

  DType checkpoint_dtype = DType::F32;  // what the weights are stored as (before conversion)
  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;

  // The attention window of one layer (0: full attention).
  int64_t window_for_layer(int64_t layer) const {
    if (layer_sliding_window.empty()) return sliding_window;
    return layer_sliding_window.at(static_cast<size_t>(layer));
  }
};

}  // namespace kiln
