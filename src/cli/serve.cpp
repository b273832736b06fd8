// `kiln serve`: an OpenAI-compatible HTTP server over the Executor. The port is bound first, exclusively (a port
// in use fails at once, before loading), /health answers 503 while the model loads, and "listening" is printed
// once requests are served; they are until SIGTERM or SIGINT: new requests get 503, running ones finish
// (bounded by --shutdown-timeout), and kiln exits 0.
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "cli/common.h"
#include "cli/verbs.h"
#include "kiln/error.h"
#include "kiln/executor.h"
#include "server/server.h"

namespace kiln::cli {

namespace {

struct ServeFlags {
  std::string model;
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string device = "cpu";
  std::string dtype = "auto";
  int threads = 0;
  int64_t max_num_tokens = 2048;
  int32_t max_batch_size = 64;
  int64_t max_seq_len = 0;
  int32_t block_size = 16;
  int64_t kv_cache_bytes = 0;
  double kv_cache_fraction = 0.9;
  bool no_prefix_caching = false;
  std::string schedule = "decode-first";
  bool no_cuda_graphs = false;
  std::string kv_cache_dtype = "auto";
  int64_t max_queue = 256;
  double shutdown_timeout = 30;
  std::string api_key;
  std::string served_model_name;
  std::string chat_template;
  int64_t max_body_bytes = int64_t{8} << 20;
  int http_threads = 128;
  bool log_requests = false;
  int64_t inject_fault_after_steps = 0;
  std::string step_log;
  bool profile = false;
  bool no_gemm_tuning = false;
};

// SIGINT/SIGTERM as an event: a thread waits for them with sigwait, so no handler runs in a
// signal context. The first asks for a graceful stop; a second one while stopping cuts it short.
struct StopSignal {
  std::mutex mu;
  std::condition_variable cv;
  int count = 0;

  void wait() {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return count > 0; });
  }
  int signals() {
    std::lock_guard<std::mutex> lock(mu);
    return count;
  }
};

std::shared_ptr<StopSignal> watch_signals() {
  // Blocked in every thread created after this, so sigwait alone receives them.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::signal(SIGPIPE, SIG_IGN);  // a client gone mid-write is a write error, not a crash
  auto stop = std::make_shared<StopSignal>();
  std::thread([stop, set] {
    for (;;) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0) continue;
      {
        std::lock_guard<std::mutex> lock(stop->mu);
        ++stop->count;
      }
      stop->cv.notify_all();
    }
  }).detach();
  return stop;
}

std::string default_model_name(const std::string& path) {
  std::filesystem::path p(path);
  while (!p.empty() && p.filename().empty()) p = p.parent_path();  // "dir/" names the folder
  if (std::filesystem::is_directory(p)) return p.filename().string();
  return p.stem().string();
}

int run(const ServeFlags& f) {
  const Device device = check_device(f.device);
  const std::optional<DType> compute_dtype = parse_compute_dtype(f.dtype, device);
  KILN_CHECK(f.port >= 0 && f.port < 65536, "--port must be in [0, 65535], got {}", f.port);
  KILN_CHECK(f.max_queue >= 0, "--max-queue must be >= 0, got {}", f.max_queue);
  KILN_CHECK(f.shutdown_timeout >= 0, "--shutdown-timeout must be >= 0, got {}", f.shutdown_timeout);
  KILN_CHECK(f.max_body_bytes >= 1024, "--max-body-bytes must be at least 1024, got {}", f.max_body_bytes);
  KILN_CHECK(f.http_threads >= 2 && f.http_threads <= 4096, "--http-threads must be in [2, 4096], got {}",
             f.http_threads);
  set_num_threads(f.threads);
  const std::string path = resolve_model_path(f.model);
  std::optional<std::string> template_override;
  if (!f.chat_template.empty()) {
    template_override = read_chat_template(f.chat_template);
    jinja::Template check(*template_override);  // a syntax error fails now, not at the first request
  }

  const std::shared_ptr<StopSignal> stop = watch_signals();
  server::ServerOptions so;
  so.host = f.host;
  so.port = f.port;
  so.api_key = f.api_key;
  so.max_body_bytes = static_cast<size_t>(f.max_body_bytes);
  so.http_threads = f.http_threads;
  so.log_requests = f.log_requests;
  server::Server server(so);
  const int port = server.bind();
  std::fprintf(stderr, "kiln serve: loading %s (http://%s:%d answers 503 until it is ready)\n", path.c_str(),
               f.host.c_str(), port);
  std::thread http([&server] { server.run(); });
  auto stop_http = [&] {
    server.stop();
    http.join();
  };

  std::unique_ptr<Executor> executor;
  std::unique_ptr<server::ExecutorEngine> engine;
  try {
    const auto t0 = std::chrono::steady_clock::now();
    LoadOptions lo;
    lo.device = device;
    lo.device_ordinal = device_ordinal(f.device);
    lo.compute_dtype = compute_dtype;
    lo.cuda_graphs = !f.no_cuda_graphs;
    lo.kv_cache_fp8 = f.kv_cache_dtype == "fp8";
    lo.fault_after_steps = f.inject_fault_after_steps;
    lo.profile = f.profile;
    lo.time_steps = !f.step_log.empty();
    lo.gemm_tuning = !f.no_gemm_tuning;
    std::shared_ptr<const Model> model = Model::load(path, lo);
    std::shared_ptr<const Tokenizer> tok = load_tokenizer_if_any(path);
    const ModelConfig& cfg = model->config();

    ExecutorConfig ec;
    ec.max_num_tokens = f.max_num_tokens;
    ec.max_batch_size = f.max_batch_size;
    ec.max_seq_len = f.max_seq_len;
    ec.block_size = f.block_size;
    ec.kv_cache_bytes = f.kv_cache_bytes;
    ec.kv_cache_fraction = f.kv_cache_fraction;
    ec.enable_prefix_caching = !f.no_prefix_caching;
    ec.prefill_first = f.schedule == "prefill-first";
    ec.max_queue = f.max_queue;
    ec.step_log_path = f.step_log;
    executor = std::make_unique<Executor>(model, tok, ec);
    std::fprintf(stderr, "kiln serve: %s\n", executor->memory_plan().describe(executor->stats().max_seq_len).c_str());
    engine = std::make_unique<server::ExecutorEngine>(*executor);

    server::ModelContext mc;
    mc.engine = engine.get();
    mc.tokenizer = tok;
    if (template_override) {
      std::string bos, eos;
      if (tok && tok->bos_id()) bos = tok->id_to_token(*tok->bos_id());
      if (tok && !tok->eos_ids().empty()) eos = tok->id_to_token(tok->eos_ids().front());
      mc.chat_template.emplace(*template_override, bos, eos);
    } else if (tok) {
      mc.chat_template = ChatTemplate::from_tokenizer(*tok);
    }
    mc.info.name = f.served_model_name.empty() ? default_model_name(path) : f.served_model_name;
    // The context a request gets, with the KV pool's size applied.
    const int64_t context = executor->stats().max_seq_len;
    mc.info.context_length = context;
    mc.info.vocab_size = static_cast<int32_t>(cfg.vocab_size);
    mc.info.created = static_cast<int64_t>(std::time(nullptr));
    mc.stop_token_ids = stop_ids(tok.get(), cfg);
    const std::string name = mc.info.name;
    const bool has_template = mc.chat_template.has_value();
    server.set_model(std::move(mc));
    const ExecutorStats st = executor->stats();
    std::fprintf(stderr,
                 "kiln serve: ready in %.1f s: model '%s' (%s, %.1fM parameters), context %lld, %lld KV blocks of %d "
                 "tokens%s, chat template: %s\n",
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), name.c_str(),
                 cfg.architecture.c_str(), model->num_parameters() / 1e6, static_cast<long long>(context),
                 static_cast<long long>(st.kv_blocks_total), f.block_size,
                 f.kv_cache_dtype == "fp8" ? " (fp8 e4m3)" : "", has_template ? "yes" : "no");
    std::fprintf(stderr, "kiln serve: listening on http://%s:%d\n", f.host.c_str(), port);
  } catch (...) {
    stop_http();
    throw;
  }

  // The engine's death (a device fault) stops the server as a signal does, and the exit code says it: a supervisor
  // restarts the process. /health answers 503 with the reason meanwhile.
  std::atomic<bool> watching{true};
  std::thread watcher([&] {
    while (watching.load()) {
      if (executor->stats().dead) {
        {
          std::lock_guard<std::mutex> lock(stop->mu);
          ++stop->count;
        }
        stop->cv.notify_all();
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  stop->wait();
  watching = false;
  watcher.join();
  if (const ExecutorStats dead = executor->stats(); dead.dead) {
    std::fprintf(stderr, "kiln serve: the engine is dead (%s); stopping\n", dead.dead_reason.c_str());
    // The handlers write their error responses; /health answers 503 with the reason for a second, for whoever
    // watches it, before the process exits non-zero.
    server.wait_idle(std::chrono::seconds(5));
    std::this_thread::sleep_for(std::chrono::seconds(1));
    stop_http();
    return 1;
  }
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(f.shutdown_timeout * 1000));
  const ExecutorStats st = executor->stats();
  std::fprintf(stderr, "kiln serve: stopping: %lld running and %lld queued requests get up to %.0f s to finish\n",
               static_cast<long long>(st.running), static_cast<long long>(st.queued), f.shutdown_timeout);
  server.begin_drain();
  // Running requests get the grace period (a second signal ends it); what is left is cancelled.
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!server.wait_idle(std::chrono::milliseconds(100)) && std::chrono::steady_clock::now() < deadline &&
         stop->signals() < 2) {
  }
  executor->shutdown(std::chrono::milliseconds(0));
  server.wait_idle(std::chrono::seconds(10));
  stop_http();
  std::fprintf(stderr, "kiln serve: stopped\n");
  return 0;
}

}  // namespace

std::function<int()> add_serve(CLI::App& app) {
  auto f = std::make_shared<ServeFlags>();
  app.add_option("--model,-m", f->model,
                 "HF checkpoint folder, .gguf file or llama2.c .bin (default: the default model)");
  app.add_option("--host", f->host, "Address to listen on")->capture_default_str();
  app.add_option("--port", f->port, "Port to listen on (0: any free port, printed on stderr)")->capture_default_str();
  app.add_option("--device", f->device, "cpu, cuda or cuda:N (GPU N)")->capture_default_str();
  app.add_option("--dtype", f->dtype, "cuda: compute in auto (f16, or bf16 when a weight is outside the f16 range), bf16 or f16")
      ->capture_default_str();
  add_threads_option(app, f->threads);
  app.add_option("--max-num-tokens", f->max_num_tokens, "Token budget of one engine step")->capture_default_str();
  app.add_option("--max-batch-size", f->max_batch_size, "Requests running at once")->capture_default_str();
  app.add_option("--max-seq-len", f->max_seq_len, "Context per request (0: the model's)")->capture_default_str();
  app.add_option("--block-size", f->block_size, "Tokens per KV cache block")->capture_default_str();
  app.add_option("--kv-cache-bytes", f->kv_cache_bytes,
                 "The KV cache at most, in bytes (0: the memory plan's; on the CPU 4 GiB)")
      ->capture_default_str();
  app.add_option("--kv-cache-fraction", f->kv_cache_fraction,
                 "cuda: of the GPU's memory, the part kiln takes in all (weights, workspace, KV cache)")
      ->capture_default_str();
  app.add_option("--step-log", f->step_log,
                 "Write one line per engine step (host phases, GPU time, shape) to this file; "
                 "bench/step_log_summary.py sums it");
  app.add_flag("--profile", f->profile,
               "cuda: time every op of every step with CUDA events (graphs off); per-op totals on stderr at exit");
  app.add_flag("--no-gemm-tuning", f->no_gemm_tuning,
               "cuda: cuBLASLt's heuristic GEMM algorithms instead of timing them at start");
  app.add_option("--inject-fault-after-steps", f->inject_fault_after_steps,
                 "Testing: a device fault after this many engine steps (the engine dies; 0: never)")
      ->group("");
  app.add_flag("--no-prefix-caching", f->no_prefix_caching, "Do not reuse KV blocks of shared prompt prefixes");
  app.add_option("--schedule", f->schedule,
                 "What a step's token budget serves first: running decodes (decode-first: a long prompt never "
                 "stalls them) or prompts (prefill-first: bursts finish sooner, decodes wait while prompts arrive)")
      ->check(CLI::IsMember({"decode-first", "prefill-first"}))
      ->capture_default_str();
  app.add_flag("--no-cuda-graphs", f->no_cuda_graphs, "cuda: run decode steps kernel by kernel, no CUDA graphs");
  add_kv_cache_dtype_option(app, f->kv_cache_dtype);
  app.add_option("--max-queue", f->max_queue, "Requests waiting at most; beyond it requests get 429 (0: unbounded)")
      ->capture_default_str();
  app.add_option("--shutdown-timeout", f->shutdown_timeout,
                 "Seconds running requests get to finish after SIGTERM/SIGINT")
      ->capture_default_str();
  app.add_option("--api-key", f->api_key, "Require 'Authorization: Bearer KEY' on /v1/* (default: $KILN_API_KEY)")
      ->envname("KILN_API_KEY");
  app.add_option("--served-model-name", f->served_model_name,
                 "The model name clients send and /v1/models lists (default: the model file or folder name)");
  app.add_option("--chat-template", f->chat_template, "A Jinja chat template file, instead of the tokenizer's");
  app.add_option("--max-body-bytes", f->max_body_bytes, "Largest request body accepted (413 beyond)")
      ->capture_default_str();
  app.add_option("--http-threads", f->http_threads, "Connections served at once")->capture_default_str();
  app.add_flag("--log-requests", f->log_requests, "Log every request on stderr");
  return [f] { return run(*f); };
}

}  // namespace kiln::cli
