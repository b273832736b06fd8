// Scheduler: token selection, capacity (preemption) and admission, one step at a time.
#include "runtime/scheduler.h"

#include <algorithm>

#include "kiln/error.h"

namespace kiln {

Sequence* CapacityPolicy::operator()(const std::vector<Sequence*>& running) const {
  for (auto it = running.rbegin(); it != running.rend(); ++it)
    if (!(*it)->preempted_now) return *it;
  return nullptr;
}

Scheduler::Scheduler(const SchedulerConfig& config, KvCacheManager& kv) : config_(config), kv_(kv) {
  KILN_CHECK(config.max_num_tokens > 0, "scheduler: max_num_tokens must be positive, got {}", config.max_num_tokens);
  KILN_CHECK(config.max_batch_size > 0, "scheduler: max_batch_size must be positive, got {}", config.max_batch_size);
  running_.reserve(static_cast<size_t>(config.max_batch_size));
  out_.scheduled.reserve(static_cast<size_t>(config.max_batch_size));
}

void Scheduler::add(Sequence* seq) {
  KILN_ASSERT(!seq->kv.valid() && !seq->running && seq->num_computed == 0 && seq->tokens_left() > 0);
  waiting_.insert(seq);
}

void Scheduler::remove(Sequence* seq) {
  if (seq->running) {
    auto it = std::find(running_.begin(), running_.end(), seq);
    KILN_ASSERT(it != running_.end());
    running_.erase(it);
    seq->running = false;
  } else {
    waiting_.erase(seq);
  }
  if (seq->kv.valid()) kv_.close(seq->kv);
}

const SchedulerOutput& Scheduler::schedule() {
  out_.clear();
  int64_t budget = config_.max_num_tokens;
  const bool prefill_first = config_.policy == SchedulePolicy::PrefillFirst;
  select_running(budget, !prefill_first);
  if (prefill_first) {
    // Prompts first: running chunks, then admission (not after a preemption, as below), then the decodes.
    if (out_.preempted.empty()) admit_waiting(budget);
    select_running(budget, true);
  } else {
    select_running(budget, false);
  }
  if (!out_.preempted.empty()) {
    std::erase_if(running_, [](Sequence* s) { return s->preempted_now; });
    for (Sequence* s : out_.preempted) s->preempted_now = false;
  } else if (!prefill_first) {
    // No admission in a step that had to preempt: the pool is full, and the preempted would come right back.
    admit_waiting(budget);
  }
  for (const ScheduledSeq& s : out_.scheduled) s.seq->scheduled_now = false;
  // One-token rows lead the batch whatever was chosen first: the CUDA model runs the leading one-row sequences
  // through split-K decode attention and the rest through prefill attention.
  if (prefill_first)
    std::stable_partition(out_.scheduled.begin(), out_.scheduled.end(),
                          [](const ScheduledSeq& s) { return s.num_tokens == 1; });
  out_.num_tokens = config_.max_num_tokens - budget;
  return out_;
}

// The running decodes (decodes) or prompt chunks (!decodes) that the budget allows, in running order. A
// sequence scheduled earlier in the step (just admitted) is skipped.
void Scheduler::select_running(int64_t& budget, bool decodes) {
  for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
    Sequence* seq = running_[i];
    const int64_t left = seq->tokens_left();
    if (seq->preempted_now || left <= 0 || (left == 1) != decodes) continue;
    if (seq->scheduled_now) continue;
    const int64_t n = std::min(left, budget);
    if (!allocate_or_preempt(seq, n, budget)) continue;
    out_.scheduled.push_back({seq, n});
    seq->scheduled_now = true;
    budget -= n;
  }
}

bool Scheduler::allocate_or_preempt(Sequence* seq, int64_t num_tokens, int64_t& budget) {
  while (!kv_.grow(seq->kv, seq->num_computed + num_tokens)) {
    Sequence* victim = capacity_(running_);
    KILN_ASSERT(victim != nullptr);
    preempt(victim, budget);
    if (victim == seq) return false;
  }
  return true;
}

void Scheduler::preempt(Sequence* victim, int64_t& budget) {
  auto it = std::find_if(out_.scheduled.begin(), out_.scheduled.end(),
                         [&](const ScheduledSeq& s) { return s.seq == victim; });
  if (it != out_.scheduled.end()) {
    budget += it->num_tokens;
    out_.scheduled.erase(it);
  }
  kv_.close(victim->kv);
  victim->num_computed = 0;
  victim->running = false;
  victim->preempted_now = true;
  victim->scheduled_now = false;
  ++victim->num_preemptions;
  ++preemptions_;
  waiting_.insert(victim);
  out_.preempted.push_back(victim);
}

// Waiting sequences in priority, then arrival, order; the first that does not fit stops admission, so a
// large request is not overtaken forever by small ones.
void Scheduler::admit_waiting(int64_t& budget) {
  while (!waiting_.empty() && static_cast<int64_t>(running_.size()) < config_.max_batch_size && budget > 0) {
    Sequence* seq = *waiting_.begin();
    seq->kv = kv_.open();
    const int64_t hit = kv_.attach_cached_prefix(seq->kv, seq->tokens);
    seq->num_computed = hit;
    const int64_t n = std::min(seq->tokens_left(), budget);
    if (!kv_.grow(seq->kv, seq->num_computed + n)) {
      kv_.close(seq->kv);
      seq->num_computed = 0;
      return;
    }
    if (seq->cached_prompt_tokens < 0) {
      seq->cached_prompt_tokens = std::min(hit, seq->prompt_len);
      prefix_query_tokens_ += seq->prompt_len;
      prefix_hit_tokens_ += seq->cached_prompt_tokens;
    }
    waiting_.erase(waiting_.begin());
    seq->running = true;
    running_.insert(std::upper_bound(running_.begin(), running_.end(), seq, SequenceOrder{}), seq);
    out_.scheduled.push_back({seq, n});
    seq->scheduled_now = true;
    budget -= n;
  }
}

void Scheduler::finish_step(const SchedulerOutput& out) {
  for (const ScheduledSeq& s : out.scheduled) {
    s.seq->num_computed += s.num_tokens;
    kv_.commit(s.seq->kv, s.seq->tokens, s.seq->num_computed);
  }
}

}  // namespace kiln
