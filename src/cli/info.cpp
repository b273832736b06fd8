// `kiln info`: what a model is (family, traits), how big, in what dtypes, and its tokenizer.
#include <cmath>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/common.h"
#include "cli/verbs.h"
#include "kiln/error.h"

namespace kiln::cli {

namespace {

const char* norm_name(NormKind n) { return n == NormKind::RMSNorm ? "rmsnorm" : "layernorm"; }
const char* act_name(ActKind a) {
  switch (a) {
    case ActKind::SiLU: return "silu";
    case ActKind::GeluTanh: return "gelu_tanh";
    case ActKind::GeluErf: return "gelu";
  }
  return "?";
}
const char* rope_scaling_name(RopeScaling s) {
  switch (s) {
    case RopeScaling::None: return "none";
    case RopeScaling::Linear: return "linear";
    case RopeScaling::Llama3: return "llama3";
  }
  return "?";
}

const char* position_name(PositionKind p) {
  switch (p) {
    case PositionKind::Rope: return "rope";
    case PositionKind::Learned: return "learned";
    case PositionKind::Alibi: return "alibi";
  }
  return "?";
}
const char* norm_layout_name(NormLayout n) {
  switch (n) {
    case NormLayout::Pre: return "pre";
    case NormLayout::PrePost: return "pre_post";
    case NormLayout::Shared: return "shared";
  }
  return "?";
}

struct InfoFlags {
  std::string model;
  bool json = false;
};

int run(const InfoFlags& f) {
  const std::string path = resolve_model_path(f.model);
  std::unique_ptr<Model> model = Model::load(path);
  std::unique_ptr<Tokenizer> tok = load_tokenizer_if_any(path);
  const ModelConfig& c = model->config();
  nlohmann::json j;
  j["path"] = path;
  j["architecture"] = c.architecture;
  j["family"] = c.family;
  j["parameters"] = model->num_parameters();
  j["checkpoint_dtype"] = std::string(dtype_name(c.checkpoint_dtype));
  j["checkpoint_storage"] = c.checkpoint_storage;
  j["compute_dtype"] = "f32";
  j["weight_bytes"] = model->weight_bytes();
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_layers"] = c.num_layers;
  j["num_heads"] = c.num_heads;
  j["num_kv_heads"] = c.num_kv_heads;
  j["head_dim"] = c.head_dim;
  j["context_length"] = c.max_position_embeddings;
  j["kv_bytes_per_token_f32"] = 2 * c.num_layers * c.num_kv_heads * c.head_dim * 4;
  j["traits"] = {{"norm", norm_name(c.norm)},
                 {"norm_eps", c.norm_eps},
                 {"activation", act_name(c.act)},
                 {"gated_mlp", c.gated_mlp},
                 {"rope_theta", c.rope.theta},
                 {"rotary_dim", c.rope.rotary_dim},
                 {"rope_interleaved", c.rope.interleaved},
                 {"rope_scaling", rope_scaling_name(c.rope.scaling)},
                 {"rope_factor", c.rope.factor},
                 {"sliding_window", c.sliding_window},
                 {"qkv_bias", c.qkv_bias},
                 {"qk_norm", c.qk_norm},
                 {"tie_word_embeddings", c.tie_word_embeddings}};
  // The model-zoo traits (docs/models.md): how positions enter, where the norms sit, scales and caps.
  nlohmann::json& t = j["traits"];
  t["position"] = position_name(c.position);
  if (c.position == PositionKind::Alibi) t["alibi_bias_max"] = c.alibi_bias_max;
  t["norm_layout"] = norm_layout_name(c.norm_layout);
  t["parallel_residual"] = c.parallel_residual;
  t["norm_bias"] = c.norm == NormKind::LayerNorm && c.norm_bias;
  t["norm_add_one"] = c.norm_add_one;
  t["embed_norm"] = c.embed_norm;
  t["embed_scale"] = c.embed_scale;
  t["attn_scale"] = c.attn_scale > 0 ? c.attn_scale : 1.0 / std::sqrt(static_cast<double>(c.head_dim));
  t["attn_logit_softcap"] = c.attn_logit_softcap;
  t["final_logit_softcap"] = c.final_logit_softcap;
  t["clip_qkv"] = c.clip_qkv;
  t["o_bias"] = c.o_bias;
  t["mlp_bias"] = c.mlp_bias;
  t["lm_head_bias"] = c.lm_head_bias;
  if (!c.layer_sliding_window.empty()) t["layer_sliding_window"] = c.layer_sliding_window;
  if (tok) {
    j["tokenizer"] = {{"vocab_size", tok->vocab_size()},
                      {"bos_id", tok->bos_id() ? nlohmann::json(*tok->bos_id()) : nlohmann::json(nullptr)},
                      {"eos_ids", tok->eos_ids()},
                      {"chat_template", tok->chat_template().has_value()}};
  } else {
    j["tokenizer"] = nullptr;
  }
  if (f.json) {
    std::puts(j.dump(2).c_str());
    return 0;
  }
  auto mib = [](double b) { return b / (1024.0 * 1024.0); };
  std::printf("model         %s\n", path.c_str());
  std::printf("architecture  %s (family %s)\n", c.architecture.c_str(), c.family.c_str());
  std::printf("parameters    %.2fM\n", model->num_parameters() / 1e6);
  std::printf("dtypes        stored %s; computed in f32 (CPU backend)\n", c.checkpoint_storage.c_str());
  std::printf("memory        weights %.1f MiB; KV cache %.1f KiB per token (f32)\n", mib(model->weight_bytes()),
              2.0 * c.num_layers * c.num_kv_heads * c.head_dim * 4 / 1024.0);
  std::printf("shape         vocab %lld, hidden %lld, intermediate %lld, layers %lld, heads %lld (kv %lld), head_dim %lld, "
              "context %lld\n",
              (long long)c.vocab_size, (long long)c.hidden_size, (long long)c.intermediate_size, (long long)c.num_layers,
              (long long)c.num_heads, (long long)c.num_kv_heads, (long long)c.head_dim,
              (long long)c.max_position_embeddings);
  std::printf("traits        %s\n", j["traits"].dump().c_str());
  if (tok) {
    std::printf("tokenizer     %d tokens, chat template: %s\n", tok->vocab_size(), tok->chat_template() ? "yes" : "no");
  } else {
    std::printf("tokenizer     none\n");
  }
  return 0;
}

}  // namespace

std::function<int()> add_info(CLI::App& app) {
  auto f = std::make_shared<InfoFlags>();
  app.add_option("--model,-m", f->model, "HF checkpoint folder, .gguf file or llama2.c .bin (default: the default model)");
  app.add_flag("--json", f->json, "Print JSON");
  return [f] { return run(*f); };
}

}  // namespace kiln::cli
