// Internals of the HTTP server shared by server.cpp (setup, routes, small endpoints) and
// generate_handler.cpp (the two generation endpoints).
#pragma once

#include <httplib.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>

#include "server/server.h"

namespace kiln::server {

enum class ServerState { Loading, Ready, Draining };

struct Server::Impl {
  explicit Impl(ServerOptions o) : options(std::move(o)) {}

  ServerOptions options;
  httplib::Server http;
  Metrics metrics;
  std::atomic<ServerState> state{ServerState::Loading};
  ModelContext model;  // written once before state becomes Ready
  int listen_fd = -1;  // the listening socket, seen through httplib's socket-options hook while binding
  bool binding = false;

  // Generation requests in flight (a streaming one until its stream ends), for wait_idle().
  std::mutex active_mu;
  std::condition_variable active_cv;
  int active = 0;

  void setup_routes();
  // Why the engine died (ExecutorStats::dead_reason); empty while it lives or before the model is loaded.
  std::string dead_reason() const {
    if (state.load(std::memory_order_acquire) == ServerState::Loading || model.engine == nullptr) return {};
    const ExecutorStats st = model.engine->stats();
    return st.dead ? st.dead_reason : std::string();
  }
  void handle_generate(Endpoint endpoint, const httplib::Request& req, httplib::Response& res);
  std::string token_text(int32_t prev, int32_t id) const;
};

// Counts a generation request in flight for as long as it lives.
class ActiveRequest {
 public:
  explicit ActiveRequest(Server::Impl& s) : s_(s) {
    std::lock_guard<std::mutex> lock(s_.active_mu);
    ++s_.active;
  }
  ~ActiveRequest() {
    {
      std::lock_guard<std::mutex> lock(s_.active_mu);
      --s_.active;
    }
    s_.active_cv.notify_all();
  }
  ActiveRequest(const ActiveRequest&) = delete;
  ActiveRequest& operator=(const ActiveRequest&) = delete;

 private:
  Server::Impl& s_;
};

void send_error(httplib::Response& res, const ApiError& e);
void send_json(httplib::Response& res, int status, const ojson& body);

}  // namespace kiln::server
