// `kiln generate`: one prompt in, a continuation out (streamed text, or one JSON object).
#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <unistd.h>

#include "cli/common.h"
#include "cli/verbs.h"
#include "kiln/error.h"
#include "runtime/generation.h"
#include "runtime/sampler.h"

namespace kiln::cli {

namespace {

struct GenerateFlags {
  std::string model;
  std::string prompt;
  std::string prompt_ids;
  int64_t max_tokens = 128;
  float temperature = 1.0f;
  int32_t top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
  uint64_t seed = 0;
  int32_t logprobs = 0;
  std::string device = "cpu";
  int threads = 0;
  bool json = false;
  bool quiet = false;
};

nlohmann::json logprob_entry(const SampleResult& s) {
  nlohmann::json top = nlohmann::json::array();
  for (const auto& t : s.top) top.push_back({{"id", t.id}, {"logprob", t.logprob}});
  return {{"token_id", s.token}, {"logprob", s.logprob}, {"top", std::move(top)}};
}

int run(const GenerateFlags& f, bool prompt_given, bool prompt_ids_given) {
  KILN_CHECK(prompt_given != prompt_ids_given, "give exactly one of --prompt and --prompt-ids");
  KILN_CHECK(f.max_tokens >= 1, "--max-tokens must be >= 1, got {}", f.max_tokens);
  check_device(f.device);
  std::vector<int32_t> prompt;
  if (prompt_ids_given) prompt = parse_id_list(f.prompt_ids);
  SamplingParams sp{f.temperature, f.top_k, f.top_p, f.min_p, f.seed, f.logprobs};
  Sampler::validate(sp);
  set_num_threads(f.threads);

  const std::string path = resolve_model_path(f.model);
  LoadOptions lo;
  lo.progress = !f.quiet && isatty(STDERR_FILENO);
  const auto t_load = std::chrono::steady_clock::now();
  std::unique_ptr<Model> model = Model::load(path, lo);
  std::unique_ptr<Tokenizer> tok = load_tokenizer_if_any(path);
  const ModelConfig& cfg = model->config();
  if (!f.quiet && !lo.progress)
    std::fprintf(stderr, "kiln: loaded %s (%s, %.1fM parameters) in %.2f s\n", path.c_str(), cfg.architecture.c_str(),
                 model->num_parameters() / 1e6,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count());

  if (prompt_ids_given) {
    for (int32_t id : prompt)
      KILN_CHECK(id < cfg.vocab_size, "--prompt-ids: id {} is outside the vocabulary of {} tokens", id, cfg.vocab_size);
  } else {
    KILN_CHECK(tok != nullptr, "{}: the model has no tokenizer; use --prompt-ids", path);
    prompt = tok->encode(f.prompt, /*add_special=*/true);
  }
  KILN_CHECK(!prompt.empty(), "the prompt is empty after tokenization");
  const int64_t ctx = cfg.max_position_embeddings > 0 ? cfg.max_position_embeddings : prompt.size() + f.max_tokens;
  KILN_CHECK(static_cast<int64_t>(prompt.size()) < ctx, "the prompt has {} tokens but the model's context is {}",
             prompt.size(), ctx);
  const int64_t capacity = std::min<int64_t>(ctx, static_cast<int64_t>(prompt.size()) + f.max_tokens);
  auto state = model->new_state(capacity);

  Sampler sampler(sp);
  const std::vector<int32_t> stops = stop_ids(tok.get(), cfg);
  std::unique_ptr<IncrementalDetokenizer> detok;
  if (tok) detok = std::make_unique<IncrementalDetokenizer>(*tok, prompt, /*skip_special=*/true);
  std::string text;
  auto on_token = [&](int32_t id) {
    if (!detok) return;
    std::string piece = detok->push(id);
    text += piece;
    if (!f.json && !piece.empty()) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    }
  };
  GenerationResult r = generate(*model, *state, prompt, f.max_tokens, sampler, stops, on_token);
  if (detok) {
    std::string rest = detok->flush();
    text += rest;
    if (!f.json) std::fwrite(rest.data(), 1, rest.size(), stdout);
  }

  if (f.json) {
    nlohmann::json out;
    out["prompt_ids"] = prompt;
    out["token_ids"] = r.tokens;
    out["text"] = tok ? nlohmann::json(text) : nlohmann::json(nullptr);
    out["finish_reason"] = r.finish_reason;
    nlohmann::json lps = nlohmann::json::array();
    for (const auto& s : r.samples) lps.push_back(logprob_entry(s));
    out["logprobs"] = std::move(lps);
    std::puts(out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else if (tok) {
    std::fputc('\n', stdout);
  } else {
    // Without a tokenizer the ids are the output.
    std::string ids;
    for (int32_t t : r.tokens) ids += (ids.empty() ? "" : ",") + std::to_string(t);
    std::puts(ids.c_str());
  }
  std::fflush(stdout);
  if (!f.quiet) {
    const size_t decoded = r.tokens.size() > 0 ? r.tokens.size() - 1 : 0;
    std::fprintf(stderr,
                 "kiln: prompt %lld tokens in %.3f s (%.1f tok/s); generated %zu tokens, %zu after the first in "
                 "%.3f s (%.2f tok/s); finish: %s\n",
                 static_cast<long long>(r.prefill_tokens), r.prefill_seconds,
                 r.prefill_seconds > 0 ? r.prefill_tokens / r.prefill_seconds : 0.0, r.tokens.size(), decoded,
                 r.decode_seconds, r.decode_seconds > 0 ? decoded / r.decode_seconds : 0.0, r.finish_reason.c_str());
  }
  return 0;
}

}  // namespace

std::function<int()> add_generate(CLI::App& app) {
  auto f = std::make_shared<GenerateFlags>();
  app.add_option("--model,-m", f->model, "HF checkpoint folder, .gguf file or llama2.c .bin (default: the cached default model)");
  auto* p = app.add_option("--prompt,-p", f->prompt, "Prompt text");
  auto* pi = app.add_option("--prompt-ids", f->prompt_ids, "Prompt as comma-separated token ids");
  app.add_option("--max-tokens,-n", f->max_tokens, "Most tokens to generate")->capture_default_str();
  app.add_option("--temperature,-t", f->temperature, "Sampling temperature; 0 is greedy")->capture_default_str();
  app.add_option("--top-k", f->top_k, "Keep the k most likely tokens (0: off)")->capture_default_str();
  app.add_option("--top-p", f->top_p, "Nucleus sampling mass (1: off)")->capture_default_str();
  app.add_option("--min-p", f->min_p, "Drop tokens below min-p times the top probability (0: off)")->capture_default_str();
  app.add_option("--seed", f->seed, "Random seed")->capture_default_str();
  app.add_option("--logprobs", f->logprobs, "Report the top K logprobs per generated token")->capture_default_str();
  app.add_option("--device", f->device, "cpu or cuda")->capture_default_str();
  app.add_option("--threads", f->threads, "CPU threads (0: all)")->capture_default_str();
  app.add_flag("--json", f->json, "Print one JSON object instead of streaming text");
  app.add_flag("--quiet,-q", f->quiet, "No progress or speed on stderr");
  return [f, p, pi] { return run(*f, p->count() > 0, pi->count() > 0); };
}

}  // namespace kiln::cli
