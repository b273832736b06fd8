// Per-op and per-step timing of the CUDA backend with CUDA events.
#include "model/cuda/profiler.h"

#ifdef KILN_HAVE_CUDA

#include <algorithm>
#include <cstdio>

#include "model/cuda/device_memory.h"

namespace kiln::cudadev {

OpProfile::~OpProfile() {
  if (!on_) return;
  print();
  for (cudaEvent_t ev : events_) cudaEventDestroy(ev);
}

void OpProfile::mark(const char* name, cudaStream_t s) {
  if (!on_) return;
  if (used_ == events_.size()) {
    cudaEvent_t ev = nullptr;
    KILN_MODEL_CUDA(cudaEventCreate(&ev));
    events_.push_back(ev);
  }
  names_.resize(used_ + 1);
  names_[used_] = name;
  KILN_MODEL_CUDA(cudaEventRecord(events_[used_], s));
  ++used_;
}

void OpProfile::end_step(const char* kind, int64_t tokens, cudaStream_t s) {
  if (!on_ || used_ == 0) return;
  mark("", s);
  KILN_MODEL_CUDA(cudaEventSynchronize(events_[used_ - 1]));
  Kind& k = kinds_[kind];
  ++k.steps;
  k.tokens += tokens;
  for (size_t i = 0; i + 1 < used_; ++i) {
    float ms = 0;
    cudaEventElapsedTime(&ms, events_[i], events_[i + 1]);
    k.ops[names_[i]] += ms;
    k.ms += ms;
  }
  used_ = 0;
}

void OpProfile::print() const {
  for (const auto& [kind, k] : kinds_) {
    std::fprintf(stderr, "kiln profile: %s steps: %lld, %lld tokens, %.1f ms on the GPU (%.3f ms per step)\n",
                 kind.c_str(), static_cast<long long>(k.steps), static_cast<long long>(k.tokens), k.ms,
                 k.ms / static_cast<double>(k.steps));
    std::vector<std::pair<double, std::string>> by_time;
    for (const auto& [op, ms] : k.ops) by_time.emplace_back(ms, op);
    std::sort(by_time.rbegin(), by_time.rend());
    for (const auto& [ms, op] : by_time)
      std::fprintf(stderr, "kiln profile:   %-14s %10.1f ms %5.1f%%  %8.3f ms per step\n", op.c_str(), ms,
                   100.0 * ms / k.ms, ms / static_cast<double>(k.steps));
  }
}

StepTimer::StepTimer(bool on) {
  if (!on) return;
  KILN_MODEL_CUDA(cudaEventCreate(&begin_));
  KILN_MODEL_CUDA(cudaEventCreate(&end_));
  on_ = true;
}

StepTimer::~StepTimer() {
  if (begin_) cudaEventDestroy(begin_);
  if (end_) cudaEventDestroy(end_);
}

void StepTimer::begin(cudaStream_t s) {
  if (on_) KILN_MODEL_CUDA(cudaEventRecord(begin_, s));
}

void StepTimer::end(cudaStream_t s) {
  if (on_) KILN_MODEL_CUDA(cudaEventRecord(end_, s));
}

double StepTimer::elapsed_ms() const {
  if (!on_) return -1.0;
  float ms = -1.0f;
  KILN_MODEL_CUDA(cudaEventElapsedTime(&ms, begin_, end_));
  return ms;
}

}  // namespace kiln::cudadev

#endif  // KILN_HAVE_CUDA
