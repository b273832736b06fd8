// `kiln serve`'s HTTP server: the OpenAI endpoints (/v1/completions, /v1/chat/completions,
// /v1/models), /health, /metrics and a chat page at /, over cpp-httplib. Generation goes through an
// Engine (the Executor in production, a fake in tests); each HTTP request becomes n engine requests
// whose streamed responses are turned into one JSON body or an SSE stream.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kiln/executor.h"
#include "server/metrics.h"
#include "server/protocol.h"
#include "tokenizer/chat_template.h"

namespace kiln {
class Tokenizer;
}

namespace kiln::server {

// What the server needs of the runtime; Executor's methods of the same names.
class Engine {
 public:
  virtual ~Engine() = default;
  // Throws QueueFullError when the queue is full and kiln::Error for a request the engine refuses.
  virtual RequestId enqueue(Request request, ResponseCallback callback) = 0;
  virtual void cancel(RequestId id) = 0;
  virtual ExecutorStats stats() const = 0;
};

// An Engine over an Executor.
class ExecutorEngine : public Engine {
 public:
  explicit ExecutorEngine(Executor& executor) : executor_(executor) {}
  RequestId enqueue(Request request, ResponseCallback callback) override {
    return executor_.enqueue(std::move(request), std::move(callback));
  }
  void cancel(RequestId id) override { executor_.cancel(id); }
  ExecutorStats stats() const override { return executor_.stats(); }

 private:
  Executor& executor_;
};

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;      // 0: any free port (bind() returns it)
  std::string api_key;  // non-empty: /v1/* requires "Authorization: Bearer <key>"
  size_t max_body_bytes = size_t{8} << 20;
  int http_threads = 128;  // connections served at once (each streaming client holds one)
  bool log_requests = false;
  std::chrono::milliseconds keepalive_interval{1000};  // SSE comment sent when a stream is idle this long
};

// The loaded model the server generates with.
struct ModelContext {
  Engine* engine = nullptr;
  std::shared_ptr<const Tokenizer> tokenizer;  // null: only token-id prompts, no chat
  std::optional<ChatTemplate> chat_template;   // none: /v1/chat/completions is refused
  ModelInfo info;
  std::vector<int32_t> stop_token_ids;  // ending generation besides the tokenizer's EOS ids
};

class Server {
 public:
  explicit Server(ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds host:port; throws kiln::Error when it cannot. Returns the bound port.
  int bind();
  // Serves until stop(); run it on its own thread. Before set_model(), /health and /v1/* answer 503.
  void run();
  // The model is loaded: generation endpoints open and /health answers 200.
  void set_model(ModelContext model);
  // Shutting down: /health and new generation requests answer 503; running ones continue.
  void begin_drain();
  // Waits until no generation request is in flight (true) or the timeout passes (false).
  bool wait_idle(std::chrono::milliseconds timeout);
  // Closes the listener; run() returns once in-flight connections end.
  void stop();

  Metrics& metrics();

  struct Impl;  // server_impl.h; public so the handler files can name it

 private:
  std::unique_ptr<Impl> impl_;
};

// The chat page served at / (HTML with inline JS, no external resources).
const char* chat_page_html();

}  // namespace kiln::server
