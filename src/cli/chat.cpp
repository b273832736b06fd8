// `kiln chat`: an interactive multi-turn chat. Turns are rendered in the ChatML style
// (<|im_start|>role\n...<|im_end|>\n) and the KV cache is kept across turns, so each turn only
// computes its new tokens. (General Jinja chat templates arrive with the server.)
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <unistd.h>

#include "cli/common.h"
#include "cli/verbs.h"
#include "kiln/error.h"
#include "runtime/generation.h"
#include "runtime/sampler.h"

namespace kiln::cli {

namespace {

struct ChatFlags {
  std::string model;
  std::string system;
  int64_t max_tokens = 512;
  int64_t context = 4096;
  float temperature = 0.7f;
  int32_t top_k = 0;
  float top_p = 0.9f;
  float min_p = 0.0f;
  uint64_t seed = 0;
  std::string device = "cpu";
  int threads = 0;
};

std::string render_turn(const std::string& role, const std::string& content) {
  return "<|im_start|>" + role + "\n" + content + "<|im_end|>\n";
}

int run(const ChatFlags& f) {
  const Device device = check_device(f.device);
  SamplingParams sp{f.temperature, f.top_k, f.top_p, f.min_p, f.seed, 0};
  Sampler::validate(sp);
  set_num_threads(f.threads);
  const std::string path = resolve_model_path(f.model);
  LoadOptions lo;
  lo.progress = isatty(STDERR_FILENO);
  lo.device = device;
  std::unique_ptr<Model> model = Model::load(path, lo);
  std::unique_ptr<Tokenizer> tok = load_tokenizer_if_any(path);
  KILN_CHECK(tok != nullptr, "{}: the model has no tokenizer, which chat needs", path);
  KILN_CHECK(tok->token_to_id("<|im_start|>").has_value() && tok->token_to_id("<|im_end|>").has_value(),
             "{}: chat uses the ChatML format, and this tokenizer has no <|im_start|>/<|im_end|> tokens", path);
  const ModelConfig& cfg = model->config();
  const int64_t capacity =
      cfg.max_position_embeddings > 0 ? std::min(f.context, cfg.max_position_embeddings) : f.context;
  std::vector<int32_t> stops = stop_ids(tok.get(), cfg);
  stops.push_back(*tok->token_to_id("<|im_end|>"));

  const bool interactive = isatty(STDIN_FILENO);
  Sampler sampler(sp);
  std::unique_ptr<KvState> state;
  std::vector<int32_t> history;  // every id fed or generated, so the next turn knows what is missing
  auto reset = [&] {
    state = model->new_state(capacity);
    history.clear();
  };
  reset();
  std::fprintf(stderr, "kiln chat: %s. Type a message; /reset starts over, /exit or end of input quits.\n",
               cfg.architecture.c_str());
  std::string line;
  for (;;) {
    if (interactive) {
      std::fputs("\n> ", stdout);
      std::fflush(stdout);
    }
    if (!std::getline(std::cin, line)) break;
    if (line == "/exit" || line == "/quit") break;
    if (line == "/reset") {
      reset();
      continue;
    }
    if (line.empty()) continue;
    std::string text;
    if (history.empty() && !f.system.empty()) text += render_turn("system", f.system);
    text += render_turn("user", line) + "<|im_start|>assistant\n";
    std::vector<int32_t> input = tok->encode(text, /*add_special=*/history.empty());
    // The last turn's stop token was sampled but never fed; it opens this turn's input, with the
    // newline that follows <|im_end|> in the template.
    if (!history.empty() && static_cast<int64_t>(history.size()) > state->length()) {
      std::vector<int32_t> pending(history.begin() + state->length(), history.end());
      std::vector<int32_t> nl = tok->encode("\n", false);
      pending.insert(pending.end(), nl.begin(), nl.end());
      input.insert(input.begin(), pending.begin(), pending.end());
    }
    if (state->length() + static_cast<int64_t>(input.size()) + 1 >= capacity) {
      std::fprintf(stderr, "kiln chat: the conversation filled the %lld-token context; starting over\n",
                   static_cast<long long>(capacity));
      reset();
      input = tok->encode((f.system.empty() ? "" : render_turn("system", f.system)) + render_turn("user", line) +
                              "<|im_start|>assistant\n",
                          true);
      KILN_CHECK(static_cast<int64_t>(input.size()) + 1 < capacity, "the message is longer than the context");
    }
    history.insert(history.end(), input.begin(), input.end());
    IncrementalDetokenizer detok(*tok, history, true);
    const int64_t room = capacity - state->length() - static_cast<int64_t>(input.size());
    GenerationResult r = generate(*model, *state, input, std::min(f.max_tokens, room), sampler, stops, [&](int32_t id) {
      std::string piece = detok.push(id);
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    });
    std::string rest = detok.flush();
    std::fwrite(rest.data(), 1, rest.size(), stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);
    history.insert(history.end(), r.tokens.begin(), r.tokens.end());
    if (r.finish_reason == "length") {
      // Close the turn ourselves so the template stays well formed.
      history.push_back(*tok->token_to_id("<|im_end|>"));
    }
    const double tps = r.decode_seconds > 0 ? (r.tokens.size() > 1 ? r.tokens.size() - 1 : 0) / r.decode_seconds : 0;
    std::fprintf(stderr, "[%zu tokens, %.1f tok/s]\n", r.tokens.size(), tps);
  }
  return 0;
}

}  // namespace

std::function<int()> add_chat(CLI::App& app) {
  auto f = std::make_shared<ChatFlags>();
  app.add_option("--model,-m", f->model, "Model path (default: the default model)");
  app.add_option("--system", f->system, "System prompt");
  app.add_option("--max-tokens,-n", f->max_tokens, "Most tokens per reply")->capture_default_str();
  app.add_option("--context", f->context, "Context length to allot for the conversation")->capture_default_str();
  app.add_option("--temperature,-t", f->temperature, "Sampling temperature; 0 is greedy")->capture_default_str();
  app.add_option("--top-k", f->top_k, "Top-k (0: off)")->capture_default_str();
  app.add_option("--top-p", f->top_p, "Top-p (1: off)")->capture_default_str();
  app.add_option("--min-p", f->min_p, "Min-p (0: off)")->capture_default_str();
  app.add_option("--seed", f->seed, "Random seed")->capture_default_str();
  app.add_option("--device", f->device, "cpu or cuda")->capture_default_str();
  app.add_option("--threads", f->threads, "CPU threads (0: all)")->capture_default_str();
  return [f] { return run(*f); };
}

}  // namespace kiln::cli
