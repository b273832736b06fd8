// Prometheus metrics of `kiln serve`: HTTP requests by endpoint and status, tokens, latency
// histograms (time to first token, time per output token, end to end), finish reasons, and the
// engine's gauges (running, queued, KV blocks, prefix hit rate) read from ExecutorStats.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "kiln/executor.h"

namespace kiln::server {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);
  // The Prometheus lines of this histogram (_bucket with cumulative counts, _sum, _count).
  void render(std::string& out, const std::string& name) const;
  uint64_t count() const { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative; one more for +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

// What one finished generation request reports.
struct RequestRecord {
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  int64_t cached_prompt_tokens = 0;
  std::optional<double> ttft_seconds;  // absent when no token was generated
  std::optional<double> tpot_seconds;  // mean time per output token after the first; needs 2+ tokens
  double e2e_seconds = 0;
  std::vector<FinishReason> finish_reasons;  // one per choice
};

class Metrics {
 public:
  Metrics();
  // Every HTTP response, by route ("/v1/completions", ..; anything else is "other") and status.
  void count_http(const std::string& path, int status);
  void record(const RequestRecord& r);
  // The exposition text; engine gauges only when an engine is running.
  std::string render(const std::optional<ExecutorStats>& stats) const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> http_;
  std::map<std::string, uint64_t> finish_;
  uint64_t prompt_tokens_ = 0, generation_tokens_ = 0, cached_prompt_tokens_ = 0, requests_ = 0;
  Histogram ttft_, tpot_, e2e_, prompt_len_, gen_len_;
};

}  // namespace kiln::server
