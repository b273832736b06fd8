// The family registry: one line per family; HF `architectures[0]` selects the entry.
#include "model/families/family.h"

namespace kiln {

const std::vector<Family>& families() {
  static const std::vector<Family> all = {
      llama_family(),
      mistral_family(),
      qwen2_family(),
      qwen3_family(),
  };
  return all;
}

const Family* find_family(const std::string& architecture) {
  for (const Family& f : families())
    for (const std::string& a : f.architectures)
      if (a == architecture) return &f;
  return nullptr;
}

}  // namespace kiln
