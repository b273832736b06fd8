// The decoder forward pass, written once for every family and backend: the per-family traits (residual topology,
// norm placement, qk-norm, clip, ALiBi, soft-caps, learned positions, biases) turned into a sequence of operations
// on named buffers, which each backend implements (ForwardOps). A backend may fuse inside one operation (RoPE with
// the K/V write, the residual add in the GEMM epilogue); the order of operations and what they read is this file's.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "kiln/model.h"
#include "model/decoder_weights.h"

namespace kiln {

// The activations of one pass, by role; each backend maps them to its own memory and element types.
enum class Buf : uint8_t {
  X,       // the residual stream [T, hidden] (f32 on every backend)
  H,       // a norm's output [T, hidden], the input of the next linear
  QKV,     // [T, (n_heads + 2 n_kv_heads) head_dim]
  Att,     // attention output [T, n_heads head_dim]
  MlpIn,   // up, or gate|up, projection [T, (2) intermediate]
  Act,     // the activation [T, intermediate]
  Y,       // a block output before its post-norm [T, hidden] (PrePost layout)
};

// What attention of layer l needs beyond the buffers.
struct AttentionParams {
  int64_t layer = 0;
  float scale = 1.0f;     // logit scale (1 / sqrt(head_dim) unless the config says otherwise)
  float softcap = 0.0f;   // cap * tanh(s / cap) on the scores; 0: none
  int64_t window = 0;     // sliding window (0: full)
  bool alibi = false;     // ALiBi biases (the backend holds the slopes)
};

// A backend's operations over one pass (its batch metadata and KV pool are the backend's business).
class ForwardOps {
 public:
  virtual ~ForwardOps() = default;
  // X = embedding rows of the batch's ids * scale (+ the learned position rows when `positions` is given).
  virtual void embed(const Linear& table, float scale, const void* positions) = 0;
  // out = norm(in) (RMSNorm or LayerNorm as the config says), or out += norm(in) with accumulate (out is then X).
  virtual void norm(const NormWeights& n, Buf in, Buf out, bool accumulate) = 0;
  // out = in · Wᵀ + bias, or out += in · Wᵀ + bias with accumulate (the residual add; out is then X).
  virtual void linear(const Linear& w, Buf in, Buf out, bool accumulate) = 0;
  // Every element of `buf` clamped to [-limit, limit].
  virtual void clamp(Buf buf, float limit) = 0;
  // Per-head RMSNorm of q and k (when the layer has them), rotary embedding of q and k (when `rotary`), and the
  // write of each row's K and V into its KV slot.
  virtual void rope_kv_write(const LayerWeights& L, int64_t layer, bool rotary) = 0;
  // Att = attention of each row's q over its sequence's cached keys and values.
  virtual void attention(const AttentionParams& p) = 0;
  // Act = act(MlpIn): act(gate) * up for a gated MLP, else act(up).
  virtual void activation() = 0;
};

// The recipe of one model: its traits, read once from the config.
class DecoderRecipe {
 public:
  explicit DecoderRecipe(const ModelConfig& c) : c_(c) {}
  // The embedding, then every layer: leaves the residual stream in X.
  void forward(ForwardOps& ops, const ModelWeights& w) const;
  void layer(ForwardOps& ops, const LayerWeights& L, int64_t l) const;
  AttentionParams attention(int64_t layer) const;

 private:
  const ModelConfig& c_;
};

// The checks every backend makes of a packed batch: equal-length rows, sequences covering the rows in order,
// decodes (one row each) first as num_decodes says, block tables covering each context inside a pool of
// `num_blocks` blocks of `block_size`, each row's position and slot where its sequence puts them, ascending logit
// rows, ids inside the vocabulary, learned positions inside the table, at most `max_tokens` rows. Throws kiln::Error.
void check_batch(const ForwardBatch& b, const ModelConfig& c, int64_t num_blocks, int32_t block_size,
                 int64_t max_tokens);

}  // namespace kiln
