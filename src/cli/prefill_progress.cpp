// PrefillProgress: a one-line, redrawn-in-place progress of the prompt's computation on a terminal's stderr.
#include "cli/prefill_progress.h"

#include <unistd.h>

#include <cstdio>

namespace kiln::cli {

PrefillProgress::PrefillProgress(bool enabled) : enabled_(enabled && isatty(STDERR_FILENO) != 0) {
  start_ = Clock::now();
}

void PrefillProgress::start() {
  std::lock_guard lk(mu_);
  start_ = Clock::now();
}

void PrefillProgress::update(int64_t done, int64_t total) {
  if (!enabled_) return;
  std::lock_guard lk(mu_);
  if (done >= total) return clear_locked();
  // Short prompts finish without a line; a long one shows where it is from its first second on.
  if (Clock::now() - start_ < std::chrono::seconds(1)) return;
  std::fprintf(stderr, "\r\x1b[Kprefill %lld/%lld tokens", static_cast<long long>(done), static_cast<long long>(total));
  std::fflush(stderr);
  drawn_ = true;
}

void PrefillProgress::clear() {
  if (!enabled_) return;
  std::lock_guard lk(mu_);
  clear_locked();
}

void PrefillProgress::clear_locked() {
  if (!drawn_) return;
  std::fputs("\r\x1b[K", stderr);
  std::fflush(stderr);
  drawn_ = false;
}

}  // namespace kiln::cli
