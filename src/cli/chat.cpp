// `kiln chat`: an interactive multi-turn chat. Each turn renders the whole conversation with the model's
// Jinja chat template (or `--chat-template FILE`; ChatML when the tokenizer ships none but has its tokens),
// as Hugging Face's apply_chat_template does, and keeps the KV cache of the longest prefix it shares with
// what was computed before, so a turn computes only its new tokens.
// On a terminal, lines are read with BSD editline (line editing, arrow-key history); Ctrl-C during a reply
// stops it and keeps the conversation, Ctrl-C at the prompt or Ctrl-D quits. Lines starting with '/' are
// commands (/help), never sent to the model.
#include <editline/readline.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <clocale>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <random>
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
  std::optional<uint64_t> seed;  // none: a fresh random seed for this chat
  std::string device = "cpu";
  std::string dtype = "auto";
  std::string kv_cache_dtype = "auto";
  int threads = 0;
};

// For tokenizers that have the ChatML tokens but ship no template (e.g. some GGUF conversions).
constexpr const char* kHelp =
    "Commands:\n"
    "  /help          this list\n"
    "  /clear         start a new conversation (the system prompt stays; /reset does the same)\n"
    "  /system TEXT   set the system prompt (the conversation is kept); /system alone shows it\n"
    "  /save FILE     write the conversation to FILE as JSON ({\"messages\": [...]})\n"
    "  /exit          quit (/quit, Ctrl-D and Ctrl-C at the prompt do too)\n"
    "Ctrl-C during a reply stops it; the conversation keeps what was written.\n";

// SIGINT while chatting: set by the handler, read (and cleared) by the loop. The handler does nothing else,
// so it is async-signal-safe; it is installed without SA_RESTART so a blocking poll() returns at once.
volatile std::sig_atomic_t g_interrupted = 0;
extern "C" void on_sigint(int) {
  g_interrupted = 1;
}

// Reads lines from a terminal with editline's callback interface, so that Ctrl-C (a signal, not a key here)
// can end the wait: the loop polls stdin and gives editline one character at a time.
class LineReader {
 public:
  LineReader() {
    // editline decodes multibyte input by the locale's character type; in the default "C" locale it would
    // mangle UTF-8 text.
    std::setlocale(LC_CTYPE, "");
    rl_readline_name = "kiln";
    using_history();
    stifle_history(1000);
  }

  // The next line (added to the history when not empty); nullopt at Ctrl-D on an empty line or Ctrl-C.
  std::optional<std::string> read(const char* prompt) {
    done_ = false;
    line_.reset();
    active_ = this;
    rl_callback_handler_install(prompt, &LineReader::on_line);
    installed_ = true;
    while (!done_) {
      if (g_interrupted) break;
      pollfd p{STDIN_FILENO, POLLIN, 0};
      const int n = ::poll(&p, 1, -1);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 || (p.revents & (POLLHUP | POLLERR | POLLNVAL)) != 0) break;
      rl_callback_read_char();
    }
    if (installed_) rl_callback_handler_remove();
    installed_ = false;
    active_ = nullptr;
    if (g_interrupted) {
      std::fputc('\n', stdout);
      return std::nullopt;
    }
    if (line_ && !line_->empty()) add_history(line_->c_str());
    return line_;
  }

 private:
  static void on_line(char* line) {
    LineReader* self = active_;
    if (line != nullptr) {
      self->line_ = std::string(line);
      std::free(line);
    } else {
      std::fputc('\n', stdout);  // Ctrl-D: end the prompt's line
    }
    self->done_ = true;
    // Remove the handler now, so editline does not print the prompt again before read() returns.
    rl_callback_handler_remove();
    self->installed_ = false;
  }

  static inline LineReader* active_ = nullptr;
  bool done_ = false;
  bool installed_ = false;
  std::optional<std::string> line_;
};

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
  SamplingParams sp{f.temperature, f.top_k, f.top_p, f.min_p, f.seed ? *f.seed : std::random_device{}(), 0};
  Sampler::validate(sp);
  set_num_threads(f.threads);
  const std::string path = resolve_model_path(f.model);
  LoadOptions lo;
  lo.progress = isatty(STDERR_FILENO);
  lo.device = device;
  lo.device_ordinal = device_ordinal(f.device);
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

  if (f.max_tokens >= capacity)
    std::fprintf(stderr,
                 "kiln chat: warning: --max-tokens %lld does not fit the %lld-token context; a reply ends when the "
                 "context is full\n",
                 static_cast<long long>(f.max_tokens), static_cast<long long>(capacity));

  const bool interactive = isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
  Sampler sampler(sp);
  std::unique_ptr<KvState> state = model->new_state(capacity);
  std::vector<int32_t> known;  // the ids of the conversation so far: state holds the first state->length()
  std::string system = f.system;
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  auto start_over = [&] {
    messages = nlohmann::ordered_json::array();
    if (!system.empty()) messages.push_back({{"role", "system"}, {"content", system}});
  };
  start_over();
  // The conversation rendered and tokenized as apply_chat_template does (the template writes BOS itself).
  auto render = [&] {
    ChatTemplateInputs in;
    in.messages = messages;
    return tok->encode(tmpl.apply(in), /*add_special=*/false, /*parse_special=*/true);
  };

  // SIGINT sets a flag instead of killing the process: it stops a reply, or ends the prompt's wait.
  struct sigaction sa {};
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: a blocking poll returns EINTR
  sigaction(SIGINT, &sa, nullptr);
  std::optional<LineReader> reader;
  if (interactive) reader.emplace();

  std::fprintf(stderr, "kiln chat: %s. Type a message; /help lists the commands, Ctrl-D quits.\n",
               cfg.architecture.c_str());
  std::string line;
  for (;;) {
    g_interrupted = 0;
    if (reader) {
      std::fputc('\n', stdout);
      std::fflush(stdout);
      std::optional<std::string> got = reader->read("> ");
      if (!got) break;  // Ctrl-D or Ctrl-C at the prompt
      line = *got;
    } else if (!std::getline(std::cin, line)) {
      break;
    }
    if (!line.empty() && line[0] == '/') {
      const size_t space = line.find(' ');
      const std::string cmd = line.substr(0, space);
      std::string arg = space == std::string::npos ? "" : line.substr(space + 1);
      arg.erase(0, arg.find_first_not_of(" \t"));
      arg.erase(arg.find_last_not_of(" \t") + 1);
      if (cmd == "/exit" || cmd == "/quit") break;
      if (cmd == "/help") {
        std::fputs(kHelp, stderr);
      } else if (cmd == "/clear" || cmd == "/reset") {
        start_over();
        std::fputs("kiln chat: new conversation\n", stderr);
      } else if (cmd == "/system") {
        if (arg.empty()) {
          std::fprintf(stderr, "kiln chat: system prompt: %s\n", system.empty() ? "(none)" : system.c_str());
        } else {
          system = arg;
          if (!messages.empty() && messages[0]["role"] == "system") messages.erase(messages.begin());
          messages.insert(messages.begin(), nlohmann::ordered_json{{"role", "system"}, {"content", system}});
          std::fputs("kiln chat: system prompt set\n", stderr);
        }
      } else if (cmd == "/save") {
        if (arg.empty()) {
          std::fputs("kiln chat: /save needs a file name\n", stderr);
        } else {
          std::ofstream out(arg, std::ios::binary | std::ios::trunc);
          out << nlohmann::ordered_json{{"messages", messages}}.dump(2) << '\n';
          out.close();
          if (out.good()) {
            std::fprintf(stderr, "kiln chat: saved %zu messages to %s\n", messages.size(), arg.c_str());
          } else {
            std::fprintf(stderr, "kiln chat: cannot write %s\n", arg.c_str());
          }
        }
      } else {
        std::fprintf(stderr, "kiln chat: unknown command %s; /help lists the commands\n", cmd.c_str());
      }
      continue;
    }
    if (line.empty()) continue;
    messages.push_back({{"role", "user"}, {"content", line}});
    std::vector<int32_t> ids = render();
    // Too long for the context (with room to answer): drop the oldest turns after the system prompt.
    const size_t first = !messages.empty() && messages[0]["role"] == "system" ? 1 : 0;
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
    g_interrupted = 0;
    PrefillProgress progress(true);
    GenerationResult r = generate(
        *model, *state, input, std::min(f.max_tokens, room), sampler, stops,
        [&](int32_t id) {
          std::string piece = detok.push(id);
          reply += piece;
          std::fwrite(piece.data(), 1, piece.size(), stdout);
          std::fflush(stdout);
        },
        [] { return g_interrupted != 0; }, [&](int64_t done, int64_t total) { progress.update(done, total); });
    std::string rest = detok.flush();
    reply += rest;
    std::fwrite(rest.data(), 1, rest.size(), stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);
    known.insert(known.end(), r.tokens.begin(), r.tokens.end());
    messages.push_back({{"role", "assistant"}, {"content", reply}});
    const double tps = r.decode_seconds > 0 ? (r.tokens.size() > 1 ? r.tokens.size() - 1 : 0) / r.decode_seconds : 0;
    std::fprintf(stderr, "[%zu tokens, %.1f tok/s; computed %zu of %zu prompt tokens%s]\n", r.tokens.size(), tps,
                 input.size(), ids.size(), r.finish_reason == "cancelled" ? "; stopped by Ctrl-C" : "");
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
  app.add_option("--seed", f->seed,
                 "Random seed: the same seed repeats the same replies (default: a fresh random seed)");
  app.add_option("--device", f->device, "cpu, cuda or cuda:N (GPU N)")->capture_default_str();
  app.add_option("--dtype", f->dtype, "cuda: compute in auto (f16, or bf16 when a weight is outside the f16 range), bf16 or f16")
      ->capture_default_str();
  add_kv_cache_dtype_option(app, f->kv_cache_dtype);
  add_threads_option(app, f->threads);
  return [f] { return run(*f); };
}

}  // namespace kiln::cli
