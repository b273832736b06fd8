// Scheduler: which sequences run in the next step and how many tokens each computes, under one token
// budget (max_num_tokens) and max_batch_size. There are no prefill and decode phases: a sequence's
// computed tokens catch up with its known tokens (prompt + generated), one token when decoding, a chunk
// when prefilling. A step is three small named parts:
//   TokenSelection   running sequences, decodes first (or prompts first: SchedulePolicy), each given
//                    min(tokens left, budget left);
//   CapacityPolicy   when the KV pool is short, which running sequence gives its blocks back;
//   Admission        waiting sequences join while the batch, the budget and free blocks allow.
// Preempted sequences return to the waiting queue with nothing computed and are recomputed later (their
// prefix is usually still cached); nothing is lost and nothing crashes for lack of blocks.
#pragma once

#include <cstdint>
#include <set>
#include <vector>

#include "runtime/kv_cache_manager.h"

namespace kiln {

// What the scheduler knows of a request. Owned by the executor; the scheduler holds pointers.
struct Sequence {
  uint64_t id = 0;
  int32_t priority = 0;      // higher first
  uint64_t arrival = 0;      // acceptance order, unique
  std::vector<int32_t> tokens;  // prompt, then generated
  int64_t prompt_len = 0;
  int64_t num_computed = 0;  // leading tokens whose K/V are in the cache
  KvHandle kv;               // invalid while waiting
  bool running = false;
  bool preempted_now = false;  // marked within one schedule() call
  bool scheduled_now = false;  // likewise
  int64_t num_preemptions = 0;
  int64_t cached_prompt_tokens = -1;  // prompt tokens found in the prefix cache at first admission (-1: not yet)

  int64_t tokens_left() const { return static_cast<int64_t>(tokens.size()) - num_computed; }
};

// Running order and waiting order: higher priority first, then earlier arrival.
struct SequenceOrder {
  bool operator()(const Sequence* a, const Sequence* b) const {
    return a->priority != b->priority ? a->priority > b->priority : a->arrival < b->arrival;
  }
};

struct ScheduledSeq {
  Sequence* seq = nullptr;
  int64_t num_tokens = 0;  // tokens computed this step, from seq->num_computed
};

struct SchedulerOutput {
  std::vector<ScheduledSeq> scheduled;  // in batch order
  std::vector<Sequence*> preempted;     // preempted by this step
  int64_t num_tokens = 0;
  void clear() {
    scheduled.clear();
    preempted.clear();
    num_tokens = 0;
  }
};

// Which tokens a step's budget goes to first.
//   DecodeFirst   every running decode, then prompt chunks (running, then admitted): a long prompt never stalls
//                 the decodes (the default; inter-token latency stays flat while prompts arrive).
//   PrefillFirst  prompt chunks (running, then admitted), then decodes with what is left (one-token rows still
//                 lead the batch): prompts are computed as soon as they arrive and requests then decode together
//                 in large batches, so a burst of requests finishes sooner, but running decodes wait while
//                 prompts fill the budget.
enum class SchedulePolicy { DecodeFirst, PrefillFirst };

struct SchedulerConfig {
  int64_t max_num_tokens = 2048;
  int32_t max_batch_size = 64;
  SchedulePolicy policy = SchedulePolicy::DecodeFirst;
};

// Picks the running sequence that gives its blocks back: the lowest priority, then the latest arrival.
class CapacityPolicy {
 public:
  // `running` is in SequenceOrder; returns null when every sequence is already preempted.
  Sequence* operator()(const std::vector<Sequence*>& running) const;
};

class Scheduler {
 public:
  Scheduler(const SchedulerConfig& config, KvCacheManager& kv);

  // Queues a new sequence (tokens set, nothing computed, no KV handle).
  void add(Sequence* seq);
  // Drops a sequence wherever it is (finished or cancelled) and releases its blocks.
  void remove(Sequence* seq);
  // Plans the next step: tokens per sequence, blocks allocated for them. The output stays valid until the
  // next call.
  const SchedulerOutput& schedule();
  // After the step ran: advances each scheduled sequence and offers its full blocks to the prefix cache.
  void finish_step(const SchedulerOutput& out);

  int64_t num_waiting() const { return static_cast<int64_t>(waiting_.size()); }
  int64_t num_running() const { return static_cast<int64_t>(running_.size()); }
  int64_t num_preemptions() const { return preemptions_; }
  // Prompt tokens looked up in the prefix cache at first admission, and those found there.
  int64_t prefix_query_tokens() const { return prefix_query_tokens_; }
  int64_t prefix_hit_tokens() const { return prefix_hit_tokens_; }
  const SchedulerConfig& config() const { return config_; }

 private:
  void select_running(int64_t& budget, bool decodes);
  bool allocate_or_preempt(Sequence* seq, int64_t num_tokens, int64_t& budget);
  void preempt(Sequence* victim, int64_t& budget);
  void admit_waiting(int64_t& budget);

  SchedulerConfig config_;
  KvCacheManager& kv_;
  CapacityPolicy capacity_;
  std::vector<Sequence*> running_;  // in SequenceOrder
  std::set<Sequence*, SequenceOrder> waiting_;
  SchedulerOutput out_;
  int64_t preemptions_ = 0;
  int64_t prefix_query_tokens_ = 0;
  int64_t prefix_hit_tokens_ = 0;
};

}  // namespace kiln
