// `kiln serve`'s HTTP layer over a real socket with a fake engine (deterministic tokens, no model):
// readiness, both endpoints streamed and not, error statuses and bodies, auth, body limits, 429,
// cancellation of a stream whose client leaves, draining, and /metrics.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "kiln/tokenizer.h"
#include "server/server.h"

namespace kiln::server {
namespace {

using namespace std::chrono_literals;

// Generates the ids of `words` in a loop, one token per request per tick, up to max_tokens.
class FakeEngine : public Engine {
 public:
  FakeEngine(std::shared_ptr<const Tokenizer> tok, int64_t context) : tok_(std::move(tok)), context_(context) {
    words_ = tok_->encode(" one two three four five six seven eight nine ten", false);
    thread_ = std::thread([this] { loop(); });
  }
  ~FakeEngine() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      quit_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  RequestId enqueue(Request r, ResponseCallback cb) override {
    KILN_CHECK(!r.prompt_ids.empty(), "request: the prompt is empty");
    KILN_CHECK(static_cast<int64_t>(r.prompt_ids.size()) < context_, "request: prompt longer than the context");
    std::lock_guard<std::mutex> lock(mu_);
    if (max_queue > 0 && static_cast<int64_t>(waiting_.size()) >= max_queue)
      throw QueueFullError("executor: the queue is full");
    const RequestId id = ++next_id_;
    waiting_.push_back({id, std::move(r), std::move(cb)});
    cv_.notify_all();
    return id;
  }
  void cancel(RequestId id) override {
    std::lock_guard<std::mutex> lock(mu_);
    cancel_requests_.push_back(id);
  }
  ExecutorStats stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    ExecutorStats s;
    s.queued = static_cast<int64_t>(waiting_.size());
    s.running = static_cast<int64_t>(running_.size());
    s.kv_blocks_total = 64;
    s.kv_blocks_used = 2 * s.running;
    s.kv_blocks_free = s.kv_blocks_total - s.kv_blocks_used;
    s.requests_finished = finished_;
    return s;
  }
  int cancelled() const {
    std::lock_guard<std::mutex> lock(mu_);
    return cancelled_;
  }
  void pause(bool p) {
    std::lock_guard<std::mutex> lock(mu_);
    paused_ = p;
    cv_.notify_all();
  }

  std::atomic<int64_t> max_queue{0};
  std::chrono::milliseconds tick{2};

 private:
  struct Item {
    RequestId id;
    Request req;
    ResponseCallback cb;
    int64_t generated = 0;
  };

  void loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!quit_) {
      cv_.wait_for(lock, tick, [&] { return quit_; });
      if (paused_ && cancel_requests_.empty()) continue;
      while (!paused_ && !waiting_.empty() && running_.size() < 4) {
        running_.push_back(std::move(waiting_.front()));
        waiting_.pop_front();
      }
      std::vector<std::pair<ResponseCallback, Response>> out;
      for (RequestId id : cancel_requests_) {
        for (auto it = waiting_.begin(); it != waiting_.end(); ++it) {
          if (it->id != id) continue;
          Response r;
          r.id = id;
          r.finished = true;
          r.finish_reason = FinishReason::Cancelled;
          out.emplace_back(it->cb, r);
          waiting_.erase(it);
          ++cancelled_;
          ++finished_;
          break;
        }
        for (auto it = running_.begin(); it != running_.end(); ++it) {
          if (it->id != id) continue;
          Response r;
          r.id = id;
          r.finished = true;
          r.finish_reason = FinishReason::Cancelled;
          r.prompt_tokens = static_cast<int64_t>(it->req.prompt_ids.size());
          r.generated_tokens = it->generated;
          out.emplace_back(it->cb, r);
          running_.erase(it);
          ++cancelled_;
          ++finished_;
          break;
        }
      }
      cancel_requests_.clear();
      for (auto it = running_.begin(); !paused_ && it != running_.end();) {
        Response r;
        r.id = it->id;
        // Seeded requests start elsewhere in the word list, so different seeds give different text.
        const size_t start = it->req.sampling.seed ? static_cast<size_t>(*it->req.sampling.seed % words_.size()) : 0;
        const int32_t tokid = words_[(start + it->generated) % words_.size()];
        ++it->generated;
        r.token_ids = {tokid};
        r.text = tok_->decode(r.token_ids, true);
        if (it->req.sampling.logprobs >= 0)
          r.logprobs = {{tokid, -0.5,
                         it->req.sampling.logprobs > 0 ? std::vector<std::pair<int32_t, double>>{{tokid, -0.5}}
                                                       : std::vector<std::pair<int32_t, double>>{}}};
        r.prompt_tokens = static_cast<int64_t>(it->req.prompt_ids.size());
        r.generated_tokens = it->generated;
        if (it->generated >= it->req.max_tokens) {
          r.finished = true;
          r.finish_reason = FinishReason::Length;
        }
        out.emplace_back(it->cb, r);
        if (r.finished) {
          ++finished_;
          it = running_.erase(it);
        } else {
          ++it;
        }
      }
      lock.unlock();
      for (auto& [cb, r] : out) cb(r);
      lock.lock();
    }
  }

  std::shared_ptr<const Tokenizer> tok_;
  int64_t context_;
  std::vector<int32_t> words_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> waiting_;
  std::vector<Item> running_;
  std::vector<RequestId> cancel_requests_;
  RequestId next_id_ = 0;
  int cancelled_ = 0;
  int64_t finished_ = 0;
  bool paused_ = false;
  bool quit_ = false;
  std::thread thread_;
};

struct HttpResult {
  int status = 0;
  std::string headers;
  std::string body;
};

int connect_to(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

std::string request_text(const std::string& method, const std::string& path, const std::string& body,
                         const std::string& extra_headers) {
  std::string r = method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" + extra_headers;
  if (method == "POST")
    r += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  return r + "\r\n" + body;
}

std::string dechunk(const std::string& s) {
  std::string out;
  size_t pos = 0;
  while (pos < s.size()) {
    const size_t eol = s.find("\r\n", pos);
    if (eol == std::string::npos) break;
    const size_t n = std::stoul(s.substr(pos, eol - pos), nullptr, 16);
    if (n == 0) break;
    out += s.substr(eol + 2, n);
    pos = eol + 2 + n + 2;
  }
  return out;
}

HttpResult http(int port, const std::string& method, const std::string& path, const std::string& body = "",
                const std::string& extra_headers = "") {
  HttpResult res;
  const int fd = connect_to(port);
  if (fd < 0) return res;
  const std::string req = request_text(method, path, body, extra_headers);
  (void)!::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  std::string raw;
  char buf[65536];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) raw.append(buf, static_cast<size_t>(n));
  ::close(fd);
  const size_t head_end = raw.find("\r\n\r\n");
  if (raw.size() < 12 || head_end == std::string::npos) return res;
  res.status = std::stoi(raw.substr(9, 3));
  res.headers = raw.substr(0, head_end);
  res.body = raw.substr(head_end + 4);
  if (res.headers.find("Transfer-Encoding: chunked") != std::string::npos) res.body = dechunk(res.body);
  return res;
}

// The JSON of each `data:` event of an SSE body, [DONE] as the string "[DONE]".
std::vector<ojson> sse_events(const std::string& body) {
  std::vector<ojson> out;
  std::istringstream in(body);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("data: ", 0) != 0) continue;
    const std::string data = line.substr(6);
    out.push_back(data == "[DONE]" ? ojson("[DONE]") : ojson::parse(data));
  }
  return out;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

class ServerHttp : public ::testing::Test {
 protected:
  void start(ServerOptions o = {}, bool ready = true) {
    tok_ = Tokenizer::from_path(std::string(KILN_SOURCE_DIR) + "/tests/fixtures/tokenizers/bytelevel-qwen2");
    engine_ = std::make_unique<FakeEngine>(tok_, 64);
    o.port = 0;
    o.keepalive_interval = 50ms;
    server_ = std::make_unique<Server>(o);
    port_ = server_->bind();
    thread_ = std::thread([this] { server_->run(); });
    if (ready) make_ready();
  }
  void make_ready() {
    ModelContext m;
    m.engine = engine_.get();
    m.tokenizer = tok_;
    m.chat_template.emplace(read_file(std::string(KILN_SOURCE_DIR) +
                                      "/tests/fixtures/chat-templates/HuggingFaceTB-SmolLM2-135M-Instruct.jinja"),
                            "", "<|im_end|>");
    m.info = {"tiny", 64, tok_->vocab_size(), 1700000000};
    server_->set_model(std::move(m));
  }
  void TearDown() override {
    if (server_) {
      server_->stop();
      thread_.join();
    }
  }
  HttpResult post(const std::string& path, const std::string& body, const std::string& headers = "") {
    return http(port_, "POST", path, body, headers);
  }
  HttpResult get(const std::string& path, const std::string& headers = "") {
    return http(port_, "GET", path, "", headers);
  }
  // Checks an OpenAI error body and returns its error object.
  ojson error_of(const HttpResult& r, int status) {
    EXPECT_EQ(r.status, status) << r.body;
    const ojson j = ojson::parse(r.body, nullptr, false);
    EXPECT_TRUE(j.is_object() && j.contains("error")) << r.body;
    if (!j.is_object() || !j.contains("error")) return ojson::object();
    const ojson& e = j["error"];
    EXPECT_TRUE(e["message"].is_string());
    EXPECT_TRUE(e["type"].is_string());
    EXPECT_TRUE(e.contains("param"));
    EXPECT_TRUE(e.contains("code"));
    return e;
  }

  std::shared_ptr<const Tokenizer> tok_;
  std::unique_ptr<FakeEngine> engine_;
  std::unique_ptr<Server> server_;
  std::thread thread_;
  int port_ = 0;
};

TEST_F(ServerHttp, HealthBeforeAndAfterLoading) {
  start({}, /*ready=*/false);
  EXPECT_EQ(get("/health").status, 503);
  error_of(post("/v1/completions", R"({"prompt": "hi"})"), 503);
  make_ready();
  EXPECT_EQ(get("/health").status, 200);
  const HttpResult models = get("/v1/models");
  ASSERT_EQ(models.status, 200);
  EXPECT_EQ(ojson::parse(models.body)["data"][0]["id"], "tiny");
  EXPECT_EQ(get("/v1/models/tiny").status, 200);
  error_of(get("/v1/models/other"), 404);
  const HttpResult page = get("/");
  EXPECT_EQ(page.status, 200);
  EXPECT_NE(page.body.find("/v1/chat/completions"), std::string::npos);
  EXPECT_EQ(page.body.find("http://"), std::string::npos);  // nothing from elsewhere
  EXPECT_EQ(page.body.find("https://"), std::string::npos);
}

TEST_F(ServerHttp, CompletionsStreamedAndNot) {
  start();
  const HttpResult r = post("/v1/completions", R"({"model": "tiny", "prompt": "Say", "max_tokens": 5, "echo": true})");
  ASSERT_EQ(r.status, 200) << r.body;
  const ojson j = ojson::parse(r.body);
  const std::string whole = j["choices"][0]["text"];
  EXPECT_EQ(whole.rfind("Say one two three", 0), 0u) << whole;  // echo, then the fake's words
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["completion_tokens"], 5);
  EXPECT_EQ(j["usage"]["total_tokens"], j["usage"]["prompt_tokens"].get<int>() + 5);

  const HttpResult s = post("/v1/completions", R"({"prompt": "Say", "max_tokens": 5, "stream": true,
                                                   "stream_options": {"include_usage": true}})");
  ASSERT_EQ(s.status, 200);
  EXPECT_NE(s.headers.find("text/event-stream"), std::string::npos);
  const std::vector<ojson> ev = sse_events(s.body);
  ASSERT_GE(ev.size(), 3u);
  EXPECT_EQ(ev.back(), "[DONE]");
  std::string text;
  std::string finish;
  for (size_t i = 0; i + 2 < ev.size(); ++i) {
    text += ev[i]["choices"][0]["text"].get<std::string>();
    if (!ev[i]["choices"][0]["finish_reason"].is_null()) finish = ev[i]["choices"][0]["finish_reason"];
    EXPECT_TRUE(ev[i]["usage"].is_null());
  }
  EXPECT_EQ("Say" + text, whole);
  EXPECT_EQ(finish, "length");
  EXPECT_EQ(ev[ev.size() - 2]["usage"]["completion_tokens"], 5);  // the usage chunk
  EXPECT_TRUE(ev[ev.size() - 2]["choices"].empty());

  // A streamed n=2 interleaves both choices, each with its own finish.
  const std::vector<ojson> two =
      sse_events(post("/v1/chat/completions",
                      R"({"messages": [{"role": "user", "content": "x"}], "n": 2, "max_tokens": 3, "stream": true})")
                     .body);
  std::map<int, std::string> finishes;
  std::map<int, int> roles;
  for (const ojson& e : two) {
    if (!e.is_object()) continue;
    const ojson& c = e["choices"][0];
    if (c["delta"].contains("role")) ++roles[c["index"].get<int>()];
    if (!c["finish_reason"].is_null()) finishes[c["index"].get<int>()] = c["finish_reason"];
  }
  EXPECT_EQ(roles, (std::map<int, int>{{0, 1}, {1, 1}}));
  EXPECT_EQ(finishes, (std::map<int, std::string>{{0, "length"}, {1, "length"}}));
  EXPECT_EQ(two.back(), "[DONE]");

  // n and a batch of prompts: one choice each, indexed in order.
  const ojson b = ojson::parse(post("/v1/completions", R"({"prompt": ["a", "b"], "n": 2, "max_tokens": 2,
                                                           "seed": 3, "logprobs": 1})")
                                   .body);
  ASSERT_EQ(b["choices"].size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(b["choices"][i]["index"], i);
  EXPECT_NE(b["choices"][0]["text"], b["choices"][1]["text"]);  // per-choice seeds
  EXPECT_EQ(b["choices"][0]["logprobs"]["tokens"].size(), 2u);
  EXPECT_EQ(b["usage"]["completion_tokens"], 8);
}

TEST_F(ServerHttp, ChatStreamedEqualsNotStreamed) {
  start();
  const std::string body = R"({"messages": [{"role": "user", "content": "Count"}], "max_tokens": 6)";
  const HttpResult r = post("/v1/chat/completions", body + "}");
  ASSERT_EQ(r.status, 200) << r.body;
  const ojson j = ojson::parse(r.body);
  EXPECT_EQ(j["object"], "chat.completion");
  const std::string whole = j["choices"][0]["message"]["content"];
  EXPECT_EQ(whole.rfind(" one two three", 0), 0u) << whole;
  // The prompt is the template's rendering: system line added by SmolLM2's template.
  EXPECT_GT(j["usage"]["prompt_tokens"].get<int>(), 10);

  const HttpResult s = post("/v1/chat/completions", body + R"(, "stream": true, "logprobs": true})");
  const std::vector<ojson> ev = sse_events(s.body);
  ASSERT_GE(ev.size(), 3u);
  EXPECT_EQ(ev.front()["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(ev.back(), "[DONE]");
  std::string streamed;
  int with_logprobs = 0;
  for (size_t i = 0; i + 1 < ev.size(); ++i) {
    EXPECT_EQ(ev[i]["object"], "chat.completion.chunk");
    EXPECT_FALSE(ev[i].contains("usage"));
    const ojson& d = ev[i]["choices"][0]["delta"];
    if (d.contains("content")) streamed += d["content"].get<std::string>();
    if (!ev[i]["choices"][0]["logprobs"].is_null()) ++with_logprobs;
  }
  EXPECT_EQ(streamed, whole);
  EXPECT_EQ(with_logprobs, 6);
  EXPECT_EQ(ev[ev.size() - 2]["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(ev[ev.size() - 2]["choices"][0]["delta"], ojson::object());
}

TEST_F(ServerHttp, BadInputsGetOpenAIErrors) {
  ServerOptions o;
  o.max_body_bytes = 4096;
  start(o);
  EXPECT_EQ(error_of(post("/v1/completions", "{not json"), 400)["code"], "invalid_json");
  EXPECT_EQ(error_of(post("/v1/completions", "[]"), 400)["code"], "invalid_json");
  EXPECT_EQ(error_of(post("/v1/completions", R"({"prompt": 1})"), 400)["param"], "prompt");
  EXPECT_EQ(error_of(post("/v1/completions", R"({"prompt": "x", "model": "gpt-4"})"), 400)["code"], "model_not_found");
  EXPECT_EQ(error_of(post("/v1/completions", R"({"prompt": "x", "temperature": 9})"), 400)["param"], "temperature");
  EXPECT_EQ(error_of(post("/v1/completions", R"({"prompt": "x", "max_tokens": -3})"), 400)["param"], "max_tokens");
  // Longer than the context of 64 tokens.
  std::string long_prompt;
  for (int i = 0; i < 80; ++i) long_prompt += " word";
  EXPECT_EQ(error_of(post("/v1/completions", R"({"prompt": ")" + long_prompt + R"("})"), 400)["code"],
            "context_length_exceeded");
  EXPECT_EQ(error_of(post("/v1/completions", R"({"prompt": "x", "max_tokens": 1000})"), 400)["param"], "max_tokens");
  EXPECT_EQ(error_of(post("/v1/chat/completions", R"({"messages": [{"role": "user"}]})"), 400)["param"],
            "messages[0].content");
  EXPECT_EQ(error_of(post("/v1/completions", std::string(5000, ' ')), 413)["code"], "request_too_large");
  EXPECT_EQ(error_of(get("/v1/nothing"), 404)["code"], "not_found");
  // Everything still works afterwards, and nothing is left running.
  EXPECT_EQ(post("/v1/completions", R"({"prompt": "x", "max_tokens": 2})").status, 200);
  EXPECT_EQ(engine_->stats().running, 0);
  const std::string metrics = get("/metrics").body;
  EXPECT_NE(metrics.find("kiln_http_requests_total{route=\"/v1/completions\",status=\"400\"} 8"), std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("kiln_http_requests_total{route=\"/v1/completions\",status=\"413\"} 1"), std::string::npos);
  EXPECT_NE(metrics.find("kiln_kv_cache_blocks_free 64"), std::string::npos);
}

TEST_F(ServerHttp, ApiKey) {
  ServerOptions o;
  o.api_key = "sekret";
  start(o);
  EXPECT_EQ(error_of(post("/v1/completions", R"({"prompt": "x"})"), 401)["code"], "invalid_api_key");
  error_of(post("/v1/completions", R"({"prompt": "x"})", "Authorization: Bearer wrong\r\n"), 401);
  error_of(get("/v1/models"), 401);
  EXPECT_EQ(post("/v1/completions", R"({"prompt": "x", "max_tokens": 1})", "Authorization: Bearer sekret\r\n").status,
            200);
  EXPECT_EQ(get("/health").status, 200);  // probes need no key
}

TEST_F(ServerHttp, FullQueueIs429) {
  start();
  engine_->max_queue = 1;
  engine_->pause(true);
  std::thread first([&] { EXPECT_EQ(post("/v1/completions", R"({"prompt": "x", "max_tokens": 1})").status, 200); });
  while (engine_->stats().queued < 1) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(error_of(post("/v1/completions", R"({"prompt": "x", "max_tokens": 1})"), 429)["code"],
            "rate_limit_exceeded");
  // n=2 with room for one: the choice that got in is cancelled again, so nothing is left behind.
  engine_->max_queue = 2;
  EXPECT_EQ(error_of(post("/v1/completions", R"({"prompt": "x", "max_tokens": 1, "n": 2})"), 429)["type"],
            "rate_limit_error");
  for (int i = 0; i < 500 && engine_->cancelled() == 0; ++i) std::this_thread::sleep_for(2ms);
  EXPECT_EQ(engine_->cancelled(), 1);
  EXPECT_EQ(engine_->stats().queued, 1);
  engine_->pause(false);
  first.join();
  EXPECT_EQ(post("/v1/completions", R"({"prompt": "x", "max_tokens": 1})").status, 200);
  EXPECT_EQ(engine_->stats().queued + engine_->stats().running, 0);
}

TEST_F(ServerHttp, ClientLeavingMidStreamCancels) {
  start();
  engine_->tick = 20ms;
  const int fd = connect_to(port_);
  ASSERT_GE(fd, 0);
  const std::string req =
      request_text("POST", "/v1/completions", R"({"prompt": "x", "max_tokens": 50, "stream": true})", "");
  ASSERT_EQ(::send(fd, req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
  std::string got;
  char buf[4096];
  while (got.find("\"text\":\" two\"") == std::string::npos) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    ASSERT_GT(n, 0);
    got.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  for (int i = 0; i < 500 && engine_->cancelled() == 0; ++i) std::this_thread::sleep_for(5ms);
  EXPECT_EQ(engine_->cancelled(), 1);
  EXPECT_EQ(engine_->stats().running, 0);
  EXPECT_TRUE(server_->wait_idle(2s));
  EXPECT_NE(get("/metrics").body.find("kiln_request_finish_total{reason=\"cancelled\"} 1"), std::string::npos);
}

TEST_F(ServerHttp, DrainFinishesRunningAndRefusesNew) {
  start();
  engine_->tick = 10ms;
  HttpResult running;
  std::thread t([&] { running = post("/v1/completions", R"({"prompt": "x", "max_tokens": 20, "stream": true})"); });
  while (engine_->stats().running < 1) std::this_thread::sleep_for(1ms);
  server_->begin_drain();
  EXPECT_EQ(get("/health").status, 503);
  EXPECT_EQ(error_of(post("/v1/completions", R"({"prompt": "x"})"), 503)["code"], "service_unavailable");
  EXPECT_TRUE(server_->wait_idle(5s));
  t.join();
  const std::vector<ojson> ev = sse_events(running.body);
  ASSERT_FALSE(ev.empty());
  EXPECT_EQ(ev.back(), "[DONE]");
  EXPECT_EQ(ev[ev.size() - 2]["choices"][0]["finish_reason"], "length");
}

TEST_F(ServerHttp, IdleStreamSendsComments) {
  start();
  engine_->pause(true);
  HttpResult r;
  std::thread t([&] { r = post("/v1/completions", R"({"prompt": "x", "max_tokens": 2, "stream": true})"); });
  std::this_thread::sleep_for(300ms);  // several keep-alive intervals of 50 ms
  engine_->pause(false);
  t.join();
  EXPECT_NE(r.body.find("\n: keep-alive\n\n"), std::string::npos) << r.body;
  const std::vector<ojson> ev = sse_events(r.body);
  ASSERT_EQ(ev.size(), 3u);  // two tokens (the last with its finish), [DONE]
  EXPECT_EQ(ev.back(), "[DONE]");
}

TEST_F(ServerHttp, ConcurrentStreams) {
  start();
  std::vector<std::thread> clients;
  std::atomic<int> ok{0};
  for (int i = 0; i < 16; ++i) {
    clients.emplace_back([&] {
      const HttpResult r = post("/v1/completions", R"({"prompt": "x", "max_tokens": 8, "stream": true})");
      const auto ev = sse_events(r.body);
      if (r.status == 200 && !ev.empty() && ev.back() == "[DONE]") ++ok;
    });
  }
  for (auto& c : clients) c.join();
  EXPECT_EQ(ok, 16);
  const std::string m = get("/metrics").body;
  EXPECT_NE(m.find("kiln_http_requests_total{route=\"/v1/completions\",status=\"200\"} 16"), std::string::npos);
  EXPECT_NE(m.find("kiln_generation_tokens_total 128"), std::string::npos);
  EXPECT_NE(m.find("kiln_time_to_first_token_seconds_count 16"), std::string::npos);
}

// Sends raw request bytes and returns the parsed answer (status 0 when none came within the socket's life).
HttpResult raw_exchange(int port, const std::string& bytes) {
  HttpResult res;
  const int fd = connect_to(port);
  if (fd < 0) return res;
  (void)!::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
  std::string raw;
  char buf[65536];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) {
    raw.append(buf, static_cast<size_t>(n));
    // Some answers keep the connection open: stop once a complete body has come.
    const size_t head_end = raw.find("\r\n\r\n");
    const size_t cl = raw.find("Content-Length: ");
    if (head_end != std::string::npos && cl != std::string::npos && cl < head_end &&
        raw.size() >= head_end + 4 + std::stoul(raw.substr(cl + 16)))
      break;
  }
  ::close(fd);
  const size_t head_end = raw.find("\r\n\r\n");
  if (raw.size() < 12 || head_end == std::string::npos) return res;
  res.status = std::stoi(raw.substr(9, 3));
  res.headers = raw.substr(0, head_end);
  res.body = raw.substr(head_end + 4);
  return res;
}

TEST_F(ServerHttp, PostWithoutBodyIs400AtOnce) {
  start();
  const auto t0 = std::chrono::steady_clock::now();
  // No Content-Length and no chunked encoding: the request has no body (httplib alone would wait 30 s for one).
  const HttpResult r = raw_exchange(port_, "POST /v1/completions HTTP/1.1\r\nHost: x\r\n\r\n");
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(error_of(r, 400)["code"], "missing_body");
  EXPECT_LT(secs, 2.0);
  // The same on a path that does not exist is a 404, also at once.
  const HttpResult nf = raw_exchange(port_, "POST /v1/nothing HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(error_of(nf, 404)["code"], "not_found");
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 4.0);
  // An empty body that says so is malformed JSON, as before.
  EXPECT_EQ(error_of(post("/v1/completions", ""), 400)["code"], "invalid_json");
}

TEST_F(ServerHttp, WrongMethodIs405WithAllow) {
  start();
  const HttpResult a = get("/v1/completions");
  EXPECT_EQ(error_of(a, 405)["code"], "method_not_allowed");
  EXPECT_NE(a.headers.find("Allow: POST"), std::string::npos) << a.headers;
  const HttpResult b = get("/v1/chat/completions");
  EXPECT_EQ(b.status, 405);
  EXPECT_NE(b.headers.find("Allow: POST"), std::string::npos) << b.headers;
  const HttpResult c = post("/health", "{}");
  EXPECT_EQ(error_of(c, 405)["code"], "method_not_allowed");
  EXPECT_NE(c.headers.find("Allow: GET, HEAD"), std::string::npos) << c.headers;
  const HttpResult d = http(port_, "DELETE", "/v1/models");
  EXPECT_EQ(d.status, 405);
  EXPECT_NE(d.headers.find("Allow: GET, HEAD"), std::string::npos) << d.headers;
  EXPECT_EQ(http(port_, "PUT", "/v1/models/tiny", "").status, 405);
  // The right methods still answer.
  EXPECT_EQ(get("/health").status, 200);
  EXPECT_EQ(post("/v1/completions", R"({"prompt": "x", "max_tokens": 1})").status, 200);
}

TEST_F(ServerHttp, NonStreamingClientLeavingCancels) {
  start();
  engine_->tick = 20ms;
  const int fd = connect_to(port_);
  ASSERT_GE(fd, 0);
  const std::string req = request_text("POST", "/v1/completions", R"({"prompt": "x", "max_tokens": 60})", "");
  ASSERT_EQ(::send(fd, req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
  for (int i = 0; i < 500 && engine_->stats().running == 0; ++i) std::this_thread::sleep_for(5ms);
  ASSERT_EQ(engine_->stats().running, 1);
  ::close(fd);
  // Cancelled within a few of the handler's 100 ms checks, long before 60 tokens of 20 ms.
  for (int i = 0; i < 200 && engine_->cancelled() == 0; ++i) std::this_thread::sleep_for(5ms);
  EXPECT_EQ(engine_->cancelled(), 1);
  EXPECT_EQ(engine_->stats().running, 0);
  EXPECT_TRUE(server_->wait_idle(2s));
  EXPECT_NE(get("/metrics").body.find("kiln_request_finish_total{reason=\"cancelled\"} 1"), std::string::npos);
  // A client that stays gets its answer.
  EXPECT_EQ(post("/v1/completions", R"({"prompt": "x", "max_tokens": 3})").status, 200);
  EXPECT_EQ(engine_->cancelled(), 1);
}

TEST_F(ServerHttp, SecondServerOnTheSamePortIsRefused) {
  start();
  ServerOptions o;
  o.port = port_;
  Server second(o);
  try {
    second.bind();
    FAIL() << "a second server bound port " << port_;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("port " + std::to_string(port_) + " is in use"), std::string::npos)
        << e.what();
  }
  // The first one still serves every connection.
  for (int i = 0; i < 8; ++i) EXPECT_EQ(get("/health").status, 200);
}

}  // namespace
}  // namespace kiln::server
