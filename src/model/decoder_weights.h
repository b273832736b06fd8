// The decoder's weights, written once for every backend: which tensors a ModelConfig needs (by role), how they are
// read, fused (q|k|v, gate|up), quantized at load and handed to a backend's WeightPlacer, and the one struct the
// layer recipe reads them from.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kiln/model.h"
#include "model/linear.h"
#include "model/weights.h"

namespace kiln {

// A norm's scale and bias (f32, in the backend's memory); w null: no such norm.
struct NormWeights {
  const float* w = nullptr;
  const float* b = nullptr;
  bool present() const { return w != nullptr; }
};

// One decoder layer. The only layer struct: what the recipe (model/decoder_recipe.h) reads.
struct LayerWeights {
  NormWeights attn_norm;
  Linear qkv;  // [(n_heads + 2 n_kv_heads) head_dim, hidden]: q, k, v rows stacked (their biases likewise)
  const void* q_norm = nullptr;  // per-head RMSNorm of q and k [head_dim] (Qwen3), in the backend's norm dtype
  const void* k_norm = nullptr;
  Linear o;  // [hidden, n_heads head_dim]
  NormWeights mlp_norm;  // absent in the Shared layout (the MLP reads the attention norm)
  NormWeights post_attn_norm, post_mlp_norm;  // PrePost layout (Gemma 2)
  Linear w_in;  // gated: [2 intermediate, hidden], gate rows then up rows; else up [intermediate, hidden]
  Linear down;  // [hidden, intermediate]
};

struct ModelWeights {
  Linear embed;  // [vocab, hidden]: the table (rows are looked up, never multiplied)
  const void* pos_embed = nullptr;  // learned positions [max_position_embeddings, hidden], embed's dtype
  NormWeights embed_norm, final_norm;
  Linear lm_head;  // [vocab, hidden], or the embedding table when tied
  bool tied = false;
  const float* tied_lm_head_bias = nullptr;  // a bias on a tied lm_head (the embedding table has none of its own)
  std::vector<LayerWeights> layers;
};

// What a tensor is in the decoder, for a placer choosing its storage.
enum class VectorKind : uint8_t { Norm, HeadNorm /* q/k norm */, Bias };
// What a linear is in the decoder: the placer may store it (its bias, say) for the op that reads it.
enum class LinearRole : uint8_t { Embedding /* looked up, never multiplied */, Qkv, AttnOut, MlpIn, MlpOut, LmHead };

// A backend's storage: it receives each weight as loaded on the host and returns where it put it.
class WeightPlacer {
 public:
  virtual ~WeightPlacer() = default;
  // The format a linear of `stored` weights is kept in, before any quantization the options ask for: dense
  // weights as the backend computes (CPU f32, CUDA its compute type), a block type as it is or dequantized.
  virtual LinearFormat keep_format(DType stored) const = 0;
  // Which quantized formats the backend computes (LoadOptions::quantization is refused by name otherwise).
  virtual bool computes(const LinearFormat& f) const = 0;
  // A linear (its name e.g. "layers.3.qkv").
  virtual Linear place_linear(HostLinear&& w, const std::string& name, LinearRole role) = 0;
  // A linear whose weight values are a formula (random weights on a device that computes them in place): the
  // parts' formulas with their row counts, in row order. Only called when computes_formulas().
  virtual bool computes_formulas() const { return false; }
  virtual Linear place_linear_formula(const std::vector<std::pair<WeightFormula, int64_t>>& parts, int64_t in,
                                      std::vector<float>&& bias, const std::string& name, LinearRole role);
  // A vector (norm weight, bias) or a vector/table of the embedding's kind (learned positions).
  virtual const float* place_vector(std::vector<float>&& v, VectorKind kind) = 0;
  virtual const void* place_head_norm(std::vector<float>&& v) = 0;
  virtual const void* place_table(const StoredTensor& t) = 0;  // learned positions, as the embedding is stored
};

// The checks every decoder makes before loading (sizes, heads, rotary dim, windows, norm layouts, learned
// positions), naming `path` in the kiln::Error it throws; fills in rotary_dim (0: the whole head).
void check_decoder_config(ModelConfig& c, const std::string& path);

// Reads every tensor `c` needs from `src` (missing ones reported before anything large is read), fuses q|k|v and
// gate|up, quantizes the layers' linears as options.quantization asks, and places everything through `placer`.
// Sets c.tie_word_embeddings when lm_head is the embedding (tied by the config, or absent from the source).
// Returns the weights and counts parameters into *num_parameters.
ModelWeights load_decoder_weights(ModelConfig& c, const WeightSource& src, const LoadOptions& options,
                                  WeightPlacer& placer, int64_t* num_parameters,
                                  std::vector<LinearInfo>* linears = nullptr);

// The LinearFormat LoadOptions::quantization asks for (None: nullopt).
std::optional<LinearFormat> quantized_format(Quantization q);

}  // namespace kiln
