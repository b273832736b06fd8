// ThreadPool: workers wait for a generation bump, take their chunk, and report completion.
#include "core/thread_pool.h"

#include <algorithm>
#include <cstdlib>
#include <string>

#include "kiln/error.h"

namespace kiln {

ThreadPool::ThreadPool(int n_threads) {
  if (n_threads <= 0) n_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 1; i < n_threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  start_cv_.notify_all();
  for (auto& w : workers_) w.join();
}

void ThreadPool::worker_loop(int index) {
  uint64_t seen = 0;
  for (;;) {
    const std::function<void(int64_t, int64_t)>* job;
    int64_t begin, end;
    {
      std::unique_lock lock(mu_);
      start_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      job = job_;
      begin = std::min(job_n_, index * job_chunk_);
      end = std::min(job_n_, begin + job_chunk_);
    }
    if (index < job_chunks_ && begin < end) (*job)(begin, end);
    {
      std::lock_guard lock(mu_);
      if (--pending_ == 0) done_cv_.notify_one();
    }
  }
}

void ThreadPool::parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int64_t max_chunks = std::min<int64_t>(size(), (n + grain - 1) / grain);
  if (max_chunks <= 1 || workers_.empty()) {
    fn(0, n);
    return;
  }
  const int64_t chunk = (n + max_chunks - 1) / max_chunks;
  std::lock_guard call(call_mu_);
  {
    std::lock_guard lock(mu_);
    job_ = &fn;
    job_n_ = n;
    job_chunk_ = chunk;
    job_chunks_ = max_chunks;
    pending_ = static_cast<int>(workers_.size());
    ++generation_;
  }
  start_cv_.notify_all();
  fn(0, std::min(n, chunk));
  std::unique_lock lock(mu_);
  done_cv_.wait(lock, [&] { return pending_ == 0; });
  job_ = nullptr;
}

namespace {

std::mutex global_mu;
int global_requested = -1;  // set_global_threads' count; -1: none given
bool global_made = false;

int hardware_threads() {
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

}  // namespace

ThreadPool& ThreadPool::global() {
  static ThreadPool pool([] {
    std::lock_guard lock(global_mu);
    global_made = true;
    return global_requested >= 0 ? global_requested : 0;
  }());
  return pool;
}

void ThreadPool::set_global_threads(int n) {
  KILN_CHECK(n >= 0, "thread count must be >= 0 (0: one per hardware thread), got {}", n);
  {
    std::lock_guard lock(global_mu);
    if (!global_made) {
      global_requested = n;
      return;
    }
  }
  const int want = n == 0 ? hardware_threads() : n;
  KILN_CHECK(global().size() == want, "the CPU thread pool already runs {} threads; it cannot become {}",
             global().size(), want);
}

}  // namespace kiln
