// /v1/completions and /v1/chat/completions: validate, render the chat template, tokenize, enqueue
// one engine request per choice, then answer with one JSON body or an SSE stream. A client that
// goes away, mid-stream or while waiting for its whole answer, has its requests cancelled, which
// frees their KV blocks.
#include <dirent.h>
#include <fmt/format.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>

#include <cstdlib>
#include <deque>

#include "kiln/tokenizer.h"
#include "server/server_impl.h"

namespace kiln::server {

namespace {

using Clock = std::chrono::steady_clock;

// The responses of one HTTP request's engine requests (one per choice), as the engine's callbacks
// deliver them on its thread.
class Job {
 public:
  struct Event {
    size_t choice;
    Response response;
  };

  Job(Engine& engine, size_t choices)
      : engine_(engine),
        start_(Clock::now()),
        ids_(choices, 0),
        enqueued_(choices, false),
        done_(choices, false),
        first_(choices),
        last_(choices) {}

  // Runs on the engine thread: quick, never calls back into the engine.
  void push(size_t choice, const Response& r) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      const Clock::time_point now = Clock::now();
      if (!r.token_ids.empty()) {
        if (!first_[choice]) first_[choice] = now;
        last_[choice] = now;
      }
      if (r.finished && !done_[choice]) {
        done_[choice] = true;
        ++finished_;
      }
      events_.push_back({choice, r});
    }
    cv_.notify_all();
  }

  void set_id(size_t choice, RequestId id) {
    std::lock_guard<std::mutex> lock(mu_);
    ids_[choice] = id;
    enqueued_[choice] = true;
  }

  // Waits up to `timeout` for events and takes them all.
  std::vector<Event> take(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return !events_.empty(); });
    std::vector<Event> out(std::make_move_iterator(events_.begin()), std::make_move_iterator(events_.end()));
    events_.clear();
    return out;
  }

  bool all_done() {
    std::lock_guard<std::mutex> lock(mu_);
    return finished_ == done_.size();
  }

  // Cancels every enqueued choice that has not finished (a client that left, an enqueue that failed).
  void cancel_unfinished() {
    std::vector<RequestId> ids;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (size_t i = 0; i < ids_.size(); ++i)
        if (enqueued_[i] && !done_[i]) ids.push_back(ids_[i]);
    }
    for (RequestId id : ids) engine_.cancel(id);
  }

  Clock::time_point start() const { return start_; }
  std::optional<Clock::time_point> first_token(size_t i) {
    std::lock_guard<std::mutex> lock(mu_);
    return first_[i];
  }
  std::optional<Clock::time_point> last_token(size_t i) {
    std::lock_guard<std::mutex> lock(mu_);
    return last_[i];
  }

 private:
  Engine& engine_;
  const Clock::time_point start_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Event> events_;
  std::vector<RequestId> ids_;
  std::vector<bool> enqueued_, done_;
  size_t finished_ = 0;
  std::vector<std::optional<Clock::time_point>> first_, last_;
};

// Everything a response needs once the requests are enqueued; shared with the stream provider.
struct Generation {
  Generation(Server::Impl& s, std::shared_ptr<Job> j) : server(s), active(s), job(std::move(j)) {}
  ~Generation() {
    // Whatever ended this response (done, client gone, error), nothing keeps running for it.
    job->cancel_unfinished();
    if (started && !recorded) record(true);
  }

  Server::Impl& server;
  ActiveRequest active;
  std::shared_ptr<Job> job;
  GenerationRequest request;
  ResponseHeader header;
  std::vector<std::string> echo_texts;   // per choice
  std::vector<size_t> prompt_of_choice;  // which prompt each choice continues
  std::vector<ChoiceOutput> out;
  std::vector<int64_t> text_offsets;  // completions logprobs: bytes of text before the next token
  bool started = false;               // every choice was enqueued
  bool recorded = false;

  bool chat() const { return request.endpoint == Endpoint::ChatCompletions; }

  void apply(const Job::Event& ev) {
    ChoiceOutput& c = out[ev.choice];
    const Response& r = ev.response;
    c.text += r.text;
    c.token_ids.insert(c.token_ids.end(), r.token_ids.begin(), r.token_ids.end());
    c.logprobs.insert(c.logprobs.end(), r.logprobs.begin(), r.logprobs.end());
    if (r.prompt_tokens) c.prompt_tokens = r.prompt_tokens;
    if (r.cached_prompt_tokens) c.cached_prompt_tokens = r.cached_prompt_tokens;
    c.generated_tokens = std::max(c.generated_tokens, r.generated_tokens);
    if (r.finished) {
      c.finish_reason = r.finish_reason;
      c.error = r.error;
    }
  }

  Usage usage() const {
    Usage u;
    std::vector<bool> counted(
        prompt_of_choice.empty() ? 0 : *std::max_element(prompt_of_choice.begin(), prompt_of_choice.end()) + 1, false);
    for (size_t i = 0; i < out.size(); ++i) {
      // A prompt shared by n choices is counted once, as OpenAI does.
      if (!counted[prompt_of_choice[i]]) {
        counted[prompt_of_choice[i]] = true;
        u.prompt_tokens += out[i].prompt_tokens;
        u.cached_tokens += out[i].cached_prompt_tokens;
      }
      u.completion_tokens += out[i].generated_tokens;
    }
    return u;
  }

  void record(bool client_gone) {
    recorded = true;
    RequestRecord rec;
    const Usage u = usage();
    rec.prompt_tokens = u.prompt_tokens;
    rec.generated_tokens = u.completion_tokens;
    rec.cached_prompt_tokens = u.cached_tokens;
    const Clock::time_point start = job->start();
    double tpot_sum = 0;
    int tpot_n = 0;
    std::optional<Clock::time_point> last_any;
    for (size_t i = 0; i < out.size(); ++i) {
      auto first = job->first_token(i), last = job->last_token(i);
      if (first) {
        const double ttft = std::chrono::duration<double>(*first - start).count();
        rec.ttft_seconds = rec.ttft_seconds ? std::min(*rec.ttft_seconds, ttft) : ttft;
      }
      if (first && last && out[i].generated_tokens > 1) {
        tpot_sum += std::chrono::duration<double>(*last - *first).count() / (out[i].generated_tokens - 1);
        ++tpot_n;
      }
      if (last && (!last_any || *last > *last_any)) last_any = last;
      rec.finish_reasons.push_back(client_gone && out[i].finish_reason == FinishReason::None ? FinishReason::Cancelled
                                                                                             : out[i].finish_reason);
    }
    if (tpot_n) rec.tpot_seconds = tpot_sum / tpot_n;
    rec.e2e_seconds = std::chrono::duration<double>(Clock::now() - start).count();
    server.metrics.record(rec);
  }
};

// The first problem among finished choices: an engine error (500) or a cancellation that was not
// ours (shutdown: 503).
std::optional<ApiError> failure_of(const std::vector<ChoiceOutput>& out) {
  for (const ChoiceOutput& c : out) {
    if (c.finish_reason == FinishReason::Error)
      return ApiError(500, "Generation failed: " + c.error, "", "internal_error", "server_error");
    if (c.finish_reason == FinishReason::Cancelled)
      return ApiError(503, "The request was cancelled: the server is shutting down.", "", "service_unavailable",
                      "server_error");
  }
  return std::nullopt;
}

// The numeric address and port of a socket's end (local or peer), as httplib writes remote_addr/local_addr.
bool socket_end(int fd, bool peer, std::string& addr, int& port) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  auto* sa = reinterpret_cast<sockaddr*>(&ss);
  if ((peer ? ::getpeername(fd, sa, &len) : ::getsockname(fd, sa, &len)) != 0) return false;
  char host[NI_MAXHOST];
  char serv[NI_MAXSERV];
  if (::getnameinfo(sa, len, host, sizeof host, serv, sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV) != 0) return false;
  addr = host;
  port = std::atoi(serv);
  return true;
}

// The socket of the connection a request came on, or -1. cpp-httplib 0.11 does not hand it to handlers (newer
// releases expose Request::is_connection_closed; Debian 12 ships 0.11), so it is found among this process's
// descriptors by its address pair, which no other open TCP connection shares. httplib keeps the socket open
// until the handler returns, so the descriptor stays this connection's while the handler uses it.
int connection_socket(const httplib::Request& req) {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  int found = -1;
  while (const dirent* e = ::readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || fd == ::dirfd(dir)) continue;
    std::string addr;
    int port = 0;
    if (!socket_end(static_cast<int>(fd), true, addr, port) || port != req.remote_port || addr != req.remote_addr)
      continue;
    if (!socket_end(static_cast<int>(fd), false, addr, port) || port != req.local_port || addr != req.local_addr)
      continue;
    found = static_cast<int>(fd);
    break;
  }
  ::closedir(dir);
  return found;
}

// The client closed its end (or the connection broke). An HTTP client does not half-close while it waits for
// the answer, so this means it is gone; pipelined bytes of a next request do not count.
bool client_gone(int fd) {
  pollfd p{fd, POLLIN | POLLRDHUP, 0};
  if (::poll(&p, 1, 0) <= 0) return false;
  return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

}  // namespace

void Server::Impl::handle_generate(Endpoint endpoint, const httplib::Request& req, httplib::Response& res) {
  try {
    const ModelContext& m = model;
    const ojson body = parse_body(req.body);
    GenerationRequest g = parse_request(endpoint, body, m.info);

    // Prompts as token ids, and the text echo puts before each.
    std::vector<std::vector<int32_t>> prompts;
    std::vector<std::string> prompt_texts;
    if (endpoint == Endpoint::ChatCompletions) {
      if (!m.tokenizer || !m.chat_template)
        throw ApiError(400,
                       "This model has no chat template; use /v1/completions, or start the server with "
                       "--chat-template FILE.",
                       "messages", "chat_template_missing");
      ChatTemplateInputs in;
      in.messages = g.messages;
      in.tools = g.tools;
      in.add_generation_prompt = g.add_generation_prompt;
      in.extra = g.chat_template_kwargs;
      std::string text;
      try {
        text = m.chat_template->apply(in);
      } catch (const jinja::TemplateError& e) {
        throw ApiError(400, std::string("The chat template refused the messages: ") + e.what(), "messages",
                       "chat_template_error");
      }
      // The template writes the special tokens itself (BOS included), as apply_chat_template tokenizes.
      prompts.push_back(m.tokenizer->encode(text, /*add_special=*/false, /*parse_special=*/true));
      prompt_texts.push_back(std::move(text));
    } else {
      for (const PromptInput& p : g.prompts) {
        if (p.text) {
          if (!m.tokenizer)
            throw ApiError(400, "This model has no tokenizer; send the prompt as token ids.", "prompt",
                           "tokenizer_missing");
          prompts.push_back(m.tokenizer->encode(*p.text, /*add_special=*/true, /*parse_special=*/true));
          prompt_texts.push_back(*p.text);
        } else {
          prompts.push_back(p.ids);
          prompt_texts.push_back(m.tokenizer ? m.tokenizer->decode(p.ids, false) : std::string());
        }
      }
    }
    std::vector<int64_t> max_tokens;
    for (const auto& p : prompts)
      max_tokens.push_back(settle_max_tokens(g, static_cast<int64_t>(p.size()), m.info.context_length));

    const size_t n_choices = prompts.size() * static_cast<size_t>(g.n);
    auto job = std::make_shared<Job>(*m.engine, n_choices);
    auto gen = std::make_shared<Generation>(*this, job);
    gen->header = {make_id(g.endpoint == Endpoint::ChatCompletions ? "chatcmpl-" : "cmpl-"),
                   static_cast<int64_t>(std::time(nullptr)), m.info.name};
    gen->out.resize(n_choices);
    gen->text_offsets.assign(n_choices, 0);
    for (size_t p = 0; p < prompts.size(); ++p) {
      for (int j = 0; j < g.n; ++j) {
        gen->prompt_of_choice.push_back(p);
        gen->out[gen->prompt_of_choice.size() - 1].context_token = prompts[p].back();
        gen->echo_texts.push_back(g.echo ? prompt_texts[p] : std::string());
      }
    }
    gen->request = g;
    for (size_t i = 0; i < n_choices; ++i) gen->text_offsets[i] = static_cast<int64_t>(gen->echo_texts[i].size());

    // One engine request per choice; seeds differ per choice so n samples are not n copies.
    for (size_t i = 0; i < n_choices; ++i) {
      const size_t p = gen->prompt_of_choice[i];
      Request q;
      q.prompt_ids = prompts[p];
      q.sampling = g.sampling;
      if (g.sampling.seed) q.sampling.seed = *g.sampling.seed + i;
      q.max_tokens = max_tokens[p];
      q.stop_strings = g.stop;
      q.ignore_eos = g.ignore_eos;
      if (!g.ignore_eos) q.stop_token_ids = m.stop_token_ids;
      try {
        const RequestId id = m.engine->enqueue(std::move(q), [job, i](const Response& r) { job->push(i, r); });
        job->set_id(i, id);
      } catch (const QueueFullError& e) {
        throw ApiError(429, std::string("The server is busy: ") + e.what(), "", "rate_limit_exceeded",
                       "rate_limit_error");
      } catch (const EngineDeadError& e) {
        throw ApiError(503, e.what(), "", "engine_dead", "server_error");
      } catch (const Error& e) {
        if (state.load() == ServerState::Draining)
          throw ApiError(503, "The server is shutting down.", "", "service_unavailable", "server_error");
        throw ApiError(400, e.what(), "", "invalid_value");
      }
    }

    gen->started = true;

    if (!g.stream) {
      // Watched every 100 ms while the answer is computed: a client that leaves has its choices cancelled (by
      // ~Generation) instead of running to max_tokens for nobody.
      const int fd = connection_socket(req);
      while (true) {
        for (const Job::Event& ev : job->take(std::chrono::milliseconds(100))) gen->apply(ev);
        if (job->all_done()) {
          for (const Job::Event& ev : job->take(std::chrono::milliseconds(0))) gen->apply(ev);
          break;
        }
        if (fd >= 0 && client_gone(fd)) {
          send_error(res, ApiError(499, "The client closed the connection.", "", "client_closed_request"));
          return;
        }
      }
      gen->record(false);
      if (auto f = failure_of(gen->out)) throw *f;
      auto text = [this](int32_t prev, int32_t id) { return token_text(prev, id); };
      const ojson body_out =
          g.endpoint == Endpoint::ChatCompletions
              ? chat_response(gen->header, gen->out, g.logprobs, gen->usage(), text)
              : completion_response(gen->header, gen->out, gen->echo_texts, g.logprobs, gen->usage(), text);
      send_json(res, 200, body_out);
      return;
    }

    // Streaming: the provider runs on this connection's thread until [DONE] or the client leaves.
    res.status = 200;
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    struct StreamState {
      bool started = false;
      std::vector<bool> finish_sent;
    };
    auto st = std::make_shared<StreamState>();
    st->finish_sent.assign(n_choices, false);
    const std::chrono::milliseconds idle = options.keepalive_interval;
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, gen, st, idle](size_t, httplib::DataSink& sink) {
          const GenerationRequest& g = gen->request;
          const bool chat = gen->chat();
          const ResponseHeader& h = gen->header;
          auto write = [&](const std::string& s) { return sink.write(s.data(), s.size()); };
          auto text = [this](int32_t prev, int32_t id) { return token_text(prev, id); };
          if (!st->started) {
            st->started = true;
            for (size_t i = 0; i < gen->out.size(); ++i) {
              if (chat) {
                if (!write(sse_data(chat_chunk(h, static_cast<int>(i), {{"role", "assistant"}, {"content", ""}},
                                               nullptr, nullptr, g.include_usage))))
                  return false;
              } else if (!gen->echo_texts[i].empty()) {
                if (!write(sse_data(completion_chunk(h, static_cast<int>(i), gen->echo_texts[i], nullptr, nullptr,
                                                     g.include_usage))))
                  return false;
              }
            }
          }
          std::vector<Job::Event> events = gen->job->take(idle);
          const bool done = gen->job->all_done();
          if (events.empty() && !done) {
            // An SSE comment: ignored by clients, and a failed write tells us the client is gone.
            return write(": keep-alive\n\n");
          }
          if (done) {
            auto more = gen->job->take(std::chrono::milliseconds(0));
            events.insert(events.end(), std::make_move_iterator(more.begin()), std::make_move_iterator(more.end()));
          }
          for (const Job::Event& ev : events) {
            const ChoiceOutput& before = gen->out[ev.choice];
            const int32_t prev = before.token_ids.empty() ? before.context_token : before.token_ids.back();
            gen->apply(ev);
            const Response& r = ev.response;
            const int index = static_cast<int>(ev.choice);
            if (r.finished && (r.finish_reason == FinishReason::Error || r.finish_reason == FinishReason::Cancelled)) {
              const ApiError err = *failure_of({gen->out[ev.choice]});
              if (!write(sse_data(error_body(err)))) return false;
              st->finish_sent[ev.choice] = true;
              continue;
            }
            ojson lp = nullptr;
            if (g.logprobs >= 0 && !r.logprobs.empty()) {
              lp = chat ? chat_logprobs(r.logprobs, text, prev)
                        : completion_logprobs(r.logprobs, text, gen->text_offsets[ev.choice], prev);
            }
            gen->text_offsets[ev.choice] += static_cast<int64_t>(r.text.size());
            const char* fr = r.finished ? finish_reason_text(r.finish_reason) : nullptr;
            if (!r.text.empty() || !lp.is_null()) {
              const bool final_here = fr && !chat;
              const ojson chunk =
                  chat ? chat_chunk(h, index, {{"content", r.text}}, lp, nullptr, g.include_usage)
                       : completion_chunk(h, index, r.text, lp, final_here ? fr : nullptr, g.include_usage);
              if (!write(sse_data(chunk))) return false;
              if (final_here) st->finish_sent[ev.choice] = true;
            }
            if (fr && !st->finish_sent[ev.choice]) {
              const ojson chunk = chat ? chat_chunk(h, index, ojson::object(), nullptr, fr, g.include_usage)
                                       : completion_chunk(h, index, "", nullptr, fr, g.include_usage);
              if (!write(sse_data(chunk))) return false;
              st->finish_sent[ev.choice] = true;
            }
          }
          if (done) {
            if (g.include_usage && !write(sse_data(usage_chunk(h, chat, gen->usage())))) return false;
            if (!write(sse_done())) return false;
            gen->record(false);
            sink.done();
          }
          return true;
        },
        [gen](bool success) {
          // The client left (or the write failed): stop generating for it now.
          if (!success) gen->job->cancel_unfinished();
        });
  } catch (const ApiError& e) {
    send_error(res, e);
  } catch (const Error& e) {
    send_error(res, ApiError(400, e.what(), "", "invalid_value"));
  }
}

}  // namespace kiln::server
