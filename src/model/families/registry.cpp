// The family registry: one line per family; HF `architectures[0]` selects the entry.
#include "model/families/family.h"

namespace kiln {

const std::vector<Family>& families() {
  static const std::vector<Family> all = {
      llama_family(),
      mistral_family(),
      qwen2_family(),
      qwen3_family(),
      gpt2_family(),
      gptj_family(),
      gpt_neox_family(),
      falcon_family(),
      mpt_family(),
      bloom_family(),
      gemma_family(),
      gemma2_family(),
      phi3_family(),
  };
  return all;
}

const Family* find_family(const std::string& architecture) {
  for (const Family& f : families())
    for (const std::string& a : f.architectures)
      if (a == architecture) return &f;
  return nullptr;
}

TensorSpec tensor_spec(const Family& family, const ModelConfig& config, WeightRole role, int64_t layer) {
  return tensor_spec(family.tensors, config, role, layer);
}

}  // namespace kiln
