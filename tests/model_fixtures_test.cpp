// Every tiny HF fixture (tests/fixtures/models/*, made by tools/make_fixtures.py) against its float64
// transformers reference: exact greedy ids and logprobs within 1e-3; prefill equals token-by-token.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "kiln/model.h"
#include "runtime/sampler.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;

// KILN_MODEL_FIXTURES points the test at another folder of fixtures (e.g. freshly made ones).
const fs::path kFixtures = std::getenv("KILN_MODEL_FIXTURES") != nullptr
                               ? fs::path(std::getenv("KILN_MODEL_FIXTURES"))
                               : fs::path(KILN_SOURCE_DIR) / "tests" / "fixtures" / "models";

std::vector<std::string> fixture_names() {
  std::vector<std::string> names;
  if (!fs::is_directory(kFixtures)) return names;
  for (const auto& e : fs::directory_iterator(kFixtures))
    if (e.is_directory() && fs::exists(e.path() / "reference.json")) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

nlohmann::json read_reference(const std::string& name) {
  std::ifstream f(kFixtures / name / "reference.json");
  return nlohmann::json::parse(f);
}

TEST(ModelFixtures, FixturesExist) {
  const auto names = fixture_names();
  ASSERT_FALSE(names.empty()) << "no fixtures with a reference.json under " << kFixtures
                              << " (make them with tools/make_fixtures.py)";
  EXPECT_GE(names.size(), 21u);
}

class FixtureTest : public ::testing::TestWithParam<std::string> {};

TEST_P(FixtureTest, GreedyAndLogprobsMatchFloat64Reference) {
  const std::string name = GetParam();
  const nlohmann::json ref = read_reference(name);
  auto model = Model::load((kFixtures / name).string());
  EXPECT_EQ(model->config().architecture, ref["architecture"].get<std::string>());
  const int64_t vocab = model->config().vocab_size;
  int case_index = 0;
  for (const auto& c : ref["cases"]) {
    SCOPED_TRACE("case " + std::to_string(case_index++));
    const auto prompt = c["prompt_ids"].get<std::vector<int32_t>>();
    const auto& steps = c["steps"];
    auto state = model->new_state(static_cast<int64_t>(prompt.size() + steps.size() + 1));
    std::vector<float> logits;
    model->forward(*state, prompt, logits);
    std::vector<int32_t> got, want;
    for (size_t s = 0; s < steps.size(); ++s) {
      const auto& step = steps[s];
      ASSERT_EQ(static_cast<int64_t>(logits.size()), vocab);
      const auto lp = log_softmax(std::span<const float>(logits.data(), logits.size()));
      const int32_t mine = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
      const int32_t theirs = step["token_id"].get<int32_t>();
      got.push_back(mine);
      want.push_back(theirs);
      ASSERT_EQ(mine, theirs) << "step " << s << ": greedy token differs";
      EXPECT_NEAR(lp[theirs], step["logprob"].get<double>(), 1e-3) << "step " << s << " chosen logprob";
      for (const auto& t : step["top"]) {
        const int id = t["id"].get<int>();
        EXPECT_NEAR(lp[id], t["logprob"].get<double>(), 1e-3) << "step " << s << " top id " << id;
      }
      model->forward(*state, {&mine, 1}, logits);
    }
    EXPECT_EQ(got, want);
  }
}

// With an fp8 e4m3 KV cache (LoadOptions::kv_cache_fp8) every K and V value is rounded to 3 mantissa bits
// without a scale, so the model is no longer the reference's: fed the reference's tokens, the top-5 logprobs
// stay within the fixture's bound of it, and the greedy id matches wherever the reference's margin exceeds the
// bound. The tiny fixtures' K and V are small (random weights of std 0.02 on hidden sizes of 16-64), many of
// them in e4m3's subnormal range (below 2^-6, steps of 2^-9), which is where the rounding costs most: measured
// worst errors 0.06-1.05 nats (printed as `fp8-kv-error`; docs/models.md). The bounds are those plus a quarter,
// a guard against a change in what is rounded or how, and each run must also differ from the reference (the
// rounding happened). The head-size fixtures (head_dim 64/128/256, a fourth prompt of 150 tokens) measured
// gemma2-hd256-bf16 0.666, llama3-gqa-hd128-bf16 0.458, llama-mqa-hd128-f16 0.322, llama-gqa-hd64-f16 0.270.
const std::map<std::string, double> kFp8KvBound = {
    {"bloom-alibi-bf16", 0.17},     {"falcon-7b-mqa-bf16", 0.19}, {"falcon-newarch-gqa-f16", 0.25},
    {"gemma-mqa-bf16", 1.32},       {"gemma2-gqa-f32", 0.08},     {"gpt2-learned-f32", 0.26},
    {"gptj-rotary-f16", 0.2},       {"llama-mqa-f16", 0.64},      {"llama2-mha-f32", 0.43},
    {"llama3-gqa-bf16", 0.41},      {"mistral-swa", 0.66},        {"mpt-alibi-clip-f32", 0.17},
    {"neox-parallel-bf16", 0.17},   {"neox-sequential-f32", 0.18}, {"phi3-fused-f16", 0.72},
    {"qwen2-tied-bias", 0.62},      {"qwen3-qknorm", 0.38},       {"gemma2-hd256-bf16", 0.83},
    {"llama-gqa-hd64-f16", 0.34},   {"llama-mqa-hd128-f16", 0.4}, {"llama3-gqa-hd128-bf16", 0.57}};

TEST_P(FixtureTest, Fp8KvCacheStaysNearFloat64Reference) {
  const std::string name = GetParam();
  const nlohmann::json ref = read_reference(name);
  ASSERT_TRUE(kFp8KvBound.count(name)) << "no fp8 KV bound for " << name;
  const double bound = kFp8KvBound.at(name);
  LoadOptions o;
  o.kv_cache_fp8 = true;
  auto model = Model::load((kFixtures / name).string(), o);
  double worst = 0.0;
  int compared = 0;
  for (const auto& c : ref["cases"]) {
    const auto prompt = c["prompt_ids"].get<std::vector<int32_t>>();
    const auto& steps = c["steps"];
    auto state = model->new_state(static_cast<int64_t>(prompt.size() + steps.size() + 1));
    std::vector<float> logits;
    model->forward(*state, prompt, logits);
    for (size_t s = 0; s < steps.size(); ++s) {
      const auto& step = steps[s];
      const auto lp = log_softmax(std::span<const float>(logits.data(), logits.size()));
      const int32_t mine = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
      const int32_t theirs = step["token_id"].get<int32_t>();
      const auto& top = step["top"];
      const double margin = top[0]["logprob"].get<double>() - top[1]["logprob"].get<double>();
      if (mine != theirs) EXPECT_LE(margin, bound) << "step " << s << ": greedy " << mine << " vs " << theirs;
      for (const auto& t : top) {
        const double d = std::fabs(lp[t["id"].get<int>()] - t["logprob"].get<double>());
        worst = std::max(worst, d);
        EXPECT_LE(d, bound) << "step " << s << " top id " << t["id"].get<int>();
      }
      ++compared;
      model->forward(*state, {&theirs, 1}, logits);
    }
  }
  EXPECT_GT(worst, 1e-3) << "an fp8 KV cache gives the float64 reference's logprobs: nothing was rounded";
  std::printf("fp8-kv-error %-24s worst top-5 logprob error %.4f over %d steps (bound %.2f)\n", name.c_str(), worst,
              compared, bound);
}

// One forward over the whole sequence, token-by-token, and uneven chunks all give the same logits.
TEST_P(FixtureTest, PrefillEqualsTokenByTokenAndChunks) {
  const std::string name = GetParam();
  const nlohmann::json ref = read_reference(name);
  auto model = Model::load((kFixtures / name).string());
  const int64_t V = model->config().vocab_size;
  const auto& c = ref["cases"].back();
  std::vector<int32_t> seq = c["prompt_ids"].get<std::vector<int32_t>>();
  for (const auto& s : c["steps"]) seq.push_back(s["token_id"].get<int32_t>());
  const int64_t n = static_cast<int64_t>(seq.size());

  auto whole = model->new_state(n);
  std::vector<float> all;
  model->forward(*whole, seq, all, /*all_logits=*/true);
  ASSERT_EQ(static_cast<int64_t>(all.size()), n * V);

  auto single = model->new_state(n);
  std::vector<float> one;
  for (int64_t i = 0; i < n; ++i) {
    model->forward(*single, {&seq[i], 1}, one);
    for (int64_t v = 0; v < V; ++v) ASSERT_NEAR(one[v], all[i * V + v], 1e-4) << "position " << i << " id " << v;
  }

  auto chunked = model->new_state(n);
  std::vector<float> part;
  int64_t pos = 0;
  const int64_t lens[] = {5, 1, 11, 2, 100};  // repeated until the sequence is fed (166 tokens on the long cases)
  for (size_t k = 0; pos < n; ++k) {
    const int64_t take = std::min(lens[k % std::size(lens)], n - pos);
    model->forward(*chunked, std::span<const int32_t>(seq).subspan(pos, take), part, true);
    for (int64_t i = 0; i < take; ++i)
      for (int64_t v = 0; v < V; ++v) ASSERT_NEAR(part[i * V + v], all[(pos + i) * V + v], 1e-4);
    pos += take;
  }
  EXPECT_EQ(chunked->length(), n);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, FixtureTest, ::testing::ValuesIn(fixture_names()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string s = info.param;
                           for (char& ch : s)
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return s;
                         });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(FixtureTest);

// The traits each fixture exists to exercise were read from its config.json.
TEST(ModelFixtures, ConfigTraits) {
  auto load = [](const char* name) { return Model::load((kFixtures / name).string()); };
  {
    auto m = load("llama3-gqa-bf16");
    const ModelConfig& c = m->config();
    EXPECT_EQ(c.family, "llama");
    EXPECT_EQ(c.rope.scaling, RopeScaling::Llama3);
    EXPECT_EQ(c.rope.original_max_position, 64);
    EXPECT_DOUBLE_EQ(c.rope.theta, 500000.0);
    EXPECT_EQ(c.num_kv_heads, 2);
    EXPECT_TRUE(c.tie_word_embeddings);
    EXPECT_EQ(c.checkpoint_dtype, DType::BF16);
    EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{2, 3}));
  }
  {
    auto m = load("llama-mqa-f16");
    const ModelConfig& c = m->config();
    EXPECT_EQ(c.num_kv_heads, 1);
    EXPECT_EQ(c.rope.scaling, RopeScaling::Linear);
    EXPECT_DOUBLE_EQ(c.rope.factor, 2.0);
    EXPECT_TRUE(c.qkv_bias && c.o_bias && c.mlp_bias);
    EXPECT_EQ(c.checkpoint_dtype, DType::F16);
  }
  {
    auto m = load("mistral-swa");
    EXPECT_EQ(m->config().family, "mistral");
    EXPECT_EQ(m->config().window_for_layer(0), 8);
    EXPECT_EQ(m->config().window_for_layer(1), 8);
  }
  {
    auto m = load("qwen2-tied-bias");
    const ModelConfig& c = m->config();
    EXPECT_EQ(c.family, "qwen2");
    EXPECT_TRUE(c.qkv_bias);
    EXPECT_FALSE(c.o_bias);
    EXPECT_TRUE(c.tie_word_embeddings);
    EXPECT_EQ(c.window_for_layer(0), 0);
  }
  {
    auto m = load("qwen3-qknorm");
    const ModelConfig& c = m->config();
    EXPECT_EQ(c.family, "qwen3");
    EXPECT_TRUE(c.qk_norm);
    EXPECT_EQ(c.head_dim, 16);
    EXPECT_NE(c.head_dim * c.num_heads, c.hidden_size);
  }
}

// The model-zoo fixtures: each family's traits as read from its config.json.
TEST(ModelFixtures, ZooConfigTraits) {
  auto load = [](const char* name) { return Model::load((kFixtures / name).string()); };
  {
    auto m = load("gpt2-learned-f32");
    const ModelConfig& c = m->config();
    EXPECT_EQ(c.family, "gpt2");
    EXPECT_EQ(c.position, PositionKind::Learned);
    EXPECT_EQ(c.max_position_embeddings, 64);
    EXPECT_EQ(c.norm, NormKind::LayerNorm);
    EXPECT_EQ(c.act, ActKind::GeluTanh);
    EXPECT_FALSE(c.gated_mlp);
    EXPECT_EQ(c.intermediate_size, 4 * c.hidden_size);
    EXPECT_TRUE(c.qkv_bias && c.o_bias && c.mlp_bias && c.tie_word_embeddings);
    // Past the learned positions: refused with the limit named, the state unchanged.
    auto st = m->new_state(80);
    std::vector<int32_t> ids(65, 1);
    std::vector<float> logits;
    try {
      m->forward(*st, ids, logits);
      ADD_FAILURE() << "expected an error past 64 positions";
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find("64"), std::string::npos) << e.what();
    }
    EXPECT_EQ(st->length(), 0);
  }
  {
    auto m = load("gptj-rotary-f16");
    const ModelConfig& c = m->config();
    EXPECT_EQ(c.family, "gptj");
    EXPECT_TRUE(c.rope.interleaved);
    EXPECT_EQ(c.rope.rotary_dim, 8);
    EXPECT_EQ(c.head_dim, 16);
    EXPECT_EQ(c.norm_layout, NormLayout::Shared);
    EXPECT_TRUE(c.parallel_residual && c.lm_head_bias && c.mlp_bias);
    EXPECT_FALSE(c.qkv_bias || c.o_bias || c.tie_word_embeddings);
    EXPECT_EQ(c.checkpoint_dtype, DType::F16);
  }
  {
    auto par = load("neox-parallel-bf16");
    EXPECT_EQ(par->config().family, "gpt_neox");
    EXPECT_TRUE(par->config().parallel_residual);
    EXPECT_EQ(par->config().rope.rotary_dim, 6);  // 12 * 0.5
    EXPECT_EQ(par->config().norm_layout, NormLayout::Pre);
    auto seq = load("neox-sequential-f32");
    EXPECT_FALSE(seq->config().parallel_residual);
    EXPECT_EQ(seq->config().rope.rotary_dim, 4);  // 16 * 0.25
    EXPECT_DOUBLE_EQ(seq->config().rope.theta, 5000.0);
  }
  {
    auto mq = load("falcon-7b-mqa-bf16");
    EXPECT_EQ(mq->config().family, "falcon");
    EXPECT_EQ(mq->config().num_kv_heads, 1);
    EXPECT_EQ(mq->config().norm_layout, NormLayout::Shared);
    EXPECT_TRUE(mq->config().parallel_residual && mq->config().tie_word_embeddings);
    EXPECT_FALSE(mq->config().qkv_bias);
    auto na = load("falcon-newarch-gqa-f16");
    EXPECT_EQ(na->config().num_kv_heads, 2);
    EXPECT_EQ(na->config().norm_layout, NormLayout::Pre);  // ln_attn and ln_mlp
    EXPECT_TRUE(na->config().parallel_residual && na->config().qkv_bias && na->config().mlp_bias);
    EXPECT_EQ(na->config().intermediate_size, 176);
    EXPECT_FALSE(na->config().tie_word_embeddings);
  }
  {
    auto m = load("mpt-alibi-clip-f32");
    const ModelConfig& c = m->config();
    EXPECT_EQ(c.family, "mpt");
    EXPECT_EQ(c.position, PositionKind::Alibi);
    EXPECT_DOUBLE_EQ(c.alibi_bias_max, 8.0);
    EXPECT_DOUBLE_EQ(c.clip_qkv, 1.5);
    EXPECT_FALSE(c.norm_bias || c.qkv_bias || c.o_bias || c.mlp_bias);
    EXPECT_EQ(c.act, ActKind::GeluErf);
    EXPECT_EQ(c.num_heads, 6);
  }
  {
    auto m = load("bloom-alibi-bf16");
    const ModelConfig& c = m->config();
    EXPECT_EQ(c.family, "bloom");
    EXPECT_EQ(c.position, PositionKind::Alibi);
    EXPECT_TRUE(c.embed_norm && c.norm_bias && c.qkv_bias && c.tie_word_embeddings);
  }
  {
    auto m = load("gemma-mqa-bf16");
    const ModelConfig& c = m->config();
    EXPECT_EQ(c.family, "gemma");
    EXPECT_TRUE(c.norm_add_one && c.tie_word_embeddings);
    EXPECT_EQ(c.act, ActKind::GeluTanh);
    EXPECT_EQ(c.num_kv_heads, 1);
    EXPECT_EQ(c.head_dim, 16);
    // sqrt(48) = 6.928..., as HF multiplies it: a bf16 tensor, 6.9375.
    EXPECT_DOUBLE_EQ(c.embed_scale, 6.9375);
  }
  {
    auto m = load("gemma2-gqa-f32");
    const ModelConfig& c = m->config();
    EXPECT_EQ(c.family, "gemma2");
    EXPECT_EQ(c.norm_layout, NormLayout::PrePost);
    EXPECT_DOUBLE_EQ(c.attn_logit_softcap, 4.0);
    EXPECT_DOUBLE_EQ(c.final_logit_softcap, 6.0);
    EXPECT_DOUBLE_EQ(c.attn_scale, 1.0 / std::sqrt(24.0));
    EXPECT_EQ(c.layer_sliding_window, (std::vector<int64_t>{6, 0, 6}));
    EXPECT_DOUBLE_EQ(c.embed_scale, static_cast<float>(std::sqrt(48.0)));  // f32 checkpoint
  }
  {
    auto m = load("phi3-fused-f16");
    const ModelConfig& c = m->config();
    EXPECT_EQ(c.family, "phi3");
    EXPECT_EQ(c.num_kv_heads, 2);
    EXPECT_EQ(c.window_for_layer(0), 10);
    EXPECT_EQ(c.window_for_layer(1), 10);
    EXPECT_TRUE(c.gated_mlp);
  }
}

// The head-size fixtures: head_dim 64, 128 and 256 (the CUDA backend's tensor-core attention instances) and a
// prompt long enough for several KV blocks and a split decode.
TEST(ModelFixtures, HeadSizeConfigTraits) {
  auto load = [](const char* name) { return Model::load((kFixtures / name).string()); };
  {
    auto m = load("llama3-gqa-hd128-bf16");
    const ModelConfig& c = m->config();
    EXPECT_EQ(c.family, "llama");
    EXPECT_EQ(c.head_dim, 128);
    EXPECT_EQ(c.num_heads, 4);
    EXPECT_EQ(c.num_kv_heads, 2);
    EXPECT_EQ(c.rope.scaling, RopeScaling::Llama3);
    EXPECT_DOUBLE_EQ(c.rope.theta, 500000.0);
    EXPECT_EQ(c.checkpoint_dtype, DType::BF16);
  }
  {
    auto m = load("llama-gqa-hd64-f16");
    const ModelConfig& c = m->config();
    EXPECT_EQ(c.head_dim, 64);
    EXPECT_EQ(c.num_heads, 8);
    EXPECT_EQ(c.num_kv_heads, 2);
    EXPECT_EQ(c.checkpoint_dtype, DType::F16);
  }
  {
    auto m = load("llama-mqa-hd128-f16");
    const ModelConfig& c = m->config();
    EXPECT_EQ(c.head_dim, 128);
    EXPECT_EQ(c.num_heads, 8);
    EXPECT_EQ(c.num_kv_heads, 1);
    EXPECT_EQ(c.checkpoint_dtype, DType::F16);
  }
  {
    auto m = load("gemma2-hd256-bf16");
    const ModelConfig& c = m->config();
    EXPECT_EQ(c.family, "gemma2");
    EXPECT_EQ(c.head_dim, 256);
    EXPECT_EQ(c.num_heads, 2);
    EXPECT_EQ(c.num_kv_heads, 1);
    EXPECT_DOUBLE_EQ(c.attn_scale, 1.0 / 16.0);  // query_pre_attn_scalar 256
    EXPECT_DOUBLE_EQ(c.attn_logit_softcap, 8.0);
    EXPECT_DOUBLE_EQ(c.final_logit_softcap, 10.0);
    EXPECT_EQ(c.layer_sliding_window, (std::vector<int64_t>{100, 0}));
    EXPECT_DOUBLE_EQ(c.embed_scale, 8.0);  // sqrt(64), exact in bf16
    EXPECT_FALSE(c.tie_word_embeddings);
    EXPECT_EQ(c.checkpoint_dtype, DType::BF16);
  }
  for (const char* name : {"llama3-gqa-hd128-bf16", "llama-gqa-hd64-f16", "llama-mqa-hd128-f16", "gemma2-hd256-bf16"}) {
    SCOPED_TRACE(name);
    const nlohmann::json ref = read_reference(name);
    // A 150-token prompt: with its 16 steps, 11 KV blocks of 16, past gemma2-hd256-bf16's window of 100.
    ASSERT_EQ(ref["cases"].size(), 4u);
    EXPECT_EQ(ref["cases"][3]["prompt_ids"].size(), 150u);
  }
}

}  // namespace
}  // namespace kiln
