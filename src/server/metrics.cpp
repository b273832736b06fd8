// Prometheus text exposition (format 0.0.4) of the server's counters and histograms.
#include "server/metrics.h"

#include <fmt/format.h>

#include <cmath>

namespace kiln::server {

namespace {

std::string num(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", v);
}

void header(std::string& out, const char* name, const char* type, const char* help) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

const char* route_of(const std::string& path) {
  static const char* kRoutes[] = {"/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/metrics", "/"};
  for (const char* r : kRoutes)
    if (path == r) return r;
  if (path.rfind("/v1/models/", 0) == 0) return "/v1/models";
  return "other";
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double v) {
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += v;
  ++count_;
}

void Histogram::render(std::string& out, const std::string& name) const {
  uint64_t cum = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cum += counts_[i];
    out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, num(bounds_[i]), cum);
  }
  cum += counts_.back();
  out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n{}_sum {}\n{}_count {}\n", name, cum, name, num(sum_), name, count_);
}

Metrics::Metrics()
    : ttft_({0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80}),
      tpot_({0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05,
             0.075, 0.1,    0.15,  0.2,  0.3,   0.4,  0.5,   0.75, 1,    2.5}),
      e2e_({0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 60, 120, 300, 600}),
      prompt_len_({1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000}),
      gen_len_({1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000}) {}

void Metrics::count_http(const std::string& path, int status) {
  std::lock_guard<std::mutex> lock(mu_);
  ++http_[{route_of(path), status}];
}

void Metrics::record(const RequestRecord& r) {
  std::lock_guard<std::mutex> lock(mu_);
  ++requests_;
  prompt_tokens_ += r.prompt_tokens;
  generation_tokens_ += r.generated_tokens;
  cached_prompt_tokens_ += r.cached_prompt_tokens;
  if (r.ttft_seconds) ttft_.observe(*r.ttft_seconds);
  if (r.tpot_seconds) tpot_.observe(*r.tpot_seconds);
  e2e_.observe(r.e2e_seconds);
  prompt_len_.observe(static_cast<double>(r.prompt_tokens));
  gen_len_.observe(static_cast<double>(r.generated_tokens));
  for (FinishReason f : r.finish_reasons) {
    const char* name = f == FinishReason::Length      ? "length"
                       : f == FinishReason::Stop      ? "stop"
                       : f == FinishReason::Cancelled ? "cancelled"
                       : f == FinishReason::Error     ? "error"
                                                      : "none";
    ++finish_[name];
  }
}

std::string Metrics::render(const std::optional<ExecutorStats>& stats) const {
  std::string out;
  std::lock_guard<std::mutex> lock(mu_);
  header(out, "kiln_http_requests_total", "counter", "HTTP responses by route and status code.");
  for (const auto& [key, n] : http_)
    out += fmt::format("kiln_http_requests_total{{route=\"{}\",status=\"{}\"}} {}\n", key.first, key.second, n);
  header(out, "kiln_requests_total", "counter", "Generation requests that ran to the end (any finish reason).");
  out += fmt::format("kiln_requests_total {}\n", requests_);
  header(out, "kiln_request_finish_total", "counter", "Finished completions (choices) by finish reason.");
  for (const char* reason : {"stop", "length", "cancelled", "error"}) {
    auto it = finish_.find(reason);
    out += fmt::format("kiln_request_finish_total{{reason=\"{}\"}} {}\n", reason, it == finish_.end() ? 0 : it->second);
  }
  header(out, "kiln_prompt_tokens_total", "counter", "Prompt tokens of finished requests.");
  out += fmt::format("kiln_prompt_tokens_total {}\n", prompt_tokens_);
  header(out, "kiln_prompt_tokens_cached_total", "counter", "Prompt tokens served from the prefix cache.");
  out += fmt::format("kiln_prompt_tokens_cached_total {}\n", cached_prompt_tokens_);
  header(out, "kiln_generation_tokens_total", "counter", "Generated tokens of finished requests.");
  out += fmt::format("kiln_generation_tokens_total {}\n", generation_tokens_);
  header(out, "kiln_time_to_first_token_seconds", "histogram", "From request arrival to its first generated token.");
  ttft_.render(out, "kiln_time_to_first_token_seconds");
  header(out, "kiln_time_per_output_token_seconds", "histogram",
         "Mean time per generated token after the first, per request.");
  tpot_.render(out, "kiln_time_per_output_token_seconds");
  header(out, "kiln_e2e_request_latency_seconds", "histogram", "From request arrival to its last token.");
  e2e_.render(out, "kiln_e2e_request_latency_seconds");
  header(out, "kiln_request_prompt_tokens", "histogram", "Prompt length per request.");
  prompt_len_.render(out, "kiln_request_prompt_tokens");
  header(out, "kiln_request_generation_tokens", "histogram", "Generated tokens per request.");
  gen_len_.render(out, "kiln_request_generation_tokens");
  if (stats) {
    const ExecutorStats& s = *stats;
    header(out, "kiln_requests_running", "gauge", "Requests in the running batch.");
    out += fmt::format("kiln_requests_running {}\n", s.running);
    header(out, "kiln_requests_waiting", "gauge", "Requests queued for the engine.");
    out += fmt::format("kiln_requests_waiting {}\n", s.queued);
    header(out, "kiln_kv_cache_blocks_total", "gauge", "KV cache blocks in the pool.");
    out += fmt::format("kiln_kv_cache_blocks_total {}\n", s.kv_blocks_total);
    header(out, "kiln_kv_cache_blocks_used", "gauge", "KV cache blocks held by requests.");
    out += fmt::format("kiln_kv_cache_blocks_used {}\n", s.kv_blocks_used);
    header(out, "kiln_kv_cache_blocks_free", "gauge", "KV cache blocks free (cached prefixes nobody holds included).");
    out += fmt::format("kiln_kv_cache_blocks_free {}\n", s.kv_blocks_free);
    header(out, "kiln_kv_cache_usage_ratio", "gauge", "Used KV blocks over all blocks.");
    out += fmt::format("kiln_kv_cache_usage_ratio {}\n",
                       num(s.kv_blocks_total > 0 ? static_cast<double>(s.kv_blocks_used) / s.kv_blocks_total : 0.0));
    header(out, "kiln_prefix_cache_hit_rate", "gauge",
           "Prompt tokens found in the prefix cache over tokens looked up.");
    out += fmt::format("kiln_prefix_cache_hit_rate {}\n", num(s.prefix_hit_rate));
    header(out, "kiln_engine_steps_total", "counter", "Engine steps run.");
    out += fmt::format("kiln_engine_steps_total {}\n", s.steps);
    header(out, "kiln_engine_preemptions_total", "counter", "Requests preempted for lack of KV blocks.");
    out += fmt::format("kiln_engine_preemptions_total {}\n", s.preemptions);
    header(out, "kiln_engine_requests_finished_total", "counter", "Requests the engine finished.");
    out += fmt::format("kiln_engine_requests_finished_total {}\n", s.requests_finished);
  }
  return out;
}

}  // namespace kiln::server
