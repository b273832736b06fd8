// CudaDecoderModel agrees with the CPU DecoderModel on random checkpoints of the Llama family and of every other
// trait set (LayerNorm, learned / ALiBi positions, parallel residuals, pre+post norms, soft-caps, clip_qkv, MQA;
// bf16-representable weights, so both run the same model): logits of a prefill, of chunked prefills, and of
// greedy decode steps.
#include "model/cuda/cuda_decoder_model.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>

#include "cuda_test_util.h"
#include "kiln/error.h"
#include "model/cpu/cpu_decoder_model.h"

namespace kiln {
namespace {

// Random weights by role and layer, rounded to bf16; norms near 1.
class RandomSource final : public WeightSource {
 public:
  explicit RandomSource(const ModelConfig& c) : c_(c) {}
  std::string path() const override { return "random"; }
  std::string name(WeightRole role, int64_t layer) const override {
    return "role" + std::to_string(static_cast<int>(role)) + ".layer" + std::to_string(layer);
  }
  // Every role the config plans exists (both backends plan from the config); lm_head only when untied.
  bool has(WeightRole role, int64_t) const override {
    return role != WeightRole::LmHead || !c_.tie_word_embeddings;
  }
  StoredTensor read(WeightRole role, int64_t layer, const Shape& shape) const override {
    StoredTensor t{DType::F32, shape, std::vector<uint8_t>(static_cast<size_t>(shape_numel(shape)) * 4)};
    float* dst = reinterpret_cast<float*>(t.bytes.data());
    std::mt19937 rng(static_cast<uint32_t>(1000 * static_cast<int>(role) + layer + 7));
    const int64_t n = shape_numel(shape);
    const bool norm = role == WeightRole::FinalNorm || role == WeightRole::AttnNorm || role == WeightRole::MlpNorm ||
                      role == WeightRole::QNorm || role == WeightRole::KNorm || role == WeightRole::EmbedNorm ||
                      role == WeightRole::PostAttnNorm || role == WeightRole::PostMlpNorm;
    const float scale = norm                        ? 0.1f
                        : role == WeightRole::Embed ? 1.0f
                                                    : 1.0f / std::sqrt(static_cast<float>(shape.back()));
    std::normal_distribution<float> d(0.0f, scale);
    for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(f32_to_bf16((norm ? 1.0f : 0.0f) + d(rng)));
    return t;
  }

 private:
  ModelConfig c_;
};

ModelConfig llama_like(int64_t hd, int64_t heads, int64_t kv_heads) {
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.family = "llama";
  c.vocab_size = 1000;
  c.hidden_size = 256;
  c.intermediate_size = 512;
  c.num_layers = 2;
  c.num_heads = heads;
  c.num_kv_heads = kv_heads;
  c.head_dim = hd;
  c.max_position_embeddings = 4096;
  c.norm_eps = 1e-5;
  c.rope.theta = 500000.0;
  c.rope.rotary_dim = hd;
  c.rope.scaling = RopeScaling::Llama3;
  c.rope.factor = 8.0;
  c.checkpoint_dtype = DType::BF16;
  return c;
}

double rel(const std::vector<float>& a, const std::vector<float>& b) {
  return testing::rel_err(a, b);
}

void compare(const ModelConfig& c, const char* what, std::optional<DType> dtype = std::nullopt) {
  RandomSource src(c);
  auto cpu_model = CpuDecoderModel::create(c, src, {});
  CudaModelOptions opt;
  opt.max_state_tokens = 32;  // prompts longer than this run as chunks
  opt.max_logit_rows = 16;
  LoadOptions lo;
  lo.compute_dtype = dtype;
  auto gpu_model = CudaDecoderModel::create(c, src, lo, opt);
  EXPECT_EQ(gpu_model->num_parameters(), cpu_model->num_parameters()) << what;

  std::mt19937 rng(3);
  std::vector<int32_t> prompt(77);
  for (auto& t : prompt) t = static_cast<int32_t>(rng() % c.vocab_size);
  auto cs = cpu_model->new_state(200);
  auto gs = gpu_model->new_state(200);
  std::vector<float> cl, gl;
  // All logits of a 77-token prompt (three chunks on the GPU).
  cpu_model->forward(*cs, prompt, cl, true);
  gpu_model->forward(*gs, prompt, gl, true);
  ASSERT_EQ(gl.size(), cl.size());
  EXPECT_LT(rel(gl, cl), 3e-2) << what << ": prefill logits";
  EXPECT_EQ(gs->length(), 77);
  // Greedy decode steps, both fed the CPU's choice.
  std::vector<float> last(cl.end() - c.vocab_size, cl.end());
  for (int step = 0; step < 8; ++step) {
    const int32_t next = static_cast<int32_t>(std::max_element(last.begin(), last.end()) - last.begin());
    const std::vector<int32_t> one = {next};
    cpu_model->forward(*cs, one, cl);
    gpu_model->forward(*gs, one, gl);
    EXPECT_LT(rel(gl, cl), 3e-2) << what << ": decode step " << step;
    std::vector<float> sorted = cl;
    std::sort(sorted.rbegin(), sorted.rend());
    const int32_t g_best = static_cast<int32_t>(std::max_element(gl.begin(), gl.end()) - gl.begin());
    const int32_t c_best = static_cast<int32_t>(std::max_element(cl.begin(), cl.end()) - cl.begin());
    if (sorted[0] - sorted[1] > 0.1f) EXPECT_EQ(g_best, c_best) << what << ": decode step " << step;
    last = cl;
  }
  // Truncation then a chunk after a cached prefix equals the CPU doing the same.
  cs->truncate(40);
  gs->truncate(40);
  const std::vector<int32_t> chunk(prompt.begin() + 10, prompt.begin() + 50);
  cpu_model->forward(*cs, chunk, cl);
  gpu_model->forward(*gs, chunk, gl);
  EXPECT_LT(rel(gl, cl), 3e-2) << what << ": chunk after truncation";
}

TEST(CudaDecoderModel, MatchesCpuDecoderModel) {
  KILN_REQUIRE_GPU();
  compare(llama_like(64, 4, 2), "llama hd64 gqa2");
  {
    ModelConfig c = llama_like(128, 4, 1);  // Qwen-like: q/k norms, qkv bias, tied embeddings, MQA
    c.family = "qwen3";
    c.qk_norm = true;
    c.qkv_bias = true;
    c.tie_word_embeddings = true;
    c.rope.scaling = RopeScaling::None;
    compare(c, "qwen-like hd128 mqa");
  }
  {
    ModelConfig c = llama_like(80, 4, 4);  // Mistral-like sliding window, partial rotary, MHA
    c.family = "mistral";
    c.sliding_window = 24;
    c.rope.rotary_dim = 40;
    c.rope.scaling = RopeScaling::None;
    compare(c, "mistral-like hd80 window");
  }
  // Head dims of the generic attention kernel, and f16 compute.
  compare(llama_like(16, 4, 2), "llama hd16 gqa2 (generic attention)");
  compare(llama_like(12, 6, 1), "llama hd12 mqa (generic attention)");
  compare(llama_like(64, 4, 2), "llama hd64 gqa2 f16", DType::F16);
  {
    ModelConfig c = llama_like(16, 4, 4);
    c.sliding_window = 9;
    compare(c, "llama hd16 window f16", DType::F16);
  }
}

// The families beyond Llama, trait by trait (the fixtures check the real layouts against HF).
TEST(CudaDecoderModel, MatchesCpuDecoderModelOtherFamilies) {
  KILN_REQUIRE_GPU();
  {
    ModelConfig c = llama_like(64, 4, 4);  // GPT-2: LayerNorm with biases, learned positions, GELU fc1/fc2, biases
    c.family = "gpt2";
    c.norm = NormKind::LayerNorm;
    c.position = PositionKind::Learned;
    c.max_position_embeddings = 256;
    c.gated_mlp = false;
    c.act = ActKind::GeluTanh;
    c.qkv_bias = c.o_bias = c.mlp_bias = true;
    c.tie_word_embeddings = true;
    compare(c, "gpt2-like layernorm learned positions");
  }
  {
    ModelConfig c = llama_like(64, 4, 4);  // GPT-J: one shared LayerNorm, parallel residual, interleaved partial
    c.family = "gptj";                     // rotary, lm_head bias
    c.norm = NormKind::LayerNorm;
    c.norm_layout = NormLayout::Shared;
    c.parallel_residual = true;
    c.gated_mlp = false;
    c.act = ActKind::GeluTanh;
    c.mlp_bias = true;
    c.rope.scaling = RopeScaling::None;
    c.rope.rotary_dim = 32;
    c.rope.interleaved = true;
    c.lm_head_bias = true;
    compare(c, "gptj-like shared norm parallel interleaved rotary", DType::F16);
  }
  {
    ModelConfig c = llama_like(32, 8, 8);  // NeoX: parallel residual with two LayerNorms, half-split partial rotary
    c.family = "gpt_neox";
    c.norm = NormKind::LayerNorm;
    c.parallel_residual = true;
    c.gated_mlp = false;
    c.act = ActKind::GeluErf;
    c.qkv_bias = c.o_bias = c.mlp_bias = true;
    c.rope.scaling = RopeScaling::None;
    c.rope.rotary_dim = 8;
    compare(c, "neox-like parallel two norms partial rotary");
  }
  {
    ModelConfig c = llama_like(32, 6, 6);  // MPT: ALiBi over 6 heads, clip_qkv, bias-free LayerNorms; BLOOM's
    c.family = "mpt";                      // embedding LayerNorm
    c.norm = NormKind::LayerNorm;
    c.norm_bias = false;
    c.position = PositionKind::Alibi;
    c.clip_qkv = 0.8;
    c.gated_mlp = false;
    c.act = ActKind::GeluErf;
    c.embed_norm = true;
    c.hidden_size = 192;
    compare(c, "mpt-like alibi clip_qkv embed norm");
  }
  {
    ModelConfig c = llama_like(64, 4, 2);  // Gemma 2: pre+post (1 + w) norms, soft-caps, alternating window,
    c.family = "gemma2";                   // GeGLU, embedding scale, query_pre_attn_scalar
    c.norm_layout = NormLayout::PrePost;
    c.norm_add_one = true;
    c.attn_logit_softcap = 2.0;
    c.final_logit_softcap = 10.0;
    c.layer_sliding_window = {9, 0};
    c.act = ActKind::GeluTanh;
    c.embed_scale = 16.0;
    c.attn_scale = 1.0 / std::sqrt(24.0);
    c.rope.scaling = RopeScaling::None;
    c.tie_word_embeddings = true;
    compare(c, "gemma2-like pre+post norms softcaps window");
  }
  {
    ModelConfig c = llama_like(64, 4, 1);  // Falcon-7B: MQA, one shared LayerNorm, parallel residual, no biases
    c.family = "falcon";
    c.norm = NormKind::LayerNorm;
    c.norm_layout = NormLayout::Shared;
    c.parallel_residual = true;
    c.gated_mlp = false;
    c.act = ActKind::GeluErf;
    c.rope.scaling = RopeScaling::None;
    c.tie_word_embeddings = true;
    compare(c, "falcon-like mqa shared norm parallel");
  }
}

TEST(CudaDecoderModel, RefusesUnsupportedTraits) {
  KILN_REQUIRE_GPU();
  auto refused = [](const ModelConfig& c, const LoadOptions& o) {
    RandomSource src(c);
    try {
      CudaDecoderModel::create(c, src, o);
      ADD_FAILURE() << "created";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;  // one line
      std::printf("  refused: %s\n", msg.c_str());
    }
  };
  refused(llama_like(15, 4, 2), {});   // odd head_dim (RoPE rotates pairs)
  refused(llama_like(288, 2, 2), {});  // head_dim over 256
  LoadOptions f32;
  f32.compute_dtype = DType::F32;
  refused(llama_like(64, 4, 2), f32);
}

}  // namespace
}  // namespace kiln
