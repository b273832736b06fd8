// Tensor names by family: every role of a 2-layer config of each family (and layout variant) against a golden
// list, so a change to how names are produced cannot silently change which tensors a family loads.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/families/family.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Written from the name switches the families (and load_gguf.cpp's gguf_llama_name, for the gguf-llama lines) had
// before their names became tables; regenerate only for a deliberate change of names (KILN_WRITE_TENSOR_NAMES=<file>
// writes what the code produces now).
const fs::path kGolden = fs::path(KILN_SOURCE_DIR) / "tests" / "fixtures" / "tensor_names.txt";

// In WeightRole's order.
// clang-format off
constexpr const char* kRoleNames[] = {
    "Embed", "FinalNorm", "FinalNormBias", "LmHead",
    "AttnNorm", "AttnNormBias", "Q", "K", "V", "O", "QBias", "KBias", "VBias", "OBias", "QNorm", "KNorm",
    "MlpNorm", "MlpNormBias", "Gate", "Up", "Down", "GateBias", "UpBias", "DownBias",
    "PosEmbed", "EmbedNorm", "EmbedNormBias", "LmHeadBias",
    "PostAttnNorm", "PostAttnNormBias", "PostMlpNorm", "PostMlpNormBias",
};
// clang-format on
constexpr int kNumRoles = static_cast<int>(WeightRole::PostMlpNormBias) + 1;
static_assert(std::size(kRoleNames) == kNumRoles);

struct Case {
  const char* label;
  json config;
};

// Sizes differ between the counts (heads, KV heads, head_dim, hidden, intermediate) so that a slice computed
// from the wrong one shows up as another number.
std::vector<Case> cases() {
  const json llama = {{"vocab_size", 100},      {"hidden_size", 64},        {"intermediate_size", 96},
                      {"num_hidden_layers", 2}, {"num_attention_heads", 8}, {"num_key_value_heads", 2}};
  auto with = [](json j, const char* arch, json extra = json::object()) {
    j["architectures"] = {arch};
    j.update(extra);
    return j;
  };
  const json gpt = {{"vocab_size", 100}, {"n_embd", 48}, {"n_layer", 2}, {"n_head", 6}};
  const json falcon = {
      {"vocab_size", 100}, {"hidden_size", 64}, {"num_hidden_layers", 2}, {"num_attention_heads", 8}, {"bias", true}};
  return {
      {"llama", with(llama, "LlamaForCausalLM")},
      {"mistral", with(llama, "MistralForCausalLM", {{"sliding_window", 16}})},
      {"qwen2", with(llama, "Qwen2ForCausalLM")},
      {"qwen3", with(llama, "Qwen3ForCausalLM", {{"head_dim", 12}})},
      {"gemma", with(llama, "GemmaForCausalLM", {{"head_dim", 12}})},
      {"gemma2", with(llama, "Gemma2ForCausalLM", {{"head_dim", 12}})},
      {"phi3", with(llama, "Phi3ForCausalLM")},
      {"gpt2", with(gpt, "GPT2LMHeadModel")},
      {"gptj", with(gpt, "GPTJForCausalLM", {{"rotary_dim", 4}})},
      {"gpt_neox", with(json{{"vocab_size", 100},
                             {"hidden_size", 48},
                             {"intermediate_size", 80},
                             {"num_hidden_layers", 2},
                             {"num_attention_heads", 6}},
                        "GPTNeoXForCausalLM")},
      {"falcon-mqa-parallel", with(falcon, "FalconForCausalLM", {{"multi_query", true}})},
      {"falcon-mha-sequential", with(falcon, "FalconForCausalLM", {{"multi_query", false}, {"parallel_attn", false}})},
      {"falcon-newarch-2ln",
       with(falcon, "FalconForCausalLM", {{"new_decoder_architecture", true}, {"num_kv_heads", 2}})},
      {"falcon-newarch-1ln",
       with(falcon, "FalconForCausalLM",
            {{"new_decoder_architecture", true}, {"num_kv_heads", 2}, {"num_ln_in_parallel_attn", 1}})},
      {"mpt", with(json{{"vocab_size", 100}, {"d_model", 48}, {"n_layers", 2}, {"n_heads", 6}}, "MptForCausalLM")},
      {"bloom",
       with(json{{"vocab_size", 100}, {"hidden_size", 48}, {"n_layer", 2}, {"n_head", 6}}, "BloomForCausalLM")},
  };
}

// One line per (layer, role): the name ("-": none) and, when not the whole tensor as stored, how it is read.
std::string describe(const TensorSpec& s) {
  std::string out = s.name.empty() ? "-" : s.name;
  if (s.transposed) out += " transposed";
  if (s.rows > 0)
    out += " blocks " + std::to_string(s.blocks) + " block_rows " + std::to_string(s.block_rows) + " offset " +
           std::to_string(s.row_offset) + " rows " + std::to_string(s.rows);
  return out;
}

std::vector<std::string> produced() {
  std::vector<std::string> lines;
  for (const Case& c : cases()) {
    const std::string arch = c.config["architectures"][0].get<std::string>();
    const Family* family = find_family(arch);
    if (family == nullptr) {
      ADD_FAILURE() << "no family for " << arch;
      continue;
    }
    const ModelConfig config = family->parse_config(c.config, c.label);
    for (int64_t layer = 0; layer < 2; ++layer)
      for (int r = 0; r < kNumRoles; ++r)
        lines.push_back(std::string(c.label) + " " + std::to_string(layer) + " " + kRoleNames[r] + " " +
                        describe(tensor_spec(*family, config, static_cast<WeightRole>(r), layer)));
  }
  // GGUF llama files, whose loader asks for names alone.
  for (int64_t layer = 0; layer < 2; ++layer)
    for (int r = 0; r < kNumRoles; ++r) {
      const std::string name = tensor_name(gguf_llama_tensors(), static_cast<WeightRole>(r), layer);
      lines.push_back("gguf-llama " + std::to_string(layer) + " " + kRoleNames[r] + " " + (name.empty() ? "-" : name));
    }
  return lines;
}

std::vector<std::string> golden() {
  std::ifstream in(kGolden);
  EXPECT_TRUE(in.good()) << kGolden;
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

TEST(TensorNames, EveryFamilyEveryRoleMatchesGolden) {
  const std::vector<std::string> got = produced();
  if (const char* out = std::getenv("KILN_WRITE_TENSOR_NAMES")) {
    std::ofstream f(out);
    for (const std::string& l : got) f << l << "\n";
  }
  const std::vector<std::string> want = golden();
  ASSERT_EQ(got.size(), want.size());
  int shown = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (got[i] != want[i] && shown++ < 20)
      ADD_FAILURE() << "line " << i + 1 << "\n got: " << got[i] << "\nwant: " << want[i];
}

}  // namespace
}  // namespace kiln
