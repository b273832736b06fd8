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
// How token positions enter the model: rotary q/k, a learned table added to the embeddings (GPT-2), or
// a linear bias on the attention scores (ALiBi: BLOOM, MPT).
enum class PositionKind : uint8_t { Rope, Learned, Alibi };
// Where the norms sit around attention and MLP.
//   Pre:     attention reads n1(x), the MLP reads n2(x) (after the attention's residual unless parallel).
//   PrePost: Pre, and each block's output is normed again before its residual add (Gemma 2).
//   Shared:  one norm n1(x) feeds both attention and MLP, which run in parallel (GPT-J, Falcon-7B).
enum class NormLayout : uint8_t { Pre, PrePost, Shared };

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

  PositionKind position = PositionKind::Rope;
  double alibi_bias_max = 8.0;  // ALiBi slopes 2^(-bias_max * i / n) as MPT defines them (BLOOM's equal 8)
  NormLayout norm_layout = NormLayout::Pre;
  // x += attn(..) + mlp(..) from the same x (GPT-J, NeoX use_parallel_residual, Falcon) instead of in turn.
  bool parallel_residual = false;
  bool norm_bias = true;       // LayerNorms carry a bias (MPT's do not)
  bool norm_add_one = false;   // RMSNorm scales by (1 + w) (Gemma)
  bool embed_norm = false;     // a LayerNorm on the embeddings (BLOOM word_embeddings_layernorm)
  double embed_scale = 1.0;    // embeddings are multiplied by this (Gemma: sqrt(hidden))
  // HF multiplies by embed_scale as a tensor of the weights' dtype, so it is rounded to checkpoint_dtype
  // when the model is built (Gemma: sqrt(2048) stays 45.25 but sqrt(3072) becomes 55.5 in bf16).
  bool embed_scale_in_checkpoint_dtype = false;
  double attn_scale = 0.0;           // attention logit scale; 0: 1 / sqrt(head_dim)
  double attn_logit_softcap = 0.0;   // scores -> cap * tanh(scores / cap) (Gemma 2); 0: none
  double final_logit_softcap = 0.0;  // the same on the output logits; 0: none
  double clip_qkv = 0.0;             // q, k, v clamped to [-clip, clip] (MPT); 0: none
  bool lm_head_bias = false;         // GPT-J

  DType checkpoint_dtype = DType::F32;  // what the weights are stored as (before conversion)
  std::string checkpoint_storage;  // every stored tensor type with its count, e.g. "Q4_1 x210, F32 x61"
  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;

  // The attention window of one layer (0: full attention).
  int64_t window_for_layer(int64_t layer) const {
    if (layer_sliding_window.empty()) return sliding_window;
    return layer_sliding_window.at(static_cast<size_t>(layer));
  }
};

}  // namespace kiln
