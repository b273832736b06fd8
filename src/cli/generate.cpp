// `kiln generate`: prompts in, continuations out (streamed text, or one JSON object per prompt), run as
// one in-flight batch through the Executor.
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <unistd.h>

#include "cli/common.h"
#include "cli/prefill_progress.h"
#include "cli/verbs.h"
#include "kiln/error.h"
#include "kiln/executor.h"
#include "runtime/sampler.h"

namespace kiln::cli {

namespace {

struct GenerateFlags {
  std::string model;
  std::string prompt;
  std::string prompt_ids;
  std::string prompts_file;
  int64_t max_tokens = 128;
  float temperature = 1.0f;
  int32_t top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
  std::optional<uint64_t> seed;  // none: a fresh random seed per prompt (drawn by the executor)
  int32_t logprobs = 0;
  std::string device = "cpu";
  std::string dtype = "auto";
  int threads = 0;
  bool json = false;
  bool quiet = false;
  bool no_cuda_graphs = false;
  std::string kv_cache_dtype = "auto";
  // Engine.
  int32_t max_batch_size = 64;
  int64_t max_num_tokens = 2048;
  int64_t kv_cache_bytes = 0;
  double kv_cache_fraction = 0.9;
  int32_t block_size = 16;
};

// What one prompt produced, gathered from its responses.
struct Outcome {
  std::vector<int32_t> prompt;
  std::vector<int32_t> tokens;
  std::vector<TokenLogprobs> logprobs;
  std::string text;
  FinishReason finish = FinishReason::None;
  std::string error;
  bool done = false;
  std::chrono::steady_clock::time_point first_token;
};

// A token's text as it reads after `prev` (JSON null without a tokenizer).
nlohmann::json piece_json(const Tokenizer* tok, int32_t prev, int32_t id) {
  return tok ? nlohmann::json(token_piece(*tok, prev, id)) : nlohmann::json(nullptr);
}

// One --json logprobs entry: the token and its alternatives, each with its id and its text.
nlohmann::json logprob_entry(const TokenLogprobs& s, const Tokenizer* tok, int32_t prev) {
  nlohmann::json top = nlohmann::json::array();
  for (const auto& [id, lp] : s.top) top.push_back({{"id", id}, {"token", piece_json(tok, prev, id)}, {"logprob", lp}});
  return {{"token_id", s.token_id},
          {"token", piece_json(tok, prev, s.token_id)},
          {"logprob", s.logprob},
          {"top", std::move(top)}};
}

// --logprobs without --json: one line per generated token, its text (JSON-quoted, so spaces and newlines show)
// or its id without a tokenizer, its logprob, then the top alternatives.
std::string logprob_lines(const std::string& prefix, const std::vector<int32_t>& prompt,
                          const std::vector<TokenLogprobs>& lps, const Tokenizer* tok) {
  auto shown = [&](int32_t prev, int32_t id) {
    return tok ? nlohmann::json(token_piece(*tok, prev, id))
                     .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
               : fmt::format("#{}", id);
  };
  std::string out;
  int32_t prev = prompt.empty() ? -1 : prompt.back();
  for (const TokenLogprobs& s : lps) {
    out += fmt::format("{}{} {:.4f}", prefix, shown(prev, s.token_id), s.logprob);
    for (size_t i = 0; i < s.top.size(); ++i)
      out += fmt::format("{}{} {:.4f}", i == 0 ? "  top: " : ", ", shown(prev, s.top[i].first), s.top[i].second);
    out += '\n';
    prev = s.token_id;
  }
  return out;
}

std::vector<std::string> read_prompts_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  KILN_CHECK(in.good(), "--prompts-file {}: cannot open it", path);
  std::vector<std::string> prompts;
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) {
      std::fprintf(stderr, "kiln: warning: --prompts-file %s: line %lld is empty; skipped\n", path.c_str(),
                   static_cast<long long>(n));
      continue;
    }
    prompts.push_back(line);
  }
  KILN_CHECK(!prompts.empty(), "--prompts-file {}: no prompts in it", path);
  return prompts;
}

int run(const GenerateFlags& f, bool prompt_given, bool prompt_ids_given, bool file_given) {
  KILN_CHECK(prompt_given + prompt_ids_given + file_given == 1,
             "give exactly one of --prompt, --prompt-ids and --prompts-file");
  KILN_CHECK(f.max_tokens >= 1, "--max-tokens must be >= 1, got {}", f.max_tokens);
  KILN_CHECK(f.max_batch_size >= 1, "--max-batch-size must be >= 1, got {}", f.max_batch_size);
  KILN_CHECK(f.max_num_tokens >= 1, "--max-num-tokens must be >= 1, got {}", f.max_num_tokens);
  KILN_CHECK(f.block_size >= 1 && f.block_size <= 4096, "--block-size must be in [1, 4096], got {}", f.block_size);
  KILN_CHECK(f.kv_cache_bytes >= 0, "--kv-cache-bytes must be >= 0, got {}", f.kv_cache_bytes);
  KILN_CHECK(f.kv_cache_fraction > 0 && f.kv_cache_fraction <= 1, "--kv-cache-fraction must be in (0, 1], got {}",
             f.kv_cache_fraction);
  const Device device = check_device(f.device);
  const std::optional<DType> compute_dtype = parse_compute_dtype(f.dtype, device);
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::string> texts;
  if (prompt_ids_given) prompts.push_back(parse_id_list(f.prompt_ids));
  if (prompt_given) texts.push_back(f.prompt);
  if (file_given) texts = read_prompts_file(f.prompts_file);
  Sampler::validate({f.temperature, f.top_k, f.top_p, f.min_p, f.seed.value_or(0), f.logprobs});
  set_num_threads(f.threads);

  const std::string path = resolve_model_path(f.model);
  LoadOptions lo;
  lo.progress = !f.quiet && isatty(STDERR_FILENO);
  lo.device = device;
  lo.device_ordinal = device_ordinal(f.device);
  lo.compute_dtype = compute_dtype;
  lo.cuda_graphs = !f.no_cuda_graphs;
  lo.kv_cache_fp8 = f.kv_cache_dtype == "fp8";
  const auto t_load = std::chrono::steady_clock::now();
  std::shared_ptr<const Model> model = Model::load(path, lo);
  std::shared_ptr<const Tokenizer> tok = load_tokenizer_if_any(path);
  const ModelConfig& cfg = model->config();
  if (!f.quiet && !lo.progress)
    std::fprintf(stderr, "kiln: loaded %s (%s, %.1fM parameters) on %s, computing in %s, in %.2f s\n", path.c_str(),
                 cfg.architecture.c_str(), model->num_parameters() / 1e6, device == Device::CUDA ? "cuda" : "cpu",
                 cli::compute_dtype(*model).c_str(),
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count());

  if (prompt_ids_given) {
    for (int32_t id : prompts[0])
      KILN_CHECK(id < cfg.vocab_size, "--prompt-ids: id {} is outside the vocabulary of {} tokens", id, cfg.vocab_size);
  } else {
    KILN_CHECK(tok != nullptr, "{}: the model has no tokenizer; use --prompt-ids", path);
    for (const std::string& t : texts) prompts.push_back(tok->encode(t, /*add_special=*/true));
  }
  int64_t longest = 0;  // the longest request (prompt + output), for the memory plan's line
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto& p = prompts[i];
    const std::string which = prompts.size() > 1 ? fmt::format("prompt {}", i) : "the prompt";
    KILN_CHECK(!p.empty(), "{} is empty after tokenization", which);
    const int64_t ctx = cfg.max_position_embeddings > 0 ? cfg.max_position_embeddings : p.size() + f.max_tokens;
    KILN_CHECK(static_cast<int64_t>(p.size()) < ctx, "{} has {} tokens but the model's context is {}", which,
               p.size(), ctx);
    const int64_t need = std::min<int64_t>(ctx, static_cast<int64_t>(p.size()) + f.max_tokens);
    if (static_cast<int64_t>(p.size()) + f.max_tokens > ctx)
      std::fprintf(stderr,
                   "kiln: warning: --max-tokens %lld does not fit: %s has %zu tokens and the model's context is %lld, "
                   "so at most %lld tokens are generated (finish: length)\n",
                   static_cast<long long>(f.max_tokens), which.c_str(), p.size(), static_cast<long long>(ctx),
                   static_cast<long long>(ctx - static_cast<int64_t>(p.size())));
    longest = std::max(longest, need);
  }

  ExecutorConfig ec;
  ec.max_batch_size = f.max_batch_size;
  ec.max_num_tokens = f.max_num_tokens;
  ec.block_size = f.block_size;
  ec.kv_cache_bytes = f.kv_cache_bytes;  // 0: the memory plan's (kiln::MemoryPlan), as on every verb
  ec.kv_cache_fraction = f.kv_cache_fraction;
  // Declared before the executor, whose callbacks use them: it is destroyed (and its requests ended) first.
  std::vector<Outcome> outs(prompts.size());
  // The prompts' progress, summed, while they take more than a second (callbacks on the executor thread).
  PrefillProgress progress(!f.quiet);
  std::vector<int64_t> prefilled(prompts.size(), 0);
  int64_t prompt_tokens = 0, prefilled_sum = 0;
  for (const auto& p : prompts) prompt_tokens += static_cast<int64_t>(p.size());
  std::mutex mu;
  std::condition_variable cv;
  size_t remaining = prompts.size();
  Executor ex(model, tok, ec);
  if (!f.quiet) std::fprintf(stderr, "kiln: %s\n", ex.memory_plan().describe(longest).c_str());

  const bool stream = !f.json && prompts.size() == 1 && tok != nullptr;
  const auto t0 = std::chrono::steady_clock::now();
  progress.start();
  for (size_t i = 0; i < prompts.size(); ++i) {
    Request r;
    r.prompt_ids = prompts[i];
    r.sampling.temperature = f.temperature;
    r.sampling.top_k = f.top_k;
    r.sampling.top_p = f.top_p;
    r.sampling.min_p = f.min_p;
    r.sampling.seed = f.seed;
    r.sampling.logprobs = f.logprobs;
    r.max_tokens = f.max_tokens;
    r.on_prefill_progress = [&, i](int64_t computed, int64_t) {
      prefilled_sum += computed - prefilled[i];
      prefilled[i] = computed;
      progress.update(prefilled_sum, prompt_tokens);
    };
    outs[i].prompt = prompts[i];
    // Runs on the executor thread: gathers, and streams the text of a single prompt as it comes.
    ex.enqueue(std::move(r), [&, i, stream](const Response& resp) {
      std::lock_guard lk(mu);
      Outcome& o = outs[i];
      if (o.tokens.empty() && !resp.token_ids.empty()) o.first_token = std::chrono::steady_clock::now();
      o.tokens.insert(o.tokens.end(), resp.token_ids.begin(), resp.token_ids.end());
      o.logprobs.insert(o.logprobs.end(), resp.logprobs.begin(), resp.logprobs.end());
      o.text += resp.text;
      if (stream && !resp.text.empty()) {
        std::fwrite(resp.text.data(), 1, resp.text.size(), stdout);
        std::fflush(stdout);
      }
      if (resp.finished) {
        o.finish = resp.finish_reason;
        o.error = resp.error;
        o.done = true;
        --remaining;
        cv.notify_all();
      }
    });
  }
  {
    std::unique_lock lk(mu);
    cv.wait(lk, [&] { return remaining == 0; });
  }
  progress.clear();
  const auto t_end = std::chrono::steady_clock::now();
  const ExecutorStats stats = ex.stats();
  ex.shutdown(std::chrono::milliseconds(0));
  for (const Outcome& o : outs) KILN_CHECK(o.finish != FinishReason::Error, "generation failed: {}", o.error);

  for (size_t i = 0; i < outs.size(); ++i) {
    const Outcome& o = outs[i];
    if (f.json) {
      nlohmann::json out;
      out["prompt_ids"] = o.prompt;
      out["token_ids"] = o.tokens;
      out["text"] = tok ? nlohmann::json(o.text) : nlohmann::json(nullptr);
      out["finish_reason"] = finish_reason_name(o.finish);
      nlohmann::json lps = nlohmann::json::array();
      int32_t prev = o.prompt.empty() ? -1 : o.prompt.back();
      for (const auto& s : o.logprobs) {
        lps.push_back(logprob_entry(s, tok.get(), prev));
        prev = s.token_id;
      }
      out["logprobs"] = std::move(lps);
      std::puts(out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
      continue;
    }
    const std::string prefix = outs.size() > 1 ? fmt::format("[{}] ", i) : "";
    if (stream) {
      std::fputc('\n', stdout);
    } else if (tok) {
      std::printf("%s%s\n", prefix.c_str(), o.text.c_str());
    } else {
      // Without a tokenizer the ids are the output.
      std::string ids;
      for (int32_t t : o.tokens) ids += (ids.empty() ? "" : ",") + std::to_string(t);
      std::printf("%s%s\n", prefix.c_str(), ids.c_str());
    }
    if (f.logprobs > 0) std::fputs(logprob_lines(prefix, o.prompt, o.logprobs, tok.get()).c_str(), stdout);
  }
  std::fflush(stdout);
  if (!f.quiet) {
    using Secs = std::chrono::duration<double>;
    if (outs.size() == 1) {
      const Outcome& o = outs[0];
      const double prefill = Secs(o.first_token - t0).count();
      const double decode = Secs(t_end - o.first_token).count();
      const size_t decoded = o.tokens.size() > 0 ? o.tokens.size() - 1 : 0;
      std::fprintf(stderr,
                   "kiln: prompt %zu tokens in %.3f s (%.1f tok/s); generated %zu tokens, %zu after the first in "
                   "%.3f s (%.2f tok/s); finish: %s\n",
                   o.prompt.size(), prefill, prefill > 0 ? o.prompt.size() / prefill : 0.0, o.tokens.size(), decoded,
                   decode, decode > 0 ? decoded / decode : 0.0, finish_reason_name(o.finish));
    } else {
      size_t in = 0, gen = 0;
      for (const Outcome& o : outs) {
        in += o.prompt.size();
        gen += o.tokens.size();
      }
      const double secs = Secs(t_end - t0).count();
      std::fprintf(stderr,
                   "kiln: %zu prompts, %zu prompt tokens, %zu generated in %.3f s (%.1f output tok/s, %.1f total); "
                   "%lld steps, %lld preemptions, prefix cache hits %.1f%%\n",
                   outs.size(), in, gen, secs, secs > 0 ? gen / secs : 0.0, secs > 0 ? (in + gen) / secs : 0.0,
                   static_cast<long long>(stats.steps), static_cast<long long>(stats.preemptions),
                   100.0 * stats.prefix_hit_rate);
    }
  }
  return 0;
}

}  // namespace

std::function<int()> add_generate(CLI::App& app) {
  auto f = std::make_shared<GenerateFlags>();
  app.add_option("--model,-m", f->model, "HF checkpoint folder, .gguf file or llama2.c .bin (default: the cached default model)");
  auto* p = app.add_option("--prompt,-p", f->prompt, "Prompt text");
  auto* pi = app.add_option("--prompt-ids", f->prompt_ids, "Prompt as comma-separated token ids");
  auto* pf = app.add_option("--prompts-file", f->prompts_file, "Prompts, one per line, run as one in-flight batch");
  app.add_option("--max-tokens,-n", f->max_tokens, "Most tokens to generate")->capture_default_str();
  app.add_option("--temperature,-t", f->temperature, "Sampling temperature; 0 is greedy")->capture_default_str();
  app.add_option("--top-k", f->top_k, "Keep the k most likely tokens (0: off)")->capture_default_str();
  app.add_option("--top-p", f->top_p, "Nucleus sampling mass (1: off)")->capture_default_str();
  app.add_option("--min-p", f->min_p, "Drop tokens below min-p times the top probability (0: off)")->capture_default_str();
  app.add_option("--seed", f->seed,
                 "Random seed: the same seed repeats the same text (default: a fresh random seed every run)");
  app.add_option(
         "--logprobs", f->logprobs,
         "Report each generated token's logprob and the top K (with --json: in the JSON; otherwise one line per "
         "token after the text)")
      ->capture_default_str();
  app.add_option("--device", f->device, "cpu, cuda or cuda:N (GPU N)")->capture_default_str();
  app.add_option("--dtype", f->dtype, "cuda: compute in auto (f16, or bf16 when a weight is outside the f16 range), bf16 or f16")
      ->capture_default_str();
  add_threads_option(app, f->threads);
  app.add_flag("--json", f->json, "Print one JSON object per prompt instead of streaming text");
  app.add_flag("--quiet,-q", f->quiet, "No progress or speed on stderr");
  app.add_flag("--no-cuda-graphs", f->no_cuda_graphs, "cuda: run decode steps kernel by kernel, no CUDA graphs");
  add_kv_cache_dtype_option(app, f->kv_cache_dtype);
  app.add_option("--max-batch-size", f->max_batch_size, "Engine: running requests at most")->capture_default_str();
  app.add_option("--max-num-tokens", f->max_num_tokens, "Engine: tokens computed per step at most (the prefill chunk)")
      ->capture_default_str();
  app.add_option("--kv-cache-bytes", f->kv_cache_bytes,
                 "Engine: the KV cache at most, in bytes (0: the memory plan's; on the CPU 4 GiB)")
      ->capture_default_str();
  app.add_option("--kv-cache-fraction", f->kv_cache_fraction,
                 "Engine (cuda): of the GPU's memory, the part kiln takes in all (weights, workspace, KV cache)")
      ->capture_default_str();
  app.add_option("--block-size", f->block_size, "Engine: tokens per KV block")->capture_default_str();
  return [f, p, pi, pf] { return run(*f, p->count() > 0, pi->count() > 0, pf->count() > 0); };
}

}  // namespace kiln::cli
