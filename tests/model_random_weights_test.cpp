// Random weights from an HF config.json (LoadOptions::random_weights): every family builds and runs, the
// values follow the seed and nothing else, and the full-size shapes in bench/configs/ parse to their
// published parameter counts.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "kiln/error.h"
#include "model/loaders.h"
#include "kiln/model.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;

const fs::path kFixtures = fs::path(KILN_SOURCE_DIR) / "tests" / "fixtures" / "models";
const fs::path kConfigs = fs::path(KILN_SOURCE_DIR) / "bench" / "configs";

std::unique_ptr<Model> random_model(const fs::path& config, uint64_t seed, std::optional<DType> dtype = {}) {
  LoadOptions o;
  o.random_weights = true;
  o.random_seed = seed;
  o.random_dtype = dtype;
  return Model::load(config.string(), o);
}

std::vector<float> logits_of(const Model& m, const std::vector<int32_t>& prompt) {
  auto state = m.new_state(static_cast<int64_t>(prompt.size()));
  std::vector<float> logits;
  m.forward(*state, prompt, logits, /*all_logits=*/true);
  return logits;
}

TEST(RandomWeights, EveryFixtureFamilyBuildsAndRuns) {
  int n = 0;
  for (const auto& e : fs::directory_iterator(kFixtures)) {
    if (!fs::exists(e.path() / "config.json")) continue;
    SCOPED_TRACE(e.path().filename().string());
    // The folder form reads its config.json and ignores the safetensors beside it.
    const auto m = random_model(e.path(), 1);
    EXPECT_NE(m->config().checkpoint_storage.find("random"), std::string::npos);
    const std::vector<int32_t> prompt = {1, 5, 9, 2, 7};
    const std::vector<float> logits = logits_of(*m, prompt);
    ASSERT_EQ(logits.size(), prompt.size() * static_cast<size_t>(m->config().vocab_size));
    double sq = 0;
    for (float v : logits) {
      ASSERT_TRUE(std::isfinite(v));
      sq += static_cast<double>(v) * v;
    }
    EXPECT_GT(sq, 0.0);  // not all zero: the weights are there
    ++n;
  }
  EXPECT_GE(n, 10);
}

TEST(RandomWeights, SameSeedSameModelOtherSeedOther) {
  const fs::path cfg = kFixtures / "llama3-gqa-bf16" / "config.json";
  const std::vector<int32_t> prompt = {3, 1, 4, 1, 5, 9, 2, 6};
  const auto a = logits_of(*random_model(cfg, 42), prompt);
  const auto b = logits_of(*random_model(cfg, 42), prompt);
  const auto c = logits_of(*random_model(cfg, 43), prompt);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  // The dtype the values are rounded to: the config's (bf16 here) unless asked otherwise.
  EXPECT_EQ(random_model(cfg, 42)->config().checkpoint_dtype, DType::BF16);
  const auto f32 = random_model(cfg, 42, DType::F32);
  EXPECT_EQ(f32->config().checkpoint_dtype, DType::F32);
  EXPECT_NE(logits_of(*f32, prompt), a);
}

TEST(RandomWeights, Refusals) {
  auto expect_error = [](const std::string& path, const std::string& part) {
    try {
      random_model(path, 0);
      ADD_FAILURE() << "expected kiln::Error for " << path;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  expect_error((kFixtures / "llama3-gqa-bf16" / "model.safetensors").string(), "config.json");
  expect_error((kFixtures / "no-such-model").string(), "no such file");
  const fs::path empty = fs::path(::testing::TempDir()) / "kiln_random_weights_empty";
  fs::create_directories(empty);
  expect_error(empty.string(), "no config.json");
  LoadOptions o;
  o.random_weights = true;
  o.random_dtype = DType::I8;
  EXPECT_THROW(Model::load((kFixtures / "llama3-gqa-bf16" / "config.json").string(), o), Error);
}

// Parameters a config calls for, counted from the traits as the decoder plans its tensors.
int64_t count_parameters(const ModelConfig& c) {
  const int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim, V = c.vocab_size;
  const int64_t nq = c.num_heads * hd, nkv = c.num_kv_heads * hd;
  const int64_t norm = c.norm == NormKind::LayerNorm && c.norm_bias ? 2 * H : H;
  int64_t n = V * H + norm;
  if (!c.tie_word_embeddings) n += V * H;
  if (c.lm_head_bias) n += V;
  if (c.position == PositionKind::Learned) n += c.max_position_embeddings * H;
  if (c.embed_norm) n += norm;
  int64_t layer = norm + (nq + 2 * nkv) * H + H * nq;
  if (c.qkv_bias) layer += nq + 2 * nkv;
  if (c.o_bias) layer += H;
  if (c.qk_norm) layer += 2 * hd;
  if (c.norm_layout != NormLayout::Shared) layer += norm;
  if (c.norm_layout == NormLayout::PrePost) layer += 2 * norm;
  layer += (c.gated_mlp ? 3 : 2) * I * H;
  if (c.mlp_bias) layer += (c.gated_mlp ? 2 * I : I) + H;
  return n + c.num_layers * layer;
}

TEST(RandomWeights, BenchConfigsHaveThePublishedShapes) {
  struct Want {
    const char* file;
    const char* family;
    int64_t layers, hidden, heads, kv_heads;
    double params;  // as published (HF model cards, papers)
  };
  const Want wants[] = {
      {"llama-3.1-8b.json", "llama", 32, 4096, 32, 8, 8.030e9}, {"llama-2-7b.json", "llama", 32, 4096, 32, 32, 6.738e9},
      {"gpt-j-6b.json", "gptj", 28, 4096, 16, 16, 6.053e9},     {"gemma-2b.json", "gemma", 18, 2048, 8, 1, 2.506e9},
      {"gemma-7b.json", "gemma", 28, 3072, 16, 16, 8.538e9},    {"falcon-7b.json", "falcon", 32, 4544, 71, 1, 6.922e9},
      {"mpt-7b.json", "mpt", 32, 4096, 32, 32, 6.649e9},        {"bloom-7b1.json", "bloom", 30, 4096, 32, 32, 7.069e9},
  };
  int found = 0;
  for (const auto& e : fs::directory_iterator(kConfigs)) found += e.path().extension() == ".json";
  EXPECT_EQ(found, static_cast<int>(std::size(wants))) << "a config in bench/configs/ has no entry here";
  for (const Want& w : wants) {
    SCOPED_TRACE(w.file);
    const ModelConfig c = read_hf_config((kConfigs / w.file).string());
    EXPECT_EQ(c.family, w.family);
    EXPECT_EQ(c.num_layers, w.layers);
    EXPECT_EQ(c.hidden_size, w.hidden);
    EXPECT_EQ(c.num_heads, w.heads);
    EXPECT_EQ(c.num_kv_heads, w.kv_heads);
    EXPECT_NEAR(static_cast<double>(count_parameters(c)) / w.params, 1.0, 1e-3);
  }
}

TEST(RandomWeights, ParameterCountMatchesTheBuiltModel) {
  // count_parameters above is the decoder's own plan: check it against models the decoder built.
  for (const char* name : {"llama3-gqa-bf16", "gptj-rotary-f16", "falcon-7b-mqa-bf16", "mpt-alibi-clip-f32",
                           "bloom-alibi-bf16", "gemma-mqa-bf16", "gpt2-learned-f32", "gemma2-gqa-f32"}) {
    SCOPED_TRACE(name);
    const auto m = random_model(kFixtures / name, 0);
    EXPECT_EQ(count_parameters(m->config()), m->num_parameters());
  }
}

}  // namespace
}  // namespace kiln
