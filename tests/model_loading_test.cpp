// Model loading: refusals that name what is wrong, config.json spellings (HF 4.x and 5.x), and GGUF
// files written from a fixture (q/k rows permuted as llama.cpp's converter does) matching the HF load.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "kernels/cpu/ops.h"
#include "kiln/error.h"
#include "model/families/family.h"
#include "kiln/model.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const fs::path kFixtures = fs::path(KILN_SOURCE_DIR) / "tests" / "fixtures" / "models";

fs::path temp_dir(const std::string& name) {
  fs::path p = fs::path(::testing::TempDir()) / ("kiln_model_loading_" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

void write_json(const fs::path& p, const json& j) { std::ofstream(p) << j.dump(1); }

json read_json(const fs::path& p) { return json::parse(std::ifstream(p)); }

// Expects `fn` to throw kiln::Error whose message contains every one of `parts`.
template <typename Fn>
void expect_error(Fn fn, std::initializer_list<std::string> parts) {
  try {
    fn();
    ADD_FAILURE() << "expected kiln::Error";
  } catch (const Error& e) {
    for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

// A tensor to write: name, shape, f32 values.
struct OutTensor {
  std::string name;
  Shape shape;
  std::vector<float> data;
};

void write_safetensors(const fs::path& path, const std::vector<OutTensor>& tensors) {
  json header = json::object();
  size_t off = 0;
  for (const auto& t : tensors) {
    const size_t n = t.data.size() * sizeof(float);
    header[t.name] = {{"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {off, off + n}}};
    off += n;
  }
  std::string h = header.dump();
  while (h.size() % 8) h += ' ';
  std::ofstream f(path, std::ios::binary);
  const uint64_t len = h.size();
  f.write(reinterpret_cast<const char*>(&len), 8);
  f.write(h.data(), static_cast<std::streamsize>(h.size()));
  for (const auto& t : tensors)
    f.write(reinterpret_cast<const char*>(t.data.data()), static_cast<std::streamsize>(t.data.size() * 4));
}

// All tensors of a fixture as f32.
std::vector<OutTensor> read_fixture_tensors(const std::string& name) {
  io::SafetensorsCheckpoint ck((kFixtures / name).string());
  std::vector<OutTensor> out;
  for (const auto& n : ck.names()) {
    const io::TensorEntry& e = ck.get(n);
    OutTensor t{n, e.shape, std::vector<float>(static_cast<size_t>(shape_numel(e.shape)))};
    convert_to_f32(e.dtype, e.data, t.data.data(), t.data.size());
    out.push_back(std::move(t));
  }
  return out;
}

// A copy of a fixture folder whose config.json was edited by `edit`.
fs::path fixture_copy(const std::string& name, const std::function<void(json&)>& edit) {
  fs::path dir = temp_dir(name + "_copy");
  fs::copy_file(kFixtures / name / "model.safetensors", dir / "model.safetensors");
  json c = read_json(kFixtures / name / "config.json");
  edit(c);
  write_json(dir / "config.json", c);
  return dir;
}

TEST(ModelLoading, UnknownArchitectureIsRefusedNamingIt) {
  const fs::path dir = fixture_copy("llama2-mha-f32", [](json& c) { c["architectures"] = {"FooBarForCausalLM"}; });
  expect_error([&] { Model::load(dir.string()); },
               {"FooBarForCausalLM", (dir / "config.json").string(), "LlamaForCausalLM"});
  const fs::path none = fixture_copy("llama2-mha-f32", [](json& c) { c.erase("architectures"); });
  expect_error([&] { Model::load(none.string()); }, {"architectures", (none / "config.json").string()});
}

TEST(ModelLoading, MissingTensorIsReportedByName) {
  auto tensors = read_fixture_tensors("llama2-mha-f32");
  std::erase_if(tensors, [](const OutTensor& t) { return t.name == "model.layers.1.mlp.up_proj.weight"; });
  const fs::path dir = temp_dir("missing");
  fs::copy_file(kFixtures / "llama2-mha-f32" / "config.json", dir / "config.json");
  write_safetensors(dir / "model.safetensors", tensors);
  expect_error([&] { Model::load(dir.string()); }, {"model.layers.1.mlp.up_proj.weight", dir.string()});
}

TEST(ModelLoading, WrongShapeIsReportedWithTensorAndShapes) {
  auto tensors = read_fixture_tensors("llama2-mha-f32");
  for (auto& t : tensors)
    if (t.name == "model.layers.0.mlp.gate_proj.weight") {
      t.shape = {t.shape[1], t.shape[0]};  // same size, transposed shape
    }
  const fs::path dir = temp_dir("shape");
  fs::copy_file(kFixtures / "llama2-mha-f32" / "config.json", dir / "config.json");
  write_safetensors(dir / "model.safetensors", tensors);
  expect_error([&] { Model::load(dir.string()); },
               {"model.layers.0.mlp.gate_proj.weight", "model.safetensors", "[48, 100]", "[100, 48]"});
  // A config whose sizes disagree with the tensors: named by the first tensor that does not fit.
  const fs::path dir2 = fixture_copy("llama2-mha-f32", [](json& c) { c["intermediate_size"] = 101; });
  expect_error([&] { Model::load(dir2.string()); }, {"mlp.gate_proj.weight", "[101, 48]"});
}

TEST(ModelLoading, MissingFilesAreNamed) {
  const fs::path dir = temp_dir("empty");
  expect_error([&] { Model::load(dir.string()); }, {"config.json", dir.string()});
  fs::copy_file(kFixtures / "llama2-mha-f32" / "config.json", dir / "config.json");
  expect_error([&] { Model::load(dir.string()); }, {dir.string()});
  expect_error([&] { Model::load((dir / "nope.gguf").string()); }, {"nope.gguf"});
  std::ofstream(dir / "weights.txt") << "x";
  expect_error([&] { Model::load((dir / "weights.txt").string()); }, {"weights.txt"});
  std::ofstream(dir / "config.json") << "{ not json";
  expect_error([&] { Model::load(dir.string()); }, {(dir / "config.json").string()});
}

TEST(ModelLoading, ProgressGoesToStderr) {
  LoadOptions opt;
  opt.progress = true;
  ::testing::internal::CaptureStderr();
  auto m = Model::load((kFixtures / "qwen2-tied-bias").string(), opt);
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("qwen2-tied-bias"), std::string::npos) << err;
  EXPECT_NE(err.find("parameters"), std::string::npos) << err;
  EXPECT_EQ(m->num_parameters(), 389 * 48 + 48 + 2 * (48 + 48 * 48 + 2 * 16 * 48 + 48 + 2 * 16 + 48 * 48 + 48 +
                                                       3 * 112 * 48));
  EXPECT_EQ(m->weight_bytes() % 4, 0u);
  EXPECT_GE(m->weight_bytes(), static_cast<size_t>(m->num_parameters()) * 4);
}

// --- config.json spellings ----------------------------------------------------------------------

json base_config(const char* arch) {
  return {{"architectures", {arch}}, {"vocab_size", 100},      {"hidden_size", 32},
          {"intermediate_size", 64}, {"num_hidden_layers", 4}, {"num_attention_heads", 4}};
}

ModelConfig parse(const json& j) {
  const Family* f = find_family(j["architectures"][0].get<std::string>());
  if (f == nullptr) throw Error("no family");
  return f->parse_config(j, "/x/config.json");
}

TEST(ModelConfigParse, Hf4xRopeSpellingAndDefaults) {
  json j = base_config("LlamaForCausalLM");
  j["rope_theta"] = 500000;
  j["rope_scaling"] = {{"type", "llama3"}, {"factor", 32}, {"low_freq_factor", 1}, {"high_freq_factor", 4},
                       {"original_max_position_embeddings", 8192}};
  j["torch_dtype"] = "bfloat16";
  j["eos_token_id"] = 7;
  const ModelConfig c = parse(j);
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.rope.rotary_dim, 8);
  EXPECT_DOUBLE_EQ(c.rope.theta, 500000);
  EXPECT_EQ(c.rope.scaling, RopeScaling::Llama3);
  EXPECT_DOUBLE_EQ(c.rope.factor, 32);
  EXPECT_EQ(c.rope.original_max_position, 8192);
  EXPECT_EQ(c.checkpoint_dtype, DType::BF16);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{7});
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.sliding_window, 0);
}

TEST(ModelConfigParse, RefusalsNameFieldAndFile) {
  json j = base_config("LlamaForCausalLM");
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4}};
  expect_error([&] { parse(j); }, {"yarn", "/x/config.json"});
  j = base_config("LlamaForCausalLM");
  j.erase("hidden_size");
  expect_error([&] { parse(j); }, {"hidden_size", "/x/config.json"});
  j = base_config("LlamaForCausalLM");
  j["num_key_value_heads"] = 3;
  expect_error([&] { parse(j); }, {"num_key_value_heads"});
  j = base_config("LlamaForCausalLM");
  j["hidden_act"] = "relu2";
  expect_error([&] { parse(j); }, {"relu2"});
  j = base_config("LlamaForCausalLM");
  j["rope_scaling"] = {{"rope_type", "linear"}};
  expect_error([&] { parse(j); }, {"factor"});
}

TEST(ModelConfigParse, QwenSlidingWindowOnlyWhenEnabled) {
  json j = base_config("Qwen2ForCausalLM");
  j["sliding_window"] = 16;
  j["use_sliding_window"] = false;
  j["max_window_layers"] = 2;
  ModelConfig c = parse(j);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  for (int l = 0; l < 4; ++l) EXPECT_EQ(c.window_for_layer(l), 0);
  j["use_sliding_window"] = true;
  c = parse(j);
  EXPECT_EQ(c.window_for_layer(0), 0);
  EXPECT_EQ(c.window_for_layer(1), 0);
  EXPECT_EQ(c.window_for_layer(2), 16);
  EXPECT_EQ(c.window_for_layer(3), 16);
  j["layer_types"] = {"sliding_attention", "full_attention", "sliding_attention", "full_attention"};
  c = parse(j);
  EXPECT_EQ(c.window_for_layer(0), 16);
  EXPECT_EQ(c.window_for_layer(1), 0);
  j["layer_types"] = {"sliding_attention"};
  expect_error([&] { parse(j); }, {"layer_types"});
}

TEST(ModelConfigParse, MistralQwen3AndLlamaBiases) {
  json m = base_config("MistralForCausalLM");
  m["sliding_window"] = 4096;
  EXPECT_EQ(parse(m).window_for_layer(3), 4096);
  m["sliding_window"] = nullptr;
  EXPECT_EQ(parse(m).window_for_layer(3), 0);
  json q = base_config("Qwen3ForCausalLM");
  q["head_dim"] = 24;
  const ModelConfig c = parse(q);
  EXPECT_TRUE(c.qk_norm);
  EXPECT_EQ(c.head_dim, 24);
  EXPECT_FALSE(c.qkv_bias);
  json l = base_config("LlamaForCausalLM");
  l["attention_bias"] = true;
  l["partial_rotary_factor"] = 0.5;
  const ModelConfig lc = parse(l);
  EXPECT_TRUE(lc.qkv_bias && lc.o_bias);
  EXPECT_EQ(lc.rope.rotary_dim, 4);
}

// --- GGUF ---------------------------------------------------------------------------------------

class GgufWriter {
 public:
  void kv_u32(const std::string& k, uint32_t v) { key(k, 4); pod(v); ++n_kv_; }
  void kv_f32(const std::string& k, float v) { key(k, 6); pod(v); ++n_kv_; }
  void kv_str(const std::string& k, const std::string& v) { key(k, 8); str(meta_, v); ++n_kv_; }
  void tensor(const std::string& name, const Shape& shape, const std::vector<float>& data) {
    tensors_.push_back({name, shape, data});
  }
  void write(const fs::path& path) {
    std::string out;
    out += "GGUF";
    append(out, uint32_t{3});
    append(out, static_cast<uint64_t>(tensors_.size()));
    append(out, n_kv_);
    out += meta_;
    uint64_t off = 0;
    for (const auto& t : tensors_) {
      str(out, t.name);
      append(out, static_cast<uint32_t>(t.shape.size()));
      for (size_t i = t.shape.size(); i-- > 0;) append(out, static_cast<uint64_t>(t.shape[i]));  // ne[0] fastest
      append(out, uint32_t{0});  // F32
      append(out, off);
      off += (t.data.size() * 4 + 31) / 32 * 32;
    }
    while (out.size() % 32) out += '\0';
    for (const auto& t : tensors_) {
      out.append(reinterpret_cast<const char*>(t.data.data()), t.data.size() * 4);
      while (out.size() % 32) out += '\0';
    }
    std::ofstream(path, std::ios::binary).write(out.data(), static_cast<std::streamsize>(out.size()));
  }

 private:
  template <typename T>
  static void append(std::string& s, T v) { s.append(reinterpret_cast<const char*>(&v), sizeof(T)); }
  template <typename T>
  void pod(T v) { append(meta_, v); }
  static void str(std::string& s, const std::string& v) {
    append(s, static_cast<uint64_t>(v.size()));
    s += v;
  }
  void key(const std::string& k, uint32_t type) {
    str(meta_, k);
    append(meta_, type);
  }
  std::string meta_;
  uint64_t n_kv_ = 0;
  std::vector<OutTensor> tensors_;
};

// Rows of each head reordered from HF half-split order to llama.cpp's interleaved order.
std::vector<float> permute_for_gguf(const std::vector<float>& w, int64_t heads, int64_t head_dim, int64_t cols) {
  std::vector<float> out(w.size());
  const int64_t half = head_dim / 2;
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < half; ++i)
      for (int64_t s = 0; s < 2; ++s)
        std::memcpy(&out[(h * head_dim + 2 * i + s) * cols], &w[(h * head_dim + s * half + i) * cols],
                    static_cast<size_t>(cols) * 4);
  return out;
}

fs::path gguf_from_fixture(const std::string& name, const ModelConfig& c) {
  auto tensors = read_fixture_tensors(name);
  GgufWriter g;
  g.kv_str("general.architecture", "llama");
  g.kv_u32("llama.context_length", static_cast<uint32_t>(c.max_position_embeddings));
  g.kv_u32("llama.embedding_length", static_cast<uint32_t>(c.hidden_size));
  g.kv_u32("llama.block_count", static_cast<uint32_t>(c.num_layers));
  g.kv_u32("llama.feed_forward_length", static_cast<uint32_t>(c.intermediate_size));
  g.kv_u32("llama.attention.head_count", static_cast<uint32_t>(c.num_heads));
  g.kv_u32("llama.attention.head_count_kv", static_cast<uint32_t>(c.num_kv_heads));
  g.kv_u32("llama.rope.dimension_count", static_cast<uint32_t>(c.head_dim));
  g.kv_f32("llama.attention.layer_norm_rms_epsilon", static_cast<float>(c.norm_eps));
  g.kv_f32("llama.rope.freq_base", static_cast<float>(c.rope.theta));
  g.kv_u32("tokenizer.ggml.bos_token_id", 1);
  if (c.rope.scaling == RopeScaling::Llama3) {
    // llama.cpp bakes llama3 scaling into per-pair divisors.
    RopeConfig plain = c.rope;
    plain.scaling = RopeScaling::None;
    const auto a = cpu::rope_inv_freq(plain, c.head_dim), b = cpu::rope_inv_freq(c.rope, c.head_dim);
    std::vector<float> factors;
    for (size_t i = 0; i < a.size(); ++i) factors.push_back(static_cast<float>(a[i] / b[i]));
    g.tensor("rope_freqs.weight", {static_cast<int64_t>(factors.size())}, factors);
  }
  const std::vector<std::pair<std::string, std::string>> names = {
      {"input_layernorm.weight", "attn_norm.weight"}, {"self_attn.q_proj.weight", "attn_q.weight"},
      {"self_attn.k_proj.weight", "attn_k.weight"},    {"self_attn.v_proj.weight", "attn_v.weight"},
      {"self_attn.o_proj.weight", "attn_output.weight"}, {"post_attention_layernorm.weight", "ffn_norm.weight"},
      {"mlp.gate_proj.weight", "ffn_gate.weight"},     {"mlp.up_proj.weight", "ffn_up.weight"},
      {"mlp.down_proj.weight", "ffn_down.weight"}};
  for (auto& t : tensors) {
    std::string out;
    if (t.name == "model.embed_tokens.weight") out = "token_embd.weight";
    else if (t.name == "model.norm.weight") out = "output_norm.weight";
    else if (t.name == "lm_head.weight") out = "output.weight";
    for (const auto& [hf, gg] : names) {
      const size_t p = t.name.find(hf);
      if (p != std::string::npos && t.name.rfind("model.layers.", 0) == 0) {
        const std::string layer = t.name.substr(13, t.name.find('.', 13) - 13);
        out = "blk." + layer + "." + gg;
        if (hf == "self_attn.q_proj.weight") t.data = permute_for_gguf(t.data, c.num_heads, c.head_dim, t.shape[1]);
        if (hf == "self_attn.k_proj.weight")
          t.data = permute_for_gguf(t.data, c.num_kv_heads, c.head_dim, t.shape[1]);
      }
    }
    if (out.empty()) throw Error("no GGUF name for " + t.name);
    g.tensor(out, t.shape, t.data);
  }
  const fs::path path = temp_dir("gguf_" + name) / (name + ".gguf");
  g.write(path);
  return path;
}

void expect_same_logits(const Model& a, const Model& b, const std::vector<int32_t>& seq) {
  ASSERT_EQ(a.config().vocab_size, b.config().vocab_size);
  const int64_t V = a.config().vocab_size;
  auto sa = a.new_state(static_cast<int64_t>(seq.size()));
  auto sb = b.new_state(static_cast<int64_t>(seq.size()));
  std::vector<float> la, lb;
  a.forward(*sa, seq, la, true);
  b.forward(*sb, seq, lb, true);
  for (size_t i = 0; i < seq.size(); ++i)
    for (int64_t v = 0; v < V; ++v) ASSERT_NEAR(la[i * V + v], lb[i * V + v], 2e-4) << "position " << i;
}

TEST(ModelGguf, PermutedQkRowsAreRestored) {
  for (const std::string name : {"llama2-mha-f32", "llama3-gqa-bf16"}) {
    SCOPED_TRACE(name);
    auto hf = Model::load((kFixtures / name).string());
    const fs::path gguf = gguf_from_fixture(name, hf->config());
    auto gg = Model::load(gguf.string());
    EXPECT_EQ(gg->config().architecture, "llama");
    EXPECT_EQ(gg->config().tie_word_embeddings, hf->config().tie_word_embeddings);
    EXPECT_EQ(gg->config().num_kv_heads, hf->config().num_kv_heads);
    EXPECT_EQ(gg->num_parameters(), hf->num_parameters());
    const json ref = read_json(kFixtures / name / "reference.json");
    std::vector<int32_t> seq = ref["cases"][2]["prompt_ids"].get<std::vector<int32_t>>();
    for (const auto& s : ref["cases"][2]["steps"]) seq.push_back(s["token_id"].get<int32_t>());
    expect_same_logits(*hf, *gg, seq);
  }
}

TEST(ModelGguf, OtherArchitecturesAreRefused) {
  GgufWriter g;
  g.kv_str("general.architecture", "gpt2");
  const fs::path path = temp_dir("gguf_gpt2") / "m.gguf";
  g.write(path);
  expect_error([&] { Model::load(path.string()); }, {"gpt2", path.string()});
}

// --- the model zoo ------------------------------------------------------------------------------

TEST(ModelZooConfig, SpellingsAndDefaults) {
  // GPT-2 names its sizes n_embd / n_layer / n_head; n_inner null means 4 * n_embd.
  json g = {{"architectures", {"GPT2LMHeadModel"}}, {"vocab_size", 100}, {"n_embd", 32}, {"n_layer", 2},
            {"n_head", 4}, {"n_positions", 256}, {"n_inner", nullptr}};
  ModelConfig c = parse(g);
  EXPECT_EQ(c.family, "gpt2");
  EXPECT_EQ(c.hidden_size, 32);
  EXPECT_EQ(c.intermediate_size, 128);
  EXPECT_EQ(c.max_position_embeddings, 256);
  EXPECT_EQ(c.act, ActKind::GeluTanh);
  EXPECT_TRUE(c.tie_word_embeddings);
  g["scale_attn_weights"] = false;
  EXPECT_DOUBLE_EQ(parse(g).attn_scale, 1.0);
  // GPT-NeoX's older rotary spellings.
  json n = base_config("GPTNeoXForCausalLM");
  n["rotary_pct"] = 0.5;
  n["rotary_emb_base"] = 20000;
  c = parse(n);
  EXPECT_EQ(c.rope.rotary_dim, 4);
  EXPECT_DOUBLE_EQ(c.rope.theta, 20000);
  EXPECT_TRUE(c.parallel_residual);
  n.erase("rotary_pct");
  EXPECT_EQ(parse(n).rope.rotary_dim, 2);  // default 0.25 of 8
  // Falcon: n_head / n_layer spellings, the 7B defaults (multi_query, parallel_attn) and the new layout.
  json f = {{"architectures", {"FalconForCausalLM"}}, {"vocab_size", 100}, {"hidden_size", 64}, {"n_layer", 2},
            {"n_head", 4}};
  c = parse(f);
  EXPECT_EQ(c.num_kv_heads, 1);
  EXPECT_EQ(c.norm_layout, NormLayout::Shared);
  EXPECT_EQ(c.intermediate_size, 256);
  f["new_decoder_architecture"] = true;
  f["num_kv_heads"] = 2;
  c = parse(f);
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_EQ(c.norm_layout, NormLayout::Pre);
  EXPECT_TRUE(c.parallel_residual);
  f["num_ln_in_parallel_attn"] = 1;
  EXPECT_EQ(parse(f).norm_layout, NormLayout::Shared);
  f = {{"architectures", {"FalconForCausalLM"}}, {"vocab_size", 100}, {"hidden_size", 64}, {"n_layer", 2},
       {"n_head", 4}, {"multi_query", false}, {"parallel_attn", false}};
  c = parse(f);
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_FALSE(c.parallel_residual);
  // Gemma: a legacy hidden_act "gelu" means the tanh approximation; Gemma 2 windows follow HF's rule
  // (even layers slide) without layer_types, and null caps mean none.
  json m = base_config("GemmaForCausalLM");
  m["hidden_act"] = "gelu";
  c = parse(m);
  EXPECT_EQ(c.act, ActKind::GeluTanh);
  EXPECT_TRUE(c.tie_word_embeddings && c.norm_add_one && c.embed_scale_in_checkpoint_dtype);
  json m2 = base_config("Gemma2ForCausalLM");
  m2["sliding_window"] = 16;
  m2["final_logit_softcapping"] = nullptr;
  c = parse(m2);
  EXPECT_EQ(c.layer_sliding_window, (std::vector<int64_t>{16, 0, 16, 0}));
  EXPECT_DOUBLE_EQ(c.attn_logit_softcap, 50.0);
  EXPECT_DOUBLE_EQ(c.final_logit_softcap, 0.0);
  EXPECT_DOUBLE_EQ(c.attn_scale, 1.0 / 16.0);  // query_pre_attn_scalar 256
  // MPT: d_model / n_heads / n_layers and attn_config.
  json t = {{"architectures", {"MptForCausalLM"}}, {"vocab_size", 100}, {"d_model", 32}, {"n_heads", 4},
            {"n_layers", 2}, {"attn_config", {{"alibi_bias_max", 16}, {"clip_qkv", 6}}}};
  c = parse(t);
  EXPECT_DOUBLE_EQ(c.alibi_bias_max, 16);
  EXPECT_DOUBLE_EQ(c.clip_qkv, 6);
  EXPECT_EQ(c.intermediate_size, 128);
}

TEST(ModelZooConfig, RefusalsNameTheField) {
  json f = {{"architectures", {"FalconForCausalLM"}}, {"vocab_size", 100}, {"hidden_size", 64}, {"n_layer", 2},
            {"n_head", 4}, {"alibi", true}};
  expect_error([&] { parse(f); }, {"alibi", "/x/config.json"});
  f["alibi"] = false;
  f["new_decoder_architecture"] = true;
  f["parallel_attn"] = false;
  expect_error([&] { parse(f); }, {"parallel_attn"});
  json t = {{"architectures", {"MptForCausalLM"}}, {"vocab_size", 100}, {"d_model", 32}, {"n_heads", 4},
            {"n_layers", 2}, {"no_bias", false}};
  expect_error([&] { parse(t); }, {"no_bias"});
  t["no_bias"] = true;
  t["attn_config"] = {{"alibi", false}};
  expect_error([&] { parse(t); }, {"alibi"});
  t["attn_config"] = {{"qk_ln", true}};
  expect_error([&] { parse(t); }, {"qk_ln"});
  json b = base_config("BloomForCausalLM");
  b["apply_residual_connection_post_layernorm"] = true;
  expect_error([&] { parse(b); }, {"apply_residual_connection_post_layernorm"});
  json g = {{"architectures", {"GPT2LMHeadModel"}}, {"vocab_size", 100}, {"n_embd", 32}, {"n_layer", 2},
            {"n_head", 4}, {"scale_attn_by_inverse_layer_idx", true}};
  expect_error([&] { parse(g); }, {"scale_attn_by_inverse_layer_idx"});
  json p = base_config("Phi3ForCausalLM");
  p["rope_scaling"] = {{"type", "longrope"}, {"short_factor", {1.0}}, {"long_factor", {1.0}}};
  expect_error([&] { parse(p); }, {"longrope", "/x/config.json"});
  json n = base_config("GPTNeoXForCausalLM");
  n["hidden_act"] = "relu";
  expect_error([&] { parse(n); }, {"relu", "hidden_act"});
}

// Checkpoints saved from the base model (the original gpt2 upload) have no "transformer." prefix.
TEST(ModelZooLoading, BaseModelNamesWithoutPrefix) {
  auto tensors = read_fixture_tensors("gpt2-learned-f32");
  for (auto& t : tensors)
    if (t.name.rfind("transformer.", 0) == 0) t.name = t.name.substr(12);
  const fs::path dir = temp_dir("gpt2_noprefix");
  fs::copy_file(kFixtures / "gpt2-learned-f32" / "config.json", dir / "config.json");
  write_safetensors(dir / "model.safetensors", tensors);
  auto a = Model::load((kFixtures / "gpt2-learned-f32").string());
  auto b = Model::load(dir.string());
  expect_same_logits(*a, *b, {3, 1, 4, 1, 5, 9, 2, 6});
}

// A fused tensor that is missing or has the wrong size is named, with both shapes.
TEST(ModelZooLoading, FusedTensorErrorsNameTheTensor) {
  auto tensors = read_fixture_tensors("falcon-7b-mqa-bf16");
  std::erase_if(tensors,
                [](const OutTensor& t) { return t.name == "transformer.h.1.self_attention.query_key_value.weight"; });
  const fs::path dir = temp_dir("falcon_missing");
  fs::copy_file(kFixtures / "falcon-7b-mqa-bf16" / "config.json", dir / "config.json");
  write_safetensors(dir / "model.safetensors", tensors);
  expect_error([&] { Model::load(dir.string()); }, {"transformer.h.1.self_attention.query_key_value.weight"});
  // Read as multi-head, the [(4 + 2) * 16, 64] multi-query qkv is too small for [4, 3, 16] rows.
  const fs::path mha = fixture_copy("falcon-7b-mqa-bf16", [](json& c) { c["multi_query"] = false; });
  expect_error([&] { Model::load(mha.string()); },
               {"transformer.h.0.self_attention.query_key_value.weight", "[96, 64]", "[192, 64]"});
  // GPT-2's Conv1D weights are [in, out]: the expected shape is reported as stored.
  const fs::path wide = fixture_copy("gpt2-learned-f32", [](json& c) { c["n_inner"] = 100; });
  expect_error([&] { Model::load(wide.string()); }, {"mlp.c_fc.weight", "[48, 192]", "[48, 100]"});
}

}  // namespace
}  // namespace kiln

namespace kiln {
namespace {

// The default model (SmolLM2-135M-Instruct, Q4_1 GGUF, fetched by scripts/fetch-default-model.sh) against
// its float64 transformers reference: a real llama.cpp conversion, so the q/k un-permutation is checked on
// the converter's own output. Skipped when the model has not been fetched (tests/cli/default_model.sh fails
// in that case).
TEST(ModelGguf, DefaultModelMatchesReference) {
  const char* cache_env = std::getenv("KILN_CACHE_DIR");
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  const char* home = std::getenv("HOME");
  const fs::path cache = cache_env ? fs::path(cache_env)
                         : xdg     ? fs::path(xdg) / "kiln"
                                   : fs::path(home ? home : "/root") / ".cache" / "kiln";
  const fs::path model_path = cache / "SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!fs::exists(model_path)) GTEST_SKIP() << model_path << " not fetched";
  auto m = Model::load(model_path.string());
  const json ref = read_json(fs::path(KILN_SOURCE_DIR) / "tests" / "fixtures" / "default-model" / "reference.json");
  for (size_t ci = 0; ci < 2; ++ci) {
    const auto& c = ref["cases"][ci];
    const auto prompt = c["prompt_ids"].get<std::vector<int32_t>>();
    auto st = m->new_state(static_cast<int64_t>(prompt.size() + c["steps"].size() + 1));
    std::vector<float> logits;
    m->forward(*st, prompt, logits);
    for (const auto& s : c["steps"]) {
      double mx = -INFINITY, sum = 0;
      for (float v : logits) mx = std::max<double>(mx, v);
      for (float v : logits) sum += std::exp(v - mx);
      const double lse = mx + std::log(sum);
      for (const auto& t : s["top"]) EXPECT_NEAR(logits[t["id"].get<int>()] - lse, t["logprob"].get<double>(), 1e-3);
      int32_t tok = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
      ASSERT_EQ(tok, s["token_id"].get<int32_t>());
      m->forward(*st, {&tok, 1}, logits);
    }
  }
}

}  // namespace
}  // namespace kiln
