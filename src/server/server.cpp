// The HTTP server: listener and thread pool, routes, authentication, readiness, error bodies for
// what httplib answers itself (404, 413), /health, /metrics, /v1/models and the chat page.
#include "server/server.h"

#include <fmt/format.h>
#include <sys/socket.h>

#include <cstdio>
#include <ctime>

#include "kiln/error.h"
#include "kiln/tokenizer.h"
#include "server/server_impl.h"

namespace kiln::server {

void send_json(httplib::Response& res, int status, const ojson& body) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, ojson::error_handler_t::replace), "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) {
  send_json(res, e.status, error_body(e));
}

namespace {

bool starts_with(const std::string& s, const char* p) {
  return s.rfind(p, 0) == 0;
}

// Compares without an early exit, so the key cannot be guessed byte by byte from timings.
bool same_secret(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i % (b.empty() ? 1 : b.size())]);
  return diff == 0;
}

const char* status_text(int status) {
  switch (status) {
    case 400:
      return "Bad request.";
    case 401:
      return "Unauthorized.";
    case 404:
      return "Not found.";
    case 405:
      return "Method not allowed.";
    case 413:
      return "The request body is too large.";
    case 414:
      return "The request URI is too long.";
    case 429:
      return "Too many requests.";
    case 503:
      return "The server is not ready.";
    default:
      return "Request failed.";
  }
}

}  // namespace

std::string Server::Impl::token_text(int32_t prev, int32_t id) const {
  if (!model.tokenizer) return fmt::format("token_id:{}", id);
  const Tokenizer& tok = *model.tokenizer;
  const int32_t one[1] = {id};
  if (prev < 0) return tok.decode(one, /*skip_special=*/false);
  // What id adds after prev: decoded alone, a SentencePiece token would lose its leading space.
  const int32_t ctx[1] = {prev};
  const int32_t both[2] = {prev, id};
  const std::string a = tok.decode(ctx, false);
  const std::string b = tok.decode(both, false);
  if (b.size() >= a.size() && b.compare(0, a.size(), a) == 0) return b.substr(a.size());
  return tok.decode(one, false);
}

void Server::Impl::setup_routes() {
  http.set_payload_max_length(options.max_body_bytes);
  http.set_keep_alive_max_count(100);
  http.set_keep_alive_timeout(5);
  http.set_read_timeout(30);
  http.set_write_timeout(10);
  http.set_socket_options([this](socket_t sock) {
    httplib::default_socket_options(sock);
    if (binding) listen_fd = sock;
  });
  const int threads = options.http_threads;
  http.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };

  // Authentication and readiness, before routing.
  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (starts_with(req.path, "/v1/")) {
      if (!options.api_key.empty()) {
        const std::string auth = req.get_header_value("Authorization");
        const bool ok = starts_with(auth, "Bearer ") && same_secret(auth.substr(7), options.api_key);
        if (!ok) {
          send_error(res, ApiError(401, "Incorrect or missing API key; send 'Authorization: Bearer <key>'.", "",
                                   "invalid_api_key"));
          return httplib::Server::HandlerResponse::Handled;
        }
      }
      const ServerState s = state.load(std::memory_order_acquire);
      if (s != ServerState::Ready) {
        send_error(res, ApiError(503,
                                 s == ServerState::Loading ? "The model is still loading; retry shortly."
                                                           : "The server is shutting down.",
                                 "", "service_unavailable", "server_error"));
        return httplib::Server::HandlerResponse::Handled;
      }
      if (const std::string dead = dead_reason(); !dead.empty()) {
        send_error(res, ApiError(503, "The engine is dead: " + dead, "", "engine_dead", "server_error"));
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });

  // Bodies for the statuses httplib sets itself (unknown route 404, body over the limit 413).
  http.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty() || res.status < 400) return httplib::Server::HandlerResponse::Unhandled;
    send_error(res, ApiError(res.status, status_text(res.status), "",
                             res.status == 413 ? "request_too_large" : (res.status == 404 ? "not_found" : ""),
                             res.status >= 500 ? "server_error" : "invalid_request_error"));
    return httplib::Server::HandlerResponse::Handled;
  }));

  http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    send_error(res, ApiError(500, "Internal error: " + what, "", "internal_error", "server_error"));
  });

  http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    metrics.count_http(req.path, res.status);
    if (options.log_requests)
      std::fprintf(stderr, "kiln serve: %s %s %d\n", req.method.c_str(), req.path.c_str(), res.status);
  });

  http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    const ServerState s = state.load(std::memory_order_acquire);
    if (const std::string dead = dead_reason(); !dead.empty()) {
      send_json(res, 503, {{"status", "dead"}, {"reason", dead}});
      return;
    }
    const char* status = s == ServerState::Ready ? "ok" : (s == ServerState::Loading ? "loading" : "shutting down");
    send_json(res, s == ServerState::Ready ? 200 : 503, {{"status", status}});
  });

  http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    std::optional<ExecutorStats> stats;
    if (state.load(std::memory_order_acquire) != ServerState::Loading && model.engine) stats = model.engine->stats();
    res.set_content(metrics.render(stats), "text/plain; version=0.0.4; charset=utf-8");
  });

  auto model_card = [this] {
    ojson m;
    m["id"] = model.info.name;
    m["object"] = "model";
    m["created"] = model.info.created;
    m["owned_by"] = "kiln";
    m["max_model_len"] = model.info.context_length;
    return m;
  };
  http.Get("/v1/models", [model_card](const httplib::Request&, httplib::Response& res) {
    send_json(res, 200, {{"object", "list"}, {"data", ojson::array({model_card()})}});
  });
  http.Get(R"(/v1/models/(.+))", [this, model_card](const httplib::Request& req, httplib::Response& res) {
    if (req.matches[1] != model.info.name) {
      send_error(res, ApiError(404, fmt::format("The model '{}' does not exist.", std::string(req.matches[1])), "model",
                               "model_not_found"));
      return;
    }
    send_json(res, 200, model_card());
  });

  http.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(chat_page_html(), "text/html; charset=utf-8");
  });

  http.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    handle_generate(Endpoint::Completions, req, res);
  });
  http.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    handle_generate(Endpoint::ChatCompletions, req, res);
  });
}

Server::Server(ServerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {
  impl_->setup_routes();
}

Server::~Server() = default;

int Server::bind() {
  const ServerOptions& o = impl_->options;
  int port = o.port;
  impl_->binding = true;
  if (port == 0) {
    port = impl_->http.bind_to_any_port(o.host);
    KILN_CHECK(port > 0, "serve: cannot bind {} on any port", o.host);
  } else {
    KILN_CHECK(port > 0 && port < 65536, "serve: --port must be in [0, 65535], got {}", port);
    KILN_CHECK(impl_->http.bind_to_port(o.host, port), "serve: cannot listen on {}:{} (in use, or not an address here)",
               o.host, port);
  }
  impl_->binding = false;
  // httplib listens with a backlog of 5; a burst of clients connecting at once would see SYNs dropped
  // (and retried a second later). Listening again on Linux only raises the backlog.
  if (impl_->listen_fd >= 0) ::listen(impl_->listen_fd, SOMAXCONN);
  return port;
}

void Server::run() {
  impl_->http.listen_after_bind();
}

void Server::set_model(ModelContext model) {
  KILN_CHECK(model.engine != nullptr, "serve: no engine");
  impl_->model = std::move(model);
  impl_->state.store(ServerState::Ready, std::memory_order_release);
}

void Server::begin_drain() {
  impl_->state.store(ServerState::Draining, std::memory_order_release);
}

bool Server::wait_idle(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(impl_->active_mu);
  return impl_->active_cv.wait_for(lock, timeout, [&] { return impl_->active == 0; });
}

void Server::stop() {
  impl_->http.stop();
}

Metrics& Server::metrics() {
  return impl_->metrics;
}

}  // namespace kiln::server
