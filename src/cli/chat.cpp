// `kiln chat`: an interactive multi-turn chat. Each turn renders the whole conversation with the model's
// Jinja chat template (or `--chat-template FILE`; ChatML when the tokenizer ships none but has its tokens),
// as Hugging Face's apply_chat_template does, and keeps the KV cache of the longest prefix it shares with
// what was computed before, so a turn computes only its new tokens.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>
#include <string>

#include "cli/common.h"
#include "cli/prefill_progress.h"
#include "cli/verbs.h"
#include "kiln/error.h"
#include "runtime/generation.h"
#include "runtime/sampler.h"
#include "tokenizer/chat_template.h"

namespace kiln::cli {

namespace {

struct ChatFlags {
  std::string model;
  std::string system;
  std::string chat_template;
  int64_t max_tokens = 512;
  int64_t context = 4096;
  float temperature = 0.7f;
  int32_t top_k = 0;
  float top_p = 0.9f;
  float min_p = 0.0f;
  uint64_t seed = 0;
  std::string device = "cpu";
  std::string dtype = "auto";
  std::string kv_cache_dtype = "auto";
  int threads = 0;
};

// For tokenizers that have the ChatML tokens but ship no template (e.g. some GGUF conversions).
constexpr const char* kChatMl =
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

ChatTemplate chat_template_for(const Tokenizer& tok, const std::string& file, const std::string& path) {
  std::string bos, eos;
  if (auto b = tok.bos_id()) bos = tok.id_to_token(*b);
  if (auto e = tok.eos_ids(); !e.empty()) eos = tok.id_to_token(e.front());
  if (!file.empty()) return ChatTemplate(read_chat_template(file), bos, eos);
  if (std::optional<ChatTemplate> t = ChatTemplate::from_tokenizer(tok)) return *t;
  KILN_CHECK(tok.token_to_id("<|im_start|>").has_value() && tok.token_to_id("<|im_end|>").has_value(),
             "{}: the tokenizer has no chat template and no ChatML tokens; pass --chat-template FILE", path);
  return ChatTemplate(kChatMl, bos, eos);
}

int run(const ChatFlags& f) {
  const Device device = check_device(f.device);
  const std::optional<DType> compute_dtype = parse_compute_dtype(f.dtype, device);
  SamplingParams sp{f.temperature, f.top_k, f.top_p, f.min_p, f.seed, 0};
  Sampler::validate(sp);
  set_num_threads(f.threads);
  const std::string path = resolve_model_path(f.model);
  LoadOptions lo;
  lo.progress = isatty(STDERR_FILENO);
  lo.device = device;
  lo.compute_dtype = compute_dtype;
  lo.kv_cache_fp8 = f.kv_cache_dtype == "fp8";
  std::unique_ptr<Model> model = Model::load(path, lo);
  std::unique_ptr<Tokenizer> tok = load_tokenizer_if_any(path);
  KILN_CHECK(tok != nullptr, "{}: the model has no tokenizer, which chat needs", path);
  const ChatTemplate tmpl = chat_template_for(*tok, f.chat_template, path);
  const ModelConfig& cfg = model->config();
  const int64_t capacity =
      cfg.max_position_embeddings > 0 ? std::min(f.context, cfg.max_position_embeddings) : f.context;
  // The end-of-turn tokens: the model's EOS ids, the template's eos_token, and ChatML's <|im_end|>.
  std::vector<int32_t> stops = stop_ids(tok.get(), cfg);
  for (const std::string& s : {tmpl.eos_token(), std::string("<|im_end|>")})
    if (auto id = s.empty() ? std::nullopt : tok->token_to_id(s)) stops.push_back(*id);

  const bool interactive = isatty(STDIN_FILENO);
  Sampler sampler(sp);
  std::unique_ptr<KvState> state = model->new_state(capacity);
  std::vector<int32_t> known;  // the ids of the conversation so far: state holds the first state->length()
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  auto start_over = [&] {
    messages = nlohmann::ordered_json::array();
    if (!f.system.empty()) messages.push_back({{"role", "system"}, {"content", f.system}});
  };
  start_over();
  // The conversation rendered and tokenized as apply_chat_template does (the template writes BOS itself).
  auto render = [&] {
    ChatTemplateInputs in;
    in.messages = messages;
    return tok->encode(tmpl.apply(in), /*add_special=*/false, /*parse_special=*/true);
  };
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
      start_over();
      continue;
    }
    if (line.empty()) continue;
    messages.push_back({{"role", "user"}, {"content", line}});
    std::vector<int32_t> ids = render();
    // Too long for the context (with room to answer): drop the oldest turns after the system prompt.
    const size_t first = f.system.empty() ? 0 : 1;
    while (static_cast<int64_t>(ids.size()) + 1 >= capacity && messages.size() > first + 1) {
      messages.erase(messages.begin() + static_cast<std::ptrdiff_t>(first));
      ids = render();
    }
    if (static_cast<int64_t>(ids.size()) + 1 >= capacity) {
      std::fprintf(stderr, "kiln chat: the message does not fit the %lld-token context; it was dropped\n",
                   static_cast<long long>(capacity));
      messages.erase(messages.end() - 1);
      continue;
    }
    // Keep the cached prefix the new prompt shares with what was computed; compute the rest.
    const auto mismatch = std::mismatch(ids.begin(), ids.end(), known.begin(), known.end());
    const int64_t keep = std::min<int64_t>(mismatch.first - ids.begin(), state->length());
    state->truncate(std::min<int64_t>(keep, static_cast<int64_t>(ids.size()) - 1));
    const std::vector<int32_t> input(ids.begin() + state->length(), ids.end());
    known = ids;

    IncrementalDetokenizer detok(*tok, known, true);
    std::string reply;
    const int64_t room = capacity - static_cast<int64_t>(ids.size());
    PrefillProgress progress(true);
    GenerationResult r = generate(
        *model, *state, input, std::min(f.max_tokens, room), sampler, stops,
        [&](int32_t id) {
          std::string piece = detok.push(id);
          reply += piece;
          std::fwrite(piece.data(), 1, piece.size(), stdout);
          std::fflush(stdout);
        },
        [&](int64_t done, int64_t total) { progress.update(done, total); });
    std::string rest = detok.flush();
    reply += rest;
    std::fwrite(rest.data(), 1, rest.size(), stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);
    known.insert(known.end(), r.tokens.begin(), r.tokens.end());
    messages.push_back({{"role", "assistant"}, {"content", reply}});
    const double tps = r.decode_seconds > 0 ? (r.tokens.size() > 1 ? r.tokens.size() - 1 : 0) / r.decode_seconds : 0;
    std::fprintf(stderr, "[%zu tokens, %.1f tok/s; computed %zu of %zu prompt tokens]\n", r.tokens.size(), tps,
                 input.size(), ids.size());
  }
  return 0;
}

}  // namespace

std::function<int()> add_chat(CLI::App& app) {
  auto f = std::make_shared<ChatFlags>();
  app.add_option("--model,-m", f->model, "Model path (default: the default model)");
  app.add_option("--system", f->system, "System prompt");
  app.add_option("--chat-template", f->chat_template, "A Jinja chat template file, instead of the tokenizer's");
  app.add_option("--max-tokens,-n", f->max_tokens, "Most tokens per reply")->capture_default_str();
  app.add_option("--context", f->context, "Context length to allot for the conversation")->capture_default_str();
  app.add_option("--temperature,-t", f->temperature, "Sampling temperature; 0 is greedy")->capture_default_str();
  app.add_option("--top-k", f->top_k, "Top-k (0: off)")->capture_default_str();
  app.add_option("--top-p", f->top_p, "Top-p (1: off)")->capture_default_str();
  app.add_option("--min-p", f->min_p, "Min-p (0: off)")->capture_default_str();
  app.add_option("--seed", f->seed, "Random seed")->capture_default_str();
  app.add_option("--device", f->device, "cpu or cuda")->capture_default_str();
  app.add_option("--dtype", f->dtype, "cuda: compute in auto (f16, or bf16 when a weight is outside the f16 range), bf16 or f16")
      ->capture_default_str();
  add_kv_cache_dtype_option(app, f->kv_cache_dtype);
  app.add_option("--threads", f->threads, "CPU threads (0: all)")->capture_default_str();
  return [f] { return run(*f); };
}

}  // namespace kiln::cli
