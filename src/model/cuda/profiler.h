// Timing of the CUDA backend's steps: per-op CUDA events summed per step kind (LoadOptions::profile), and the GPU
// time of each sampled step (LoadOptions::time_steps, for the executor's step log).
#pragma once

#ifdef KILN_HAVE_CUDA

#include <cuda_runtime.h>

#include <map>
#include <string>
#include <vector>

namespace kiln::cudadev {

// CUDA events between the ops of every step (graphs off), the time of each op summed per step kind (decode,
// prefill, mixed) and printed on stderr when destroyed. The events cost a few microseconds per op; the figures are
// for finding where a step's time goes, not for speed.
class OpProfile {
 public:
  explicit OpProfile(bool on) : on_(on) {}
  ~OpProfile();
  OpProfile(const OpProfile&) = delete;
  OpProfile& operator=(const OpProfile&) = delete;
  bool on() const { return on_; }
  // The op `name` starts here (it ends where the next one starts).
  void mark(const char* name, cudaStream_t s);
  // Closes the step (enqueued on s, waited for here) and adds its ops to the totals of `kind`.
  void end_step(const char* kind, int64_t tokens, cudaStream_t s);

 private:
  struct Kind {
    int64_t steps = 0, tokens = 0;
    double ms = 0;
    std::map<std::string, double> ops;
  };
  void print() const;
  bool on_;
  std::vector<cudaEvent_t> events_;
  std::vector<const char*> names_;
  size_t used_ = 0;
  std::map<std::string, Kind> kinds_;
};

// Two events around a step's device work.
class StepTimer {
 public:
  explicit StepTimer(bool on);
  ~StepTimer();
  StepTimer(const StepTimer&) = delete;
  StepTimer& operator=(const StepTimer&) = delete;
  bool on() const { return on_; }
  void begin(cudaStream_t s);
  void end(cudaStream_t s);
  // The time between begin and end, once the stream has passed end (ms).
  double elapsed_ms() const;

 private:
  bool on_ = false;
  cudaEvent_t begin_ = nullptr, end_ = nullptr;
};

}  // namespace kiln::cudadev

#endif  // KILN_HAVE_CUDA
