// `kiln bench throughput|latency`: synthetic or dataset workloads run through the Executor, reported as
// request/s, output and total tok/s, TTFT/TPOT/ITL percentiles, peak memory and KV usage.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#ifdef KILN_HAVE_CUDA
#include <cuda_runtime.h>
#endif

#include "cli/bench_workload.h"
#include "cli/common.h"
#include "cli/verbs.h"
#include "core/stats.h"
#include "core/thread_pool.h"
#include "kiln/error.h"
#include "kiln/executor.h"

namespace kiln::cli {

namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

double secs(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}
double ms(Clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

struct BenchFlags {
  // Model and engine, both modes.
  std::string model;
  bool random_weights = false;
  std::string tokenizer;
  std::string dtype = "auto";
  std::string device = "cpu";
  int threads = 0;
  uint64_t seed = 0;
  int64_t num_requests = -1;    // -1: the mode's default
  int32_t max_batch_size = -1;  // -1: the mode's default
  int64_t max_num_tokens = 2048;
  int64_t kv_cache_bytes = 0;  // 0: the memory plan's (kiln::MemoryPlan)
  double kv_cache_fraction = 0.9;
  std::string step_log;
  bool profile = false;
  bool no_gemm_tuning = false;
  int32_t block_size = 16;
  bool no_prefix_caching = false;
  std::string schedule = "decode-first";
  bool no_cuda_graphs = false;
  std::string kv_cache_dtype = "auto";
  bool no_device_sampling = false;
  bool json = false;
  bool quiet = false;
  int64_t isl = 128;
  int64_t osl = 128;
  int64_t warmup = -1;  // -1: the mode's default
  // throughput
  std::string isl_dist;
  std::string osl_dist;
  std::string dataset;
  double request_rate = 0.0;
  // latency
  std::string batch_sizes = "1";
  int64_t iterations = 3;
};

// ---------------------------------------------------------------- machine and memory

std::string cpu_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) != 0) continue;
    const size_t colon = line.find(':');
    if (colon == std::string::npos) break;
    std::string name = line.substr(colon + 1);
    name.erase(0, name.find_first_not_of(" \t"));
    return name;
  }
  return "unknown CPU";
}

// Peak resident set of this process (VmHWM), in bytes; 0 when unknown.
int64_t peak_host_rss_bytes() {
  std::ifstream in("/proc/self/status");
  std::string key;
  while (in >> key) {
    if (key == "VmHWM:") {
      int64_t kb = 0;
      in >> kb;
      return kb * 1024;
    }
    in.ignore(1 << 20, '\n');
  }
  return 0;
}

// Device memory in use (all processes) when the device is a GPU; none on the CPU.
std::optional<int64_t> gpu_used_bytes(const std::string& device) {
#ifdef KILN_HAVE_CUDA
  if (device != "cpu") {
    size_t free = 0, total = 0;
    if (cudaSetDevice(device_ordinal(device)) == cudaSuccess && cudaMemGetInfo(&free, &total) == cudaSuccess)
      return static_cast<int64_t>(total - free);
  }
#endif
  (void)device;
  return std::nullopt;
}

// What the report names the device by: the CPU's model name, or the GPU's.
std::string device_name(const std::string& device) {
#ifdef KILN_HAVE_CUDA
  if (device != "cpu") {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, device_ordinal(device)) == cudaSuccess) return prop.name;
    return "unknown GPU";
  }
#endif
  (void)device;
  return cpu_name();
}


std::string utc_timestamp() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// ---------------------------------------------------------------- progress on stderr

// A bar redrawn in place when stderr is a terminal; otherwise a line every few seconds (logs, CI).
class Progress {
 public:
  explicit Progress(bool enabled) : enabled_(enabled), tty_(isatty(STDERR_FILENO) != 0) {}
  void phase(std::string label, int64_t total) {
    label_ = std::move(label);
    total_ = total;
    start_ = last_ = Clock::now();
  }
  void update(int64_t done, int64_t out_tokens, bool force = false) {
    if (!enabled_) return;
    const auto now = Clock::now();
    if (!force && now - last_ < (tty_ ? std::chrono::milliseconds(100) : std::chrono::milliseconds(5000))) return;
    last_ = now;
    const double t = secs(now - start_);
    const double rate = t > 0 ? static_cast<double>(out_tokens) / t : 0.0;
    if (tty_) {
      constexpr int kWidth = 24;
      const int filled = total_ > 0 ? static_cast<int>(kWidth * done / total_) : 0;
      std::string bar(static_cast<size_t>(filled), '#');
      bar.resize(kWidth, '.');
      std::fprintf(stderr, "\r\x1b[K%s [%s] %lld/%lld requests  %.1f output tok/s  %.1f s", label_.c_str(), bar.c_str(),
                   static_cast<long long>(done), static_cast<long long>(total_), rate, t);
      drawn_ = true;
    } else {
      std::fprintf(stderr, "%s: %lld/%lld requests done, %lld output tokens, %.1f output tok/s, %.1f s\n",
                   label_.c_str(), static_cast<long long>(done), static_cast<long long>(total_),
                   static_cast<long long>(out_tokens), rate, t);
    }
  }
  void end() {
    if (enabled_ && tty_ && drawn_) std::fputs("\r\x1b[K", stderr);
    drawn_ = false;
  }

 private:
  bool enabled_;
  bool tty_;
  bool drawn_ = false;
  std::string label_;
  int64_t total_ = 0;
  Clock::time_point start_, last_;
};

// ---------------------------------------------------------------- running requests

// What one request did, as seen by its callback.
struct Track {
  Clock::time_point enqueued, first, last, finished;
  int64_t prompt_len = 0;
  int64_t wanted = 0;
  int64_t tokens = 0;
  std::vector<double> itl_ms;  // gaps between consecutive tokens
  FinishReason finish = FinishReason::None;
  std::string error;
};

struct RunOutcome {
  std::vector<Track> tracks;
  Clock::time_point start, end;
  int64_t kv_peak_blocks = 0;
  std::optional<int64_t> gpu_peak_bytes;
  int64_t steps = 0;
  int64_t preemptions = 0;
};

// Enqueues reqs[i] at start + arrivals[i] (ignore_eos, greedy, max_tokens = output_len) and waits for all.
RunOutcome run_requests(Executor& ex, const std::vector<BenchRequest>& reqs, const std::vector<double>& arrivals,
                        const std::string& device, Progress& progress) {
  RunOutcome out;
  out.tracks.resize(reqs.size());
  std::mutex mu;
  std::condition_variable cv;
  int64_t done = 0;  // under mu
  std::atomic<int64_t> done_seen{0}, out_tokens{0};
  const ExecutorStats before = ex.stats();
  std::vector<RequestId> ids;
  ids.reserve(reqs.size());
  size_t next = 0;
  const int64_t n = static_cast<int64_t>(reqs.size());
  // KV use peaks within a step; the executor publishes its stats before the step's callbacks run, so the
  // callbacks (executor thread) sample it once a step, and the main thread samples between steps.
  int64_t kv_peak_engine = 0;
  Clock::time_point last_engine_sample{};

  // Runs on the executor thread; keeps to a clock read and a few stores.
  auto callback_for = [&](size_t i) {
    return [&, i](const Response& r) {
      const auto now = Clock::now();
      if (now - last_engine_sample > std::chrono::microseconds(100)) {
        kv_peak_engine = std::max(kv_peak_engine, ex.stats().kv_blocks_used);
        last_engine_sample = now;
      }
      Track& t = out.tracks[i];
      const int64_t k = static_cast<int64_t>(r.token_ids.size());
      if (k > 0) {
        if (t.tokens == 0) {
          t.first = now;
          t.itl_ms.insert(t.itl_ms.end(), static_cast<size_t>(k - 1), 0.0);
        } else {
          t.itl_ms.insert(t.itl_ms.end(), static_cast<size_t>(k), ms(now - t.last) / static_cast<double>(k));
        }
        t.last = now;
        t.tokens += k;
        out_tokens.fetch_add(k, std::memory_order_relaxed);
      }
      if (r.finished) {
        t.finished = now;
        t.finish = r.finish_reason;
        t.error = r.error;
        std::lock_guard lk(mu);
        ++done;
        done_seen.store(done, std::memory_order_relaxed);
        cv.notify_all();
      }
    };
  };

  auto sample = [&] {
    const ExecutorStats s = ex.stats();
    out.kv_peak_blocks = std::max(out.kv_peak_blocks, s.kv_blocks_used);
    if (const auto g = gpu_used_bytes(device)) out.gpu_peak_bytes = std::max(out.gpu_peak_bytes.value_or(0), *g);
  };

  try {
    out.start = Clock::now();
    for (;;) {
      const auto now = Clock::now();
      while (next < reqs.size() &&
             out.start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(arrivals[next])) <=
                 now) {
        Request r;
        r.prompt_ids = reqs[next].prompt;
        r.max_tokens = reqs[next].output_len;
        r.ignore_eos = true;
        r.sampling.temperature = 0.0f;
        Track& t = out.tracks[next];
        t.prompt_len = static_cast<int64_t>(reqs[next].prompt.size());
        t.wanted = reqs[next].output_len;
        t.enqueued = Clock::now();
        ids.push_back(ex.enqueue(std::move(r), callback_for(next)));
        ++next;
      }
      sample();
      progress.update(done_seen.load(std::memory_order_relaxed), out_tokens.load(std::memory_order_relaxed));
      std::unique_lock lk(mu);
      if (done == n) break;
      auto wake = Clock::now() + std::chrono::milliseconds(5);
      if (next < reqs.size())
        wake = std::min(wake, out.start + std::chrono::duration_cast<Clock::duration>(
                                              std::chrono::duration<double>(arrivals[next])));
      cv.wait_until(lk, wake, [&] { return done == n; });
      if (done == n) break;
    }
  } catch (...) {
    // Nothing may call back into `out` once this returns: end what was enqueued and wait for it.
    for (RequestId id : ids) ex.cancel(id);
    std::unique_lock lk(mu);
    cv.wait(lk, [&] { return done == static_cast<int64_t>(ids.size()); });
    throw;
  }
  progress.update(n, out_tokens.load(), /*force=*/true);
  progress.end();
  out.end = out.start;
  for (const Track& t : out.tracks) out.end = std::max(out.end, t.finished);
  const ExecutorStats after = ex.stats();
  out.steps = after.steps - before.steps;
  out.preemptions = after.preemptions - before.preemptions;
  sample();
  out.kv_peak_blocks = std::max(out.kv_peak_blocks, kv_peak_engine);  // every callback has run: done == n
  for (size_t i = 0; i < out.tracks.size(); ++i) {
    const Track& t = out.tracks[i];
    KILN_CHECK(t.finish != FinishReason::Error, "bench: request {} failed: {}", i, t.error);
    KILN_CHECK(t.tokens == t.wanted, "bench: request {} ended ({}) after {} of its {} output tokens", i,
               finish_reason_name(t.finish), t.tokens, t.wanted);
  }
  return out;
}

// ---------------------------------------------------------------- metrics

struct Metrics {
  int64_t num_requests = 0;
  int64_t input_tokens = 0;
  int64_t output_tokens = 0;
  double seconds = 0.0;
  Summary ttft, tpot, itl, latency;
  double requests_per_s() const { return seconds > 0 ? num_requests / seconds : 0.0; }
  double output_tokens_per_s() const { return seconds > 0 ? output_tokens / seconds : 0.0; }
  double total_tokens_per_s() const { return seconds > 0 ? (input_tokens + output_tokens) / seconds : 0.0; }
};

// Per-request figures of the runs; `seconds` is the measured time they cover.
Metrics measure(const std::vector<const RunOutcome*>& runs, double seconds) {
  Metrics m;
  m.seconds = seconds;
  std::vector<double> ttft, tpot, itl, latency;
  for (const RunOutcome* run : runs) {
    for (const Track& t : run->tracks) {
      ++m.num_requests;
      m.input_tokens += t.prompt_len;
      m.output_tokens += t.tokens;
      ttft.push_back(ms(t.first - t.enqueued));
      latency.push_back(ms(t.finished - t.enqueued));
      if (t.tokens > 1) tpot.push_back(ms(t.last - t.first) / static_cast<double>(t.tokens - 1));
      itl.insert(itl.end(), t.itl_ms.begin(), t.itl_ms.end());
    }
  }
  m.ttft = summarize(std::move(ttft));
  m.tpot = summarize(std::move(tpot));
  m.itl = summarize(std::move(itl));
  m.latency = summarize(std::move(latency));
  return m;
}

json summary_json(const Summary& s) {
  if (s.count == 0)
    return {{"count", 0},     {"mean", nullptr}, {"p50", nullptr}, {"p90", nullptr},
            {"p99", nullptr}, {"min", nullptr},  {"max", nullptr}};
  return {{"count", s.count}, {"mean", s.mean}, {"p50", s.p50}, {"p90", s.p90},
          {"p99", s.p99},     {"min", s.min},   {"max", s.max}};
}

void metrics_json(json& j, const Metrics& m) {
  j["num_requests"] = m.num_requests;
  j["input_tokens"] = m.input_tokens;
  j["output_tokens"] = m.output_tokens;
  j["duration_s"] = m.seconds;
  j["requests_per_s"] = m.requests_per_s();
  j["output_tokens_per_s"] = m.output_tokens_per_s();
  j["total_tokens_per_s"] = m.total_tokens_per_s();
  j["ttft_ms"] = summary_json(m.ttft);
  j["tpot_ms"] = summary_json(m.tpot);
  j["itl_ms"] = summary_json(m.itl);
  j["latency_ms"] = summary_json(m.latency);
}

void print_summary_rows(const Metrics& m) {
  std::printf("  %-14s %10s %10s %10s %10s %10s\n", "", "mean", "p50", "p90", "p99", "max");
  auto row = [](const char* name, const Summary& s) {
    if (s.count == 0) {
      std::printf("  %-14s %10s\n", name, "-");
      return;
    }
    std::printf("  %-14s %10.2f %10.2f %10.2f %10.2f %10.2f\n", name, s.mean, s.p50, s.p90, s.p99, s.max);
  };
  row("TTFT (ms)", m.ttft);
  row("TPOT (ms)", m.tpot);
  row("ITL (ms)", m.itl);
  row("latency (ms)", m.latency);
}

std::string mib(int64_t bytes) {
  return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / 1048576.0);
}

// ---------------------------------------------------------------- model, engine and shared report

std::optional<DType> parse_dtype_flag(const std::string& s) {
  if (s == "auto") return std::nullopt;
  if (s == "f32" || s == "float32" || s == "fp32") return DType::F32;
  if (s == "f16" || s == "float16" || s == "fp16" || s == "half") return DType::F16;
  if (s == "bf16" || s == "bfloat16") return DType::BF16;
  KILN_THROW("--dtype must be auto, f32, f16 or bf16, got '{}'", s);
}

struct Setup {
  std::shared_ptr<const Model> model;
  std::shared_ptr<const Tokenizer> tokenizer;
  std::string path;
  double load_s = 0.0;
};

void check_common(const BenchFlags& f) {
  check_device(f.device);
  parse_dtype_flag(f.dtype);
  KILN_CHECK(f.num_requests == -1 || f.num_requests >= 1, "--num-requests must be >= 1, got {}", f.num_requests);
  KILN_CHECK(f.max_batch_size == -1 || f.max_batch_size >= 1, "--max-batch-size must be >= 1, got {}",
             f.max_batch_size);
  KILN_CHECK(f.max_num_tokens >= 1, "--max-num-tokens must be >= 1, got {}", f.max_num_tokens);
  KILN_CHECK(f.kv_cache_bytes >= 0, "--kv-cache-bytes must be >= 0, got {}", f.kv_cache_bytes);
  KILN_CHECK(f.kv_cache_fraction > 0 && f.kv_cache_fraction <= 1, "--kv-cache-fraction must be in (0, 1], got {}",
             f.kv_cache_fraction);
  KILN_CHECK(f.block_size >= 1 && f.block_size <= 4096, "--block-size must be in [1, 4096], got {}", f.block_size);
  KILN_CHECK(f.threads >= 0, "--threads must be >= 0, got {}", f.threads);
  KILN_CHECK(f.warmup >= -1, "--warmup must be >= 0, got {}", f.warmup);
  KILN_CHECK(f.random_weights || f.dtype == "auto" || (f.device == "cpu" && parse_dtype_flag(f.dtype) == DType::F32),
             "--dtype {}: a checkpoint runs in the dtype its backend picks for it (the CPU's: f32); --dtype sets "
             "the dtype of --random-weights",
             f.dtype);
}

Setup load(const BenchFlags& f) {
  Setup s;
  set_num_threads(f.threads);
  KILN_CHECK(!f.random_weights || !f.model.empty(),
             "--random-weights needs --model: an HF config.json, or a folder holding one");
  s.path = resolve_model_path(f.model);
  LoadOptions lo;
  lo.progress = !f.quiet && isatty(STDERR_FILENO);
  lo.random_weights = f.random_weights;
  lo.random_seed = f.seed;
  lo.random_dtype = parse_dtype_flag(f.dtype);
  lo.device = check_device(f.device);
  lo.device_ordinal = device_ordinal(f.device);
  lo.cuda_graphs = !f.no_cuda_graphs;
  lo.kv_cache_fp8 = f.kv_cache_dtype == "fp8";
  lo.gemm_tuning = !f.no_gemm_tuning;
  lo.profile = f.profile;
  lo.time_steps = !f.step_log.empty();
  const auto t0 = Clock::now();
  s.model = Model::load(s.path, lo);
  s.load_s = secs(Clock::now() - t0);
  if (!f.tokenizer.empty()) {
    s.tokenizer = Tokenizer::from_path(f.tokenizer);
  } else if (!f.random_weights) {
    s.tokenizer = load_tokenizer_if_any(s.path);
  }
  if (!f.quiet && !lo.progress)  // the loader's progress line already says it
    std::fprintf(stderr, "kiln bench: loaded %s (%s, %.1fM parameters, %s%s) in %.2f s\n", s.path.c_str(),
                 s.model->config().architecture.c_str(), s.model->num_parameters() / 1e6,
                 f.random_weights ? "random " : "", std::string(dtype_name(s.model->config().checkpoint_dtype)).c_str(),
                 s.load_s);
  return s;
}

// Every request fits the model's context and vocabulary; `what` names the source in errors.
void check_requests(const std::vector<BenchRequest>& reqs, const ModelConfig& cfg, const std::string& what) {
  const int64_t ctx = cfg.max_position_embeddings;
  for (size_t i = 0; i < reqs.size(); ++i) {
    const BenchRequest& r = reqs[i];
    const int64_t len = static_cast<int64_t>(r.prompt.size()) + r.output_len;
    KILN_CHECK(ctx <= 0 || len <= ctx,
               "{}: request {} needs {} tokens ({} in, {} out) but the model's context is {} "
               "(max_position_embeddings)",
               what, i, len, r.prompt.size(), r.output_len, ctx);
    for (int32_t id : r.prompt)
      KILN_CHECK(id < cfg.vocab_size, "{}: request {} holds token id {}, outside the vocabulary of {}", what, i, id,
                 cfg.vocab_size);
  }
}

// The engine for the workload. Its KV cache comes from the memory plan (kiln::MemoryPlan), as for every verb: when
// it holds less than the workload wants at once, requests queue and preempt, and the report says how often.
ExecutorConfig engine_config(const BenchFlags& f, int32_t max_batch_size) {
  ExecutorConfig ec;
  ec.max_batch_size = max_batch_size;
  ec.max_num_tokens = f.max_num_tokens;
  ec.block_size = f.block_size;
  ec.enable_prefix_caching = !f.no_prefix_caching;
  ec.prefill_first = f.schedule == "prefill-first";
  ec.device_sampling = !f.no_device_sampling;
  ec.kv_cache_bytes = f.kv_cache_bytes;
  ec.kv_cache_fraction = f.kv_cache_fraction;
  ec.step_log_path = f.step_log;
  return ec;
}

// The longest request (prompt + output) of the workload, for the plan's concurrency figure.
int64_t longest_request(const std::vector<BenchRequest>& reqs) {
  int64_t n = 0;
  for (const BenchRequest& r : reqs) n = std::max(n, static_cast<int64_t>(r.prompt.size()) + r.output_len);
  return n;
}

// What the KV cache stores: fp8_e4m3, or the compute type (f32 on the CPU).
std::string kv_cache_dtype_name(const BenchFlags& f, const Setup& s) {
  return f.kv_cache_dtype == "fp8" ? std::string("fp8_e4m3") : compute_dtype(*s.model);
}

json common_json(const char* mode, const BenchFlags& f, const Setup& s, const Executor& ex) {
  const ModelConfig& c = s.model->config();
  const ExecutorStats st = ex.stats();
  const ExecutorConfig& ec = ex.config();
  json j;
  j["mode"] = mode;
  j["model"] = s.path;
  j["architecture"] = c.architecture;
  j["random_weights"] = f.random_weights;
  j["num_parameters"] = s.model->num_parameters();
  j["weight_bytes"] = s.model->weight_bytes();
  j["dtype"] = std::string(dtype_name(c.checkpoint_dtype));
  j["compute_dtype"] = compute_dtype(*s.model);
  j["device"] = f.device;
  j["device_name"] = device_name(f.device);
  j["threads"] = ThreadPool::global().size();
  j["seed"] = f.seed;
  j["timestamp"] = utc_timestamp();
  j["load_s"] = s.load_s;
  j["max_batch_size"] = ec.max_batch_size;
  j["max_num_tokens"] = ec.max_num_tokens;
  j["block_size"] = ec.block_size;
  j["prefix_caching"] = ec.enable_prefix_caching;
  j["schedule"] = ec.prefill_first ? "prefill-first" : "decode-first";
  j["device_sampling"] = ec.device_sampling && s.model->samples_on_device();
  j["cuda_graphs"] = f.device != "cpu" && !f.no_cuda_graphs;
  j["kv_cache_dtype"] = kv_cache_dtype_name(f, s);
  const ModelStats ms = s.model->stats();
  j["graph_captures"] = ms.graph_captures;
  j["graph_replays"] = ms.graph_replays;
  j["eager_steps"] = ms.eager_steps;
  j["kv_cache_bytes"] = st.kv_cache_bytes;
  j["kv_blocks_total"] = st.kv_blocks_total;
  const MemoryPlan& p = ex.memory_plan();
  j["memory_plan"] = {{"weights_bytes", p.weights},       {"workspace_bytes", p.workspace},
                      {"kv_cache_bytes", p.kv_cache},     {"kv_blocks", p.num_blocks},
                      {"kv_tokens", p.tokens()},          {"device_total_bytes", p.device_total},
                      {"in_use_before_bytes", p.in_use_before},
                      {"planned_total_bytes", p.in_use_before + p.workspace + p.kv_cache},
                      {"max_seq_len", p.max_seq_len},     {"kv_cache_fraction", ec.kv_cache_fraction}};
  j["peak_running"] = st.peak_running;
  return j;
}

void memory_json(json& j, const RunOutcome& agg, int64_t kv_blocks_total) {
  j["kv_peak_blocks_used"] = agg.kv_peak_blocks;
  j["kv_peak_usage"] = kv_blocks_total > 0 ? static_cast<double>(agg.kv_peak_blocks) / kv_blocks_total : 0.0;
  j["peak_host_rss_bytes"] = peak_host_rss_bytes();
  j["peak_gpu_memory_bytes"] = agg.gpu_peak_bytes ? json(*agg.gpu_peak_bytes) : json(nullptr);
}

void print_header(const char* mode, const BenchFlags& f, const Setup& s) {
  const ModelConfig& c = s.model->config();
  std::printf("kiln bench %s\n", mode);
  std::printf("  %-14s %s (%s, %.1fM parameters, %s%s weights, %s compute, %s KV cache)\n", "model", s.path.c_str(),
              c.architecture.c_str(), s.model->num_parameters() / 1e6, f.random_weights ? "random " : "",
              std::string(dtype_name(c.checkpoint_dtype)).c_str(), compute_dtype(*s.model).c_str(),
              kv_cache_dtype_name(f, s).c_str());
  if (f.device == "cpu")
    std::printf("  %-14s cpu (%s, %d threads)\n", "device", cpu_name().c_str(), ThreadPool::global().size());
  else
    std::printf("  %-14s %s (%s)\n", "device", f.device.c_str(), device_name(f.device).c_str());
}

void print_engine(const Executor& ex, const RunOutcome& agg) {
  const ExecutorStats st = ex.stats();
  const ExecutorConfig& ec = ex.config();
  std::printf(
      "  %-14s max batch %d, max tokens/step %lld, %s, KV %s in %lld blocks of %d (peak use %.1f%%), "
      "%lld steps, %lld preemptions, peak %lld running\n",
      "engine", ec.max_batch_size, static_cast<long long>(ec.max_num_tokens),
      ec.prefill_first ? "prefill-first" : "decode-first", mib(st.kv_cache_bytes).c_str(),
      static_cast<long long>(st.kv_blocks_total), ec.block_size,
      st.kv_blocks_total > 0 ? 100.0 * agg.kv_peak_blocks / st.kv_blocks_total : 0.0, static_cast<long long>(agg.steps),
      static_cast<long long>(agg.preemptions), static_cast<long long>(st.peak_running));
}

void print_memory(const Setup& s, const RunOutcome& agg) {
  std::printf("  %-14s peak host RSS %s, weights %s", "memory", mib(peak_host_rss_bytes()).c_str(),
              mib(static_cast<int64_t>(s.model->weight_bytes())).c_str());
  if (agg.gpu_peak_bytes) std::printf(", peak GPU memory in use %s", mib(*agg.gpu_peak_bytes).c_str());
  std::printf("\n");
}

// ---------------------------------------------------------------- throughput

int run_throughput(const BenchFlags& f) {
  check_common(f);
  KILN_CHECK(f.isl >= 1 && f.osl >= 1, "--isl and --osl must be >= 1");
  KILN_CHECK(f.request_rate >= 0 && !std::isnan(f.request_rate), "--request-rate must be >= 0 (0: all at once)");
  const LengthDist isl = parse_length_dist(f.isl_dist.empty() ? std::to_string(f.isl) : f.isl_dist, "--isl-dist");
  const LengthDist osl = parse_length_dist(f.osl_dist.empty() ? std::to_string(f.osl) : f.osl_dist, "--osl-dist");
  const int32_t max_batch = f.max_batch_size > 0 ? f.max_batch_size : 64;
  const int64_t warmup = f.warmup >= 0 ? f.warmup : 2;

  const Setup s = load(f);
  const ModelConfig& cfg = s.model->config();
  std::vector<BenchRequest> reqs;
  if (!f.dataset.empty()) {
    reqs = read_dataset(f.dataset, s.tokenizer.get(), std::max<int64_t>(f.num_requests, 0));
    KILN_CHECK(f.num_requests <= 0 || static_cast<int64_t>(reqs.size()) == f.num_requests,
               "--num-requests {}: --dataset {} holds only {} requests", f.num_requests, f.dataset, reqs.size());
  } else {
    reqs = synthetic_workload(f.num_requests > 0 ? f.num_requests : 32, isl, osl, cfg.vocab_size, f.seed);
  }
  check_requests(reqs, cfg, f.dataset.empty() ? "workload" : "--dataset " + f.dataset);
  // Warmup: the lengths of the first requests, other ids (so the prefix cache holds nothing of the run).
  std::vector<BenchRequest> warm(static_cast<size_t>(warmup));
  {
    std::mt19937_64 rng(f.seed ^ 0x9e3779b97f4a7c15ull);
    std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(cfg.vocab_size - 1));
    for (size_t i = 0; i < warm.size(); ++i) {
      warm[i] = reqs[i % reqs.size()];
      for (int32_t& t : warm[i].prompt) t = id(rng);
    }
  }
  const std::vector<double> arrivals = poisson_arrivals(static_cast<int64_t>(reqs.size()), f.request_rate, f.seed);

  Executor ex(s.model, s.tokenizer, engine_config(f, max_batch));
  if (!f.quiet) std::fprintf(stderr, "kiln: %s\n", ex.memory_plan().describe(longest_request(reqs)).c_str());
  Progress progress(!f.quiet);
  if (!warm.empty()) {
    progress.phase("kiln bench: warmup", static_cast<int64_t>(warm.size()));
    run_requests(ex, warm, std::vector<double>(warm.size(), 0.0), f.device, progress);
  }
  progress.phase("kiln bench", static_cast<int64_t>(reqs.size()));
  const RunOutcome run = run_requests(ex, reqs, arrivals, f.device, progress);
  const Metrics m = measure({&run}, secs(run.end - run.start));

  auto mean_len = [&](bool input) {
    double sum = 0;
    for (const BenchRequest& r : reqs) sum += input ? static_cast<double>(r.prompt.size()) : r.output_len;
    return sum / static_cast<double>(reqs.size());
  };
  auto len_json = [](double v) { return v == std::floor(v) ? json(static_cast<int64_t>(v)) : json(v); };
  const bool fixed_in = f.dataset.empty() && isl.kind == LengthDist::Kind::Fixed;
  const bool fixed_out = f.dataset.empty() && osl.kind == LengthDist::Kind::Fixed;
  if (f.json) {
    json j = common_json("throughput", f, s, ex);
    j["isl"] = len_json(mean_len(true));
    j["osl"] = len_json(mean_len(false));
    j["isl_dist"] = f.dataset.empty() ? json(isl.spec) : json("dataset");
    j["osl_dist"] = f.dataset.empty() ? json(osl.spec) : json("dataset");
    j["dataset"] = f.dataset.empty() ? json(nullptr) : json(f.dataset);
    j["request_rate"] = f.request_rate > 0 ? json(f.request_rate) : json(nullptr);
    j["warmup"] = warmup;
    metrics_json(j, m);
    j["steps"] = run.steps;
    j["preemptions"] = run.preemptions;
    memory_json(j, run, ex.stats().kv_blocks_total);
    std::puts(j.dump().c_str());
    return 0;
  }
  print_header("throughput", f, s);
  std::string lengths = fmt::format("ISL {}{}, OSL {}{}", fixed_in ? "" : "mean ", mean_len(true),
                                    fixed_out ? "" : "mean ", mean_len(false));
  if (!f.dataset.empty())
    lengths += ", from " + f.dataset;
  else if (!fixed_in || !fixed_out)
    lengths += fmt::format(" ({} / {})", isl.spec, osl.spec);
  std::printf("  %-14s %lld (%s), %s\n", "requests", static_cast<long long>(m.num_requests), lengths.c_str(),
              f.request_rate > 0 ? fmt::format("arriving at {} req/s (Poisson)", f.request_rate).c_str()
                                 : "all queued at once");
  print_engine(ex, run);
  std::printf("  %-14s %.3f s\n", "duration", m.seconds);
  std::printf("  %-14s %.3f req/s, %.1f output tok/s, %.1f total tok/s (%lld in, %lld out)\n", "throughput",
              m.requests_per_s(), m.output_tokens_per_s(), m.total_tokens_per_s(),
              static_cast<long long>(m.input_tokens), static_cast<long long>(m.output_tokens));
  print_summary_rows(m);
  print_memory(s, run);
  return 0;
}

// ---------------------------------------------------------------- latency

std::vector<int32_t> parse_batch_sizes(const std::string& text) {
  std::vector<int32_t> out;
  for (int32_t v : parse_id_list(text)) {
    KILN_CHECK(v >= 1, "--batch-size: batch sizes must be >= 1, got {}", v);
    out.push_back(v);
  }
  return out;
}

int run_latency(const BenchFlags& f) {
  check_common(f);
  KILN_CHECK(f.isl >= 1 && f.osl >= 1, "--isl and --osl must be >= 1");
  KILN_CHECK(f.iterations >= 1, "--iterations must be >= 1, got {}", f.iterations);
  std::vector<int32_t> batches;
  try {
    batches = parse_batch_sizes(f.batch_sizes);
  } catch (const Error&) {
    KILN_THROW("--batch-size: expected batch sizes >= 1 separated by commas, got '{}'", f.batch_sizes);
  }
  const int32_t biggest = *std::max_element(batches.begin(), batches.end());
  KILN_CHECK(f.max_batch_size <= 0 || f.max_batch_size >= biggest,
             "--max-batch-size {} is below --batch-size {}: the batch would not run as one", f.max_batch_size, biggest);
  const int32_t max_batch = f.max_batch_size > 0 ? f.max_batch_size : biggest;
  const int64_t warmup = f.warmup >= 0 ? f.warmup : 1;
  const LengthDist isl = parse_length_dist(std::to_string(f.isl), "--isl");
  const LengthDist osl = parse_length_dist(std::to_string(f.osl), "--osl");

  const Setup s = load(f);
  const ModelConfig& cfg = s.model->config();
  // The shape of the biggest batch sizes the engine; every iteration draws fresh prompts.
  const std::vector<BenchRequest> shape = synthetic_workload(biggest, isl, osl, cfg.vocab_size, f.seed);
  check_requests(shape, cfg, "workload");
  Executor ex(s.model, s.tokenizer, engine_config(f, max_batch));
  if (!f.quiet) std::fprintf(stderr, "kiln: %s\n", ex.memory_plan().describe(longest_request(shape)).c_str());
  Progress progress(!f.quiet);

  struct BatchResult {
    int32_t batch = 0;
    int64_t iterations = 0;
    std::vector<RunOutcome> runs;
    Metrics m;
    Summary batch_latency;  // ms, one sample per iteration
  };
  std::vector<BatchResult> results;
  RunOutcome agg;  // peaks over everything
  uint64_t draw = 0;
  for (int32_t b : batches) {
    BatchResult br;
    br.batch = b;
    br.iterations = f.num_requests > 0 ? (f.num_requests + b - 1) / b : f.iterations;
    const std::vector<double> at_once(static_cast<size_t>(b), 0.0);
    for (int64_t it = 0; it < warmup + br.iterations; ++it) {
      const bool warm = it < warmup;
      const auto reqs = synthetic_workload(b, isl, osl, cfg.vocab_size, f.seed + 1000003 * ++draw);
      progress.phase(warm ? fmt::format("kiln bench: batch {} warmup {}/{}", b, it + 1, warmup)
                          : fmt::format("kiln bench: batch {} iteration {}/{}", b, it - warmup + 1, br.iterations),
                     b);
      RunOutcome run = run_requests(ex, reqs, at_once, f.device, progress);
      agg.kv_peak_blocks = std::max(agg.kv_peak_blocks, run.kv_peak_blocks);
      if (run.gpu_peak_bytes) agg.gpu_peak_bytes = std::max(agg.gpu_peak_bytes.value_or(0), *run.gpu_peak_bytes);
      if (!warm) br.runs.push_back(std::move(run));
    }
    std::vector<const RunOutcome*> ptrs;
    std::vector<double> lat;
    double total = 0;
    for (const RunOutcome& r : br.runs) {
      ptrs.push_back(&r);
      lat.push_back(ms(r.end - r.start));
      total += secs(r.end - r.start);
      agg.steps += r.steps;
      agg.preemptions += r.preemptions;
    }
    br.m = measure(ptrs, total);
    br.batch_latency = summarize(lat);
    results.push_back(std::move(br));
  }

  auto run_json = [](const BatchResult& br) {
    json r;
    r["batch_size"] = br.batch;
    r["iterations"] = br.iterations;
    metrics_json(r, br.m);
    r["batch_latency_ms"] = summary_json(br.batch_latency);
    r["decode_tokens_per_s_per_request"] =
        br.m.tpot.count > 0 && br.m.tpot.mean > 0 ? json(1000.0 / br.m.tpot.mean) : json(nullptr);
    return r;
  };
  if (f.json) {
    json j = common_json("latency", f, s, ex);
    j["isl"] = f.isl;
    j["osl"] = f.osl;
    j["warmup"] = warmup;
    json runs = json::array();
    for (const BatchResult& br : results) runs.push_back(run_json(br));
    if (results.size() == 1)
      for (const auto& [k, v] : runs[0].items()) j[k] = v;
    j["runs"] = std::move(runs);
    j["steps"] = agg.steps;
    j["preemptions"] = agg.preemptions;
    memory_json(j, agg, ex.stats().kv_blocks_total);
    std::puts(j.dump().c_str());
    return 0;
  }
  print_header("latency", f, s);
  std::printf("  %-14s ISL %lld, OSL %lld, %lld warmup iteration(s) per batch size\n", "requests",
              static_cast<long long>(f.isl), static_cast<long long>(f.osl), static_cast<long long>(warmup));
  print_engine(ex, agg);
  for (const BatchResult& br : results) {
    const Metrics& m = br.m;
    std::printf("batch size %d, %lld iteration(s)\n", br.batch, static_cast<long long>(br.iterations));
    std::printf("  %-14s mean %.2f ms, p50 %.2f ms, max %.2f ms\n", "batch latency", br.batch_latency.mean,
                br.batch_latency.p50, br.batch_latency.max);
    std::printf("  %-14s %.3f req/s, %.1f output tok/s, %.1f total tok/s", "throughput", m.requests_per_s(),
                m.output_tokens_per_s(), m.total_tokens_per_s());
    if (m.tpot.count > 0 && m.tpot.mean > 0) std::printf(", %.1f decode tok/s per request", 1000.0 / m.tpot.mean);
    std::printf("\n");
    print_summary_rows(m);
  }
  print_memory(s, agg);
  return 0;
}

// ---------------------------------------------------------------- flags

void add_common_flags(CLI::App& app, BenchFlags& f) {
  app.add_option("--model,-m", f.model,
                 "HF checkpoint folder, .gguf or llama2.c .bin; with --random-weights an HF config.json (or a folder "
                 "holding one)");
  app.add_flag("--random-weights", f.random_weights,
               "Build the model from --model's config.json with seeded random weights instead of reading a checkpoint");
  app.add_option("--tokenizer", f.tokenizer, "Tokenizer for text prompts of --dataset (default: the model's)");
  app.add_option("--dtype", f.dtype, "Weights: auto, f32, f16 or bf16 (random weights are rounded to it)")
      ->capture_default_str();
  app.add_option("--device", f.device, "cpu, cuda or cuda:N (GPU N)")->capture_default_str();
  add_threads_option(app, f.threads);
  app.add_option("--seed", f.seed, "Seed of the prompts, lengths, arrivals and random weights")->capture_default_str();
  app.add_option("--isl", f.isl, "Input (prompt) length in tokens")->capture_default_str();
  app.add_option("--osl", f.osl, "Output length in tokens (exact: EOS is ignored)")->capture_default_str();
  app.add_option("--max-batch-size", f.max_batch_size, "Engine: running requests at most");
  app.add_option("--max-num-tokens", f.max_num_tokens, "Engine: tokens computed per step at most")
      ->capture_default_str();
  app.add_option("--kv-cache-bytes", f.kv_cache_bytes,
                 "Engine: the KV cache at most, in bytes (0: the memory plan's; on the CPU 4 GiB)")
      ->capture_default_str();
  app.add_option("--kv-cache-fraction", f.kv_cache_fraction,
                 "Engine (cuda): of the GPU's memory, the part kiln takes in all (weights, workspace, KV cache)")
      ->capture_default_str();
  app.add_option("--step-log", f.step_log,
                 "Write one line per engine step (host phases, GPU time, shape) to this file; "
                 "bench/step_log_summary.py sums it");
  app.add_flag("--profile", f.profile,
               "Engine (cuda): time every op of every step with CUDA events (graphs off); per-op totals on stderr");
  app.add_flag("--no-gemm-tuning", f.no_gemm_tuning,
               "Engine (cuda): cuBLASLt's heuristic GEMM algorithms instead of timing them at start");
  app.add_option("--block-size", f.block_size, "Engine: tokens per KV block")->capture_default_str();
  app.add_flag("--no-prefix-caching", f.no_prefix_caching, "Engine: turn prefix caching off");
  app.add_option("--schedule", f.schedule,
                 "Engine: what a step's token budget serves first, running decodes (decode-first) or prompts "
                 "(prefill-first)")
      ->check(CLI::IsMember({"decode-first", "prefill-first"}))
      ->capture_default_str();
  add_kv_cache_dtype_option(app, f.kv_cache_dtype);
  app.add_flag("--no-cuda-graphs", f.no_cuda_graphs,
               "Engine (cuda): run decode steps kernel by kernel, no CUDA graphs");
  app.add_flag("--no-device-sampling", f.no_device_sampling,
               "Engine (cuda): copy logits to the host and sample there (the CPU Sampler)");
  app.add_flag("--json", f.json, "Print one JSON object on stdout instead of the table");
  app.add_flag("--quiet,-q", f.quiet, "No loading or progress lines on stderr");
}

}  // namespace

std::function<int()> add_bench(CLI::App& app) {
  auto f = std::make_shared<BenchFlags>();
  app.require_subcommand(1);
  CLI::App* tp = app.add_subcommand("throughput", "Many requests, all queued at once or at a request rate");
  add_common_flags(*tp, *f);
  tp->add_option("--num-requests,-n", f->num_requests, "Requests to run (default 32; a dataset: all of it)");
  auto* isl_dist = tp->add_option("--isl-dist", f->isl_dist, "Input lengths: N, uniform:LO:HI or normal:MEAN:STD");
  auto* osl_dist = tp->add_option("--osl-dist", f->osl_dist, "Output lengths: N, uniform:LO:HI or normal:MEAN:STD");
  auto* dataset = tp->add_option("--dataset", f->dataset,
                                 "JSONL requests: {\"prompt\": text | \"prompt_ids\": [ids], \"output_len\": N}");
  tp->add_option("--request-rate", f->request_rate, "Requests per second, Poisson arrivals (0: all at once)")
      ->capture_default_str();
  tp->add_option("--warmup", f->warmup, "Requests run before measuring (default 2)");
  isl_dist->excludes(tp->get_option("--isl"));
  osl_dist->excludes(tp->get_option("--osl"));
  dataset->excludes(isl_dist)->excludes(osl_dist)->excludes(tp->get_option("--isl"))->excludes(tp->get_option("--osl"));

  CLI::App* lat = app.add_subcommand("latency", "Fixed batches of fixed lengths, one batch at a time");
  add_common_flags(*lat, *f);
  lat->add_option("--batch-size,-b", f->batch_sizes, "Batch sizes, e.g. 1 or 1,8,32")->capture_default_str();
  lat->add_option("--iterations", f->iterations, "Measured batches per batch size")->capture_default_str();
  lat->add_option("--num-requests,-n", f->num_requests,
                  "Measured requests per batch size (sets the iterations to ceil(N / batch size))");
  lat->add_option("--warmup", f->warmup, "Unmeasured batches before each batch size (default 1)");
  return [f, tp, lat] {
    if (tp->parsed()) return run_throughput(*f);
    return run_latency(*f);
  };
}

}  // namespace kiln::cli
