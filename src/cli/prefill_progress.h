// PrefillProgress: "prefill 1536/4021 tokens" on stderr while a long prompt is computed (generate, chat).
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>

namespace kiln::cli {

// Drawn in place on a terminal once the prompt has taken more than a second, erased when it is done; silent
// when stderr is not a terminal or when disabled (--quiet). update and clear may come from any thread.
class PrefillProgress {
 public:
  using Clock = std::chrono::steady_clock;
  explicit PrefillProgress(bool enabled);

  // The prompt is submitted: the second starts now.
  void start();
  // `done` of `total` prompt tokens are computed; at total the line is erased.
  void update(int64_t done, int64_t total);
  // Erases the line if one is drawn (before the reply or an error is printed).
  void clear();

 private:
  void clear_locked();

  std::mutex mu_;
  bool enabled_;
  bool drawn_ = false;
  Clock::time_point start_;
};

}  // namespace kiln::cli
