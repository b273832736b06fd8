// A fixed pool of worker threads with a blocking parallel_for, for the CPU backend.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace kiln {

class ThreadPool {
 public:
  // n_threads <= 0 means one per hardware thread.
  explicit ThreadPool(int n_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Splits [0, n) into contiguous chunks of at least `grain` and runs fn(begin, end) on them, the
  // calling thread included; returns when all are done. Not reentrant: fn must not call parallel_for.
  // Callers on different threads (two executors, say) are served one at a time.
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

  // The process-wide pool used by the CPU kernels, made at its first use: the size given to
  // set_global_threads (LoadOptions::cpu_threads, the CLI's --threads), else one thread per hardware thread.
  static ThreadPool& global();
  // Sizes the global pool (0: one per hardware thread) before its first use (the CLI's --threads). Throws
  // kiln::Error for a negative count, or when the pool already runs with another size.
  static void set_global_threads(int n);

 private:
  void worker_loop(int index);

  std::vector<std::thread> workers_;
  std::mutex call_mu_;  // one parallel_for at a time
  std::mutex mu_;
  std::condition_variable start_cv_;
  std::condition_variable done_cv_;
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t job_n_ = 0;
  int64_t job_chunk_ = 0;
  int64_t job_chunks_ = 0;
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
};

}  // namespace kiln
