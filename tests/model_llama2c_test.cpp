// llama2.c checkpoints (stories260K): greedy ids from BOS equal the golden vector. (BabyLlama's 3.7 MB of weights
// stay out of the repository to keep it small; its tokenizer, which has no byte tokens, is tested in
// tokenizer_llama2c_test.cpp.)
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <vector>

#include "kiln/error.h"
#include "kiln/model.h"

namespace kiln {
namespace {

const std::string kModels = std::string(KILN_SOURCE_DIR) + "/tests/fixtures/llama2c/";

int32_t argmax(const std::vector<float>& v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

// Greedy from BOS, one token per forward.
std::vector<int32_t> greedy(const Model& m, int n) {
  auto st = m.new_state(n + 1);
  std::vector<float> logits;
  std::vector<int32_t> out;
  int32_t tok = 1;
  for (int i = 0; i < n; ++i) {
    m.forward(*st, {&tok, 1}, logits);
    tok = argmax(logits);
    out.push_back(tok);
  }
  return out;
}

TEST(ModelLlama2c, Stories260KGolden) {
  auto m = Model::load(kModels + "stories260K/stories260K.bin");
  const ModelConfig& c = m->config();
  EXPECT_EQ(c.architecture, "llama2.c");
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.intermediate_size, 172);
  EXPECT_EQ(c.num_layers, 5);
  EXPECT_EQ(c.num_heads, 8);
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(m->num_parameters(), (1056540 - 28) / 4 - 512 * 4 * 2);  // everything but the header and freq_cis
  const std::vector<int32_t> golden = {403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338,
                                       401, 396, 267, 337, 410, 408, 419, 292, 411, 322, 265, 282, 295, 433, 426, 385};
  EXPECT_EQ(greedy(*m, 32), golden);
}

TEST(ModelLlama2c, PrefillEqualsStepByStep) {
  auto m = Model::load(kModels + "stories260K/stories260K.bin");
  const std::vector<int32_t> prompt = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298};
  auto a = m->new_state(32);
  std::vector<float> all;
  m->forward(*a, prompt, all, /*all_logits=*/true);
  ASSERT_EQ(all.size(), prompt.size() * 512);
  auto b = m->new_state(32);
  std::vector<float> one;
  for (size_t i = 0; i < prompt.size(); ++i) {
    m->forward(*b, {&prompt[i], 1}, one);
    for (int v = 0; v < 512; ++v) ASSERT_NEAR(one[v], all[i * 512 + v], 1e-4) << "position " << i;
  }
  EXPECT_EQ(a->length(), 11);
  // Truncating and re-running reproduces the same logits.
  a->truncate(5);
  std::vector<float> again;
  m->forward(*a, std::span<const int32_t>(prompt).subspan(5), again);
  for (int v = 0; v < 512; ++v) ASSERT_NEAR(again[v], all[10 * 512 + v], 1e-4);
}

TEST(ModelLlama2c, ForwardChecksCapacityAndIds) {
  auto m = Model::load(kModels + "stories260K/stories260K.bin");
  auto st = m->new_state(4);
  std::vector<float> logits;
  const std::vector<int32_t> five = {1, 2, 3, 4, 5};
  EXPECT_THROW(m->forward(*st, five, logits), Error);
  const std::vector<int32_t> bad = {1, 512};
  EXPECT_THROW(m->forward(*st, bad, logits), Error);
  EXPECT_EQ(st->length(), 0);
}

TEST(ModelLlama2c, TruncatedFileIsRefusedNamingIt) {
  const std::string src = kModels + "stories260K/stories260K.bin";
  const std::string dst = ::testing::TempDir() + "/kiln_truncated.bin";
  std::ifstream in(src, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), {});
  std::ofstream(dst, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size() - 100));
  try {
    Model::load(dst);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(dst), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("bytes"), std::string::npos) << e.what();
  }
  std::ofstream(dst, std::ios::binary).write(bytes.data(), 10);
  EXPECT_THROW(Model::load(dst), Error);
  std::filesystem::remove(dst);
  try {
    Model::load(kModels + "nope/missing.bin");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing.bin"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace kiln
