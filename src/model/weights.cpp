// What each weight role is: which biases belong to which module, which roles are norm scales.
#include "model/weights.h"

#include <utility>

namespace kiln {

using enum WeightRole;

std::optional<WeightRole> bias_owner(WeightRole role) {
  constexpr std::pair<WeightRole, WeightRole> kBiasOf[] = {
      {FinalNormBias, FinalNorm}, {AttnNormBias, AttnNorm}, {QBias, Q}, {KBias, K}, {VBias, V}, {OBias, O},
      {MlpNormBias, MlpNorm}, {GateBias, Gate}, {UpBias, Up}, {DownBias, Down}, {EmbedNormBias, EmbedNorm},
      {LmHeadBias, LmHead}, {PostAttnNormBias, PostAttnNorm}, {PostMlpNormBias, PostMlpNorm}};
  for (const auto& [bias, weight] : kBiasOf)
    if (bias == role) return weight;
  return std::nullopt;
}

bool is_norm_scale(WeightRole role) {
  switch (role) {
    case FinalNorm:
    case AttnNorm:
    case MlpNorm:
    case QNorm:
    case KNorm:
    case EmbedNorm:
    case PostAttnNorm:
    case PostMlpNorm:
      return true;
    default:
      return false;
  }
}

}  // namespace kiln
