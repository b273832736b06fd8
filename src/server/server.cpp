// The HTTP server: listener and thread pool, routes, authentication, readiness, error bodies for
// what httplib answers itself (404, 413), /health, /metrics, /v1/models and the chat page.
#include "server/server.h"

#include <fmt/format.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
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

// The methods a route answers (nullptr: no such route), for 405 and its Allow header.
const char* allowed_methods(const std::string& path) {
  if (path == "/v1/completions" || path == "/v1/chat/completions") return "POST";
  if (path == "/" || path == "/health" || path == "/metrics" || path == "/v1/models" ||
      starts_with(path, "/v1/models/"))
    return "GET, HEAD";
  return nullptr;
}

bool method_allowed(const std::string& method, const char* allowed) {
  return std::string(allowed) == "POST" ? method == "POST" : (method == "GET" || method == "HEAD");
}

// A request that says nothing of its body's length has none (RFC 9112 6.3); httplib would wait for the
// connection to close instead, so such a request is answered before it reads anything.
bool body_length_unknown(const httplib::Request& req) {
  return !req.has_header("Content-Length") &&
         req.get_header_value("Transfer-Encoding").find("chunked") == std::string::npos;
}

// True when nothing else can bind host:port because another socket listens there.
bool port_in_use(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0) return false;
  bool in_use = false;
  for (addrinfo* a = found; a != nullptr && !in_use; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd < 0) continue;
    const int yes = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    in_use = ::bind(fd, a->ai_addr, a->ai_addrlen) != 0 && errno == EADDRINUSE;
    ::close(fd);
  }
  ::freeaddrinfo(found);
  return in_use;
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
  // httplib's default sets SO_REUSEPORT, with which a second server binds the same port and the kernel splits the
  // connections between the two; SO_REUSEADDR alone still rebinds at once after a restart but refuses a port that
  // another socket listens on.
  http.set_socket_options([this](socket_t sock) {
    const int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    if (binding) listen_fd = sock;
  });
  const int threads = options.http_threads;
  http.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };

  // Methods and bodies, authentication and readiness, before routing (and before httplib reads a body).
  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    const char* allowed = allowed_methods(req.path);
    if (allowed && !method_allowed(req.method, allowed)) {
      res.set_header("Allow", allowed);
      send_error(
          res,
          ApiError(405, fmt::format("{} {} is not supported; {} answers {}.", req.method, req.path, req.path, allowed),
                   "", "method_not_allowed"));
      return httplib::Server::HandlerResponse::Handled;
    }
    const bool has_body_method =
        req.method == "POST" || req.method == "PUT" || req.method == "PATCH" || req.method == "DELETE";
    if (has_body_method && body_length_unknown(req)) {
      res.set_header("Connection", "close");
      if (!allowed) {
        send_error(res, ApiError(404, status_text(404), "", "not_found"));
      } else {
        send_error(res, ApiError(400,
                                 "The request has no body: send a JSON body with a Content-Length header (or "
                                 "chunked transfer encoding).",
                                 "", "missing_body"));
      }
      return httplib::Server::HandlerResponse::Handled;
    }
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
    if (!impl_->http.bind_to_port(o.host, port)) {
      impl_->binding = false;
      KILN_CHECK(!port_in_use(o.host, port),
                 "port {} is in use (another server listens on {}:{}); choose another with --port", port, o.host, port);
      KILN_THROW("serve: cannot listen on {}:{} ({} is not an address of this machine, or the port is not allowed)",
                 o.host, port, o.host);
    }
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
