// Checkpoint tensor names as data: a table per naming scheme (each HF family, GGUF llama) maps modules to names,
// and one function turns a table into the name, orientation and fused-row slice of any weight role.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "kiln/model_config.h"
#include "model/weights.h"

namespace kiln {

// Where an HF checkpoint keeps the values of one role. `transposed`: stored [in, out] (GPT-2's Conv1D)
// rather than [out, in]. A slice of a fused tensor (rows > 0): the stored rows (after transposition) are
// `blocks` blocks of `block_rows` rows each, and the role is rows [row_offset, row_offset + rows) of every
// block, concatenated; e.g. k of a per-head fused qkv [n_heads, 3, head_dim] is blocks = n_heads,
// block_rows = 3 * head_dim, row_offset = head_dim, rows = head_dim. A bias is sliced the same way.
struct TensorSpec {
  std::string name;
  bool transposed = false;
  int64_t blocks = 1;
  int64_t block_rows = 0;
  int64_t row_offset = 0;
  int64_t rows = 0;  // 0: the whole tensor
};

// How one tensor holds the rows of several roles: the one named under Q holds q, k and v (in that order), the
// one named under Gate holds gate and up.
enum class Fused : uint8_t {
  No,
  // Each part whole, one after the other: [q | k | v] (GPT-2 c_attn, MPT Wqkv, Phi-3 qkv_proj), [gate | up].
  Stacked,
  // For each KV head, its group of query heads, then its key, then its value: [n_kv, group + 2, head_dim]
  // (Falcon's three layouts); with one query head per KV head, [n_heads, 3, head_dim] (BLOOM, GPT-NeoX).
  PerKvGroup,
};

// Whether a module's bias role has a name (<module>.bias) in the scheme; it is only read where the config has
// biases, so `Named` is harmless for a module that has none.
enum class Bias : uint8_t { Named, None };

// One module: the weight role it holds (Q, AttnNorm, LmHead, ...), whose bias role (QBias, AttnNormBias, ...)
// shares the name; ".weight" / ".bias" is appended to `module`, and layer roles put the layer prefix before it.
struct TensorName {
  WeightRole role;
  const char* module;
  Bias bias = Bias::Named;
  Fused fused = Fused::No;  // on Q or Gate only
};

// A naming scheme.
struct TensorTable {
  const char* layer_prefix = "";  // layer l's modules are under layer_prefix + "<l>."
  std::vector<TensorName> names;
  bool conv1d = false;  // the linear layers' weights are stored [in, out] (GPT-2's Conv1D) and read transposed
  // Entries that replace those of `names` where attention and the MLP run in parallel from a norm each
  // (NormLayout::Pre with a parallel residual): Falcon's new architecture calls those norms ln_attn and ln_mlp.
  std::vector<TensorName> parallel_norms = {};

  // This table with `changes` in place of the entries of the same roles (appended where there are none).
  TensorTable with(std::initializer_list<TensorName> changes) const;
};

// The name of `role` in layer `layer` (ignored for global roles) under `table`, for a scheme whose names do not
// depend on the config (GGUF llama); empty where it has none.
std::string tensor_name(const TensorTable& table, WeightRole role, int64_t layer);

// Its name under `config`'s layout and, for a fused or transposed tensor, how the role's rows are read (the
// slice's sizes come from `config`'s heads, head_dim and intermediate size).
TensorSpec tensor_spec(const TensorTable& table, const ModelConfig& config, WeightRole role, int64_t layer);

}  // namespace kiln
