// Reading a TensorTable: which module holds a role, its full name, and the rows of a fused or transposed tensor.
#include "model/families/tensor_table.h"

#include <algorithm>
#include <span>
#include <utility>

#include "kiln/error.h"

namespace kiln {
namespace {

using enum WeightRole;

// Modules outside the layers: their names take no layer prefix.
constexpr WeightRole kGlobal[] = {Embed, PosEmbed, EmbedNorm, FinalNorm, LmHead};
// The linear layers, whose weights a Conv1D scheme stores transposed (norms, embeddings and lm_head are not).
constexpr WeightRole kLinear[] = {Q, K, V, O, Gate, Up, Down};
// The roles a fused tensor can hold, in stored order; the table names it under the first.
constexpr WeightRole kQkv[] = {Q, K, V};
constexpr WeightRole kGateUp[] = {Gate, Up};

bool contains(std::span<const WeightRole> roles, WeightRole r) {
  return std::ranges::find(roles, r) != roles.end();
}

// A role as the module it belongs to (its weight role) and whether it is that module's bias.
struct Part {
  WeightRole weight;
  bool bias;
};

Part part_of(WeightRole role) {
  if (const std::optional<WeightRole> w = bias_owner(role)) return {*w, true};
  return {role, false};
}

// The module holding weight role `w`, with the group of roles it holds when it is a fused tensor (else empty):
// the fused tensor of w's group where the table has one, else w's own entry, the layout's where it has one.
struct Holder {
  const TensorName* name = nullptr;
  std::span<const WeightRole> group;
};

const TensorName* entry(const std::vector<TensorName>& names, WeightRole w) {
  const auto it = std::ranges::find(names, w, &TensorName::role);
  return it == names.end() ? nullptr : &*it;
}

Holder holder(const TensorTable& t, bool parallel_norms, WeightRole w) {
  for (std::span<const WeightRole> group : {std::span<const WeightRole>(kQkv), std::span<const WeightRole>(kGateUp)}) {
    if (!contains(group, w)) continue;
    const TensorName* first = entry(t.names, group.front());
    if (first != nullptr && first->fused != Fused::No) return {first, group};
  }
  const TensorName* own = parallel_norms ? entry(t.parallel_norms, w) : nullptr;
  return {own != nullptr ? own : entry(t.names, w), {}};
}

std::string name_of(const TensorTable& t, const Holder& h, Part p, int64_t layer) {
  if (h.name == nullptr || (p.bias && h.name->bias == Bias::None)) return {};
  std::string name = contains(kGlobal, p.weight) ? "" : t.layer_prefix + std::to_string(layer) + ".";
  return name + h.name->module + (p.bias ? ".bias" : ".weight");
}

// How many rows role `w` has in all: q and k/v by their heads, gate and up the intermediate size.
int64_t role_rows(const ModelConfig& c, WeightRole w) {
  if (w == Q) return c.num_heads * c.head_dim;
  if (w == K || w == V) return c.num_kv_heads * c.head_dim;
  return c.intermediate_size;
}

}  // namespace

TensorTable TensorTable::with(std::initializer_list<TensorName> changes) const {
  TensorTable t = *this;
  for (const TensorName& n : changes) {
    const auto it = std::ranges::find(t.names, n.role, &TensorName::role);
    if (it == t.names.end())
      t.names.push_back(n);
    else
      *it = n;
  }
  return t;
}

std::string tensor_name(const TensorTable& t, WeightRole role, int64_t layer) {
  const Part p = part_of(role);
  return name_of(t, holder(t, false, p.weight), p, layer);
}

TensorSpec tensor_spec(const TensorTable& t, const ModelConfig& c, WeightRole role, int64_t layer) {
  const Part p = part_of(role);
  const Holder h = holder(t, c.parallel_residual && c.norm_layout == NormLayout::Pre, p.weight);
  TensorSpec s{name_of(t, h, p, layer)};
  if (s.name.empty()) return s;
  s.transposed = t.conv1d && !p.bias && contains(kLinear, p.weight);
  if (h.group.empty()) return s;
  // Every part's rows are spread evenly over the blocks: one block when stacked, one per KV head when grouped.
  s.blocks = h.name->fused == Fused::PerKvGroup ? c.num_kv_heads : 1;
  KILN_ASSERT(s.blocks > 0);
  s.block_rows = 0;
  for (const WeightRole part : h.group) {
    if (part == p.weight) s.row_offset = s.block_rows;
    s.block_rows += role_rows(c, part) / s.blocks;
  }
  s.rows = role_rows(c, p.weight) / s.blocks;
  return s;
}

}  // namespace kiln
