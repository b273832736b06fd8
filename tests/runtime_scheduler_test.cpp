// Scheduler without a model: the token budget, decodes before prefill chunks (or after: PrefillFirst), max_batch_size, admission
// order by priority, preemption of the newest when blocks run out, and that every request completes.
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <random>
#include <set>

#include "runtime/scheduler.h"

namespace kiln {
namespace {

struct Harness {
  Harness(int64_t blocks, int32_t block_size, int64_t max_tokens, int32_t max_batch,
          SchedulePolicy policy = SchedulePolicy::DecodeFirst)
      : kv({blocks, block_size, true}), sched({max_tokens, max_batch, policy}, kv) {}

  Sequence* add(int prompt_len, int max_new, int32_t priority = 0, int32_t first_token = 1) {
    auto s = std::make_unique<Sequence>();
    s->id = s->arrival = next++;
    s->priority = priority;
    for (int i = 0; i < prompt_len; ++i) s->tokens.push_back(first_token + i);
    s->prompt_len = prompt_len;
    max_new_[s.get()] = max_new;
    sched.add(s.get());
    seqs.push_back(std::move(s));
    return seqs.back().get();
  }

  // One step: schedule, "run", append a token to each sequence that reached its end, finish those done.
  const SchedulerOutput& step() {
    const SchedulerOutput& out = sched.schedule();
    std::set<const Sequence*> once;
    for (const ScheduledSeq& s : out.scheduled) EXPECT_TRUE(once.insert(s.seq).second) << "scheduled twice";
    sched.finish_step(out);
    for (const ScheduledSeq& s : out.scheduled) {
      Sequence* q = s.seq;
      if (q->num_computed != static_cast<int64_t>(q->tokens.size())) continue;
      q->tokens.push_back(7);
      if (static_cast<int64_t>(q->tokens.size()) - q->prompt_len >= max_new_[q]) {
        sched.remove(q);
        done.push_back(q);
      }
    }
    kv.check_invariants();
    return out;
  }

  KvCacheManager kv;
  Scheduler sched;
  std::vector<std::unique_ptr<Sequence>> seqs;
  std::vector<Sequence*> done;
  std::map<Sequence*, int> max_new_;
  uint64_t next = 1;
};

int64_t tokens_of(const SchedulerOutput& out, const Sequence* s) {
  for (const ScheduledSeq& x : out.scheduled)
    if (x.seq == s) return x.num_tokens;
  return 0;
}

TEST(Scheduler, LongPromptIsChunkedAndNeverStallsDecodes) {
  Harness h(1000, 4, 16, 8);
  Sequence* a = h.add(3, 100);
  h.step();  // a's prompt
  EXPECT_EQ(a->num_computed, 3);
  Sequence* b = h.add(50, 2);
  for (int i = 0; i < 3; ++i) {
    const SchedulerOutput& out = h.step();
    EXPECT_EQ(tokens_of(out, a), 1);   // a decodes every step
    EXPECT_EQ(tokens_of(out, b), 15);  // b gets what is left of the budget
    EXPECT_EQ(out.num_tokens, 16);
    EXPECT_EQ(out.scheduled.front().seq, a);  // decodes first in the batch
  }
  const SchedulerOutput& out = h.step();
  EXPECT_EQ(tokens_of(out, b), 5);
  EXPECT_EQ(b->num_computed, 50);
}

TEST(Scheduler, PrefillFirstGivesPromptsTheBudgetThenDecodes) {
  Harness h(1000, 4, 16, 8, SchedulePolicy::PrefillFirst);
  Sequence* a = h.add(3, 100);
  h.step();  // a's prompt
  Sequence* b = h.add(50, 2);
  for (int i = 0; i < 3; ++i) {
    const SchedulerOutput& out = h.step();
    EXPECT_EQ(tokens_of(out, b), 16);  // the prompt takes the whole budget
    EXPECT_EQ(tokens_of(out, a), 0);   // a waits
  }
  const SchedulerOutput& out = h.step();
  EXPECT_EQ(tokens_of(out, b), 2);  // the prompt's last chunk...
  EXPECT_EQ(tokens_of(out, a), 1);  // ...and a decodes with what is left
  EXPECT_EQ(out.scheduled.front().seq, a);  // one-token rows still lead the batch
  EXPECT_EQ(out.num_tokens, 3);
  // A one-token prompt is admitted and, in the same step, not picked again as a decode.
  Sequence* c = h.add(1, 3);
  const SchedulerOutput& next = h.step();
  EXPECT_EQ(tokens_of(next, c), 1);
  EXPECT_EQ(tokens_of(next, a), 1);
  EXPECT_EQ(tokens_of(next, b), 1);
}

TEST(Scheduler, MaxBatchSizeBoundsRunning) {
  Harness h(1000, 4, 100, 3);
  for (int i = 0; i < 5; ++i) h.add(2, 5);
  const SchedulerOutput& out = h.step();
  EXPECT_EQ(out.scheduled.size(), 3u);
  EXPECT_EQ(h.sched.num_running(), 3);
  EXPECT_EQ(h.sched.num_waiting(), 2);
  while (h.done.size() < 5) h.step();
  EXPECT_EQ(h.kv.num_free_blocks(), 1000);
}

TEST(Scheduler, HigherPriorityIsAdmittedFirst) {
  Harness h(1000, 4, 100, 1);
  Sequence* low = h.add(2, 1, 0);
  Sequence* high = h.add(2, 1, 5);
  const SchedulerOutput& out = h.step();
  ASSERT_EQ(out.scheduled.size(), 1u);
  EXPECT_EQ(out.scheduled[0].seq, high);
  h.step();
  EXPECT_EQ(h.done.size(), 2u);
  EXPECT_EQ(h.done[0], high);
  EXPECT_EQ(h.done[1], low);
}

TEST(Scheduler, NewestIsPreemptedWhenBlocksRunOutAndAllFinish) {
  // 6 blocks of 2 tokens: two sequences growing to 9 tokens each cannot both fit.
  Harness h(6, 2, 100, 8);
  Sequence* a = h.add(3, 6);
  Sequence* b = h.add(3, 6);
  int64_t preempted_b = 0;
  for (int i = 0; i < 100 && h.done.size() < 2; ++i) {
    const SchedulerOutput& out = h.step();
    for (Sequence* p : out.preempted) {
      EXPECT_EQ(p, b);  // the newest goes, never the oldest
      ++preempted_b;
    }
  }
  EXPECT_GT(preempted_b, 0);
  EXPECT_EQ(h.sched.num_preemptions(), preempted_b);
  ASSERT_EQ(h.done.size(), 2u);
  EXPECT_EQ(h.done[0], a);
  EXPECT_EQ(static_cast<int>(b->tokens.size()), 9);
  EXPECT_EQ(h.kv.num_free_blocks(), 6);
}

TEST(Scheduler, LowerPriorityIsPreemptedBeforeNewer) {
  Harness h(6, 2, 100, 8);
  Sequence* old_low = h.add(3, 6, -1);
  Sequence* young_high = h.add(3, 6, 1);
  bool saw = false;
  while (h.done.size() < 2) {
    const SchedulerOutput& out = h.step();
    for (Sequence* p : out.preempted) {
      EXPECT_EQ(p, old_low);
      saw = true;
    }
  }
  EXPECT_TRUE(saw);
  EXPECT_EQ(h.done[0], young_high);
}

TEST(Scheduler, PrefixHitSkipsComputedTokensAndIsCounted) {
  Harness h(100, 4, 100, 8);
  Sequence* a = h.add(10, 1);
  h.step();
  EXPECT_EQ(h.done.size(), 1u);
  Sequence* b = h.add(10, 1);  // the same prompt
  const SchedulerOutput& out = h.step();
  EXPECT_EQ(tokens_of(out, b), 2);  // two blocks of 4 came from the cache
  EXPECT_EQ(b->cached_prompt_tokens, 8);
  EXPECT_EQ(h.sched.prefix_hit_tokens(), 8);
  EXPECT_EQ(h.sched.prefix_query_tokens(), 20);
  (void)a;
}

class SchedulerPolicies : public testing::TestWithParam<SchedulePolicy> {};

TEST_P(SchedulerPolicies, RandomLoadAlwaysDrains) {
  std::mt19937 rng(11);
  Harness h(24, 4, 32, 6, GetParam());
  int added = 0;
  for (int it = 0; it < 4000 && (added < 300 || h.done.size() < static_cast<size_t>(added)); ++it) {
    if (added < 300 && rng() % 3 == 0) {
      h.add(1 + static_cast<int>(rng() % 30), 1 + static_cast<int>(rng() % 40), static_cast<int32_t>(rng() % 3));
      ++added;
    }
    const SchedulerOutput& out = h.step();
    EXPECT_LE(out.num_tokens, 32);
    EXPECT_LE(h.sched.num_running(), 6);
  }
  EXPECT_EQ(h.done.size(), 300u);
  EXPECT_GT(h.sched.num_preemptions(), 0);
  EXPECT_EQ(h.kv.num_free_blocks(), 24);
  EXPECT_EQ(h.kv.num_open_sequences(), 0);
}

INSTANTIATE_TEST_SUITE_P(Scheduler, SchedulerPolicies,
                         testing::Values(SchedulePolicy::DecodeFirst, SchedulePolicy::PrefillFirst),
                         [](const testing::TestParamInfo<SchedulePolicy>& i) {
                           return i.param == SchedulePolicy::DecodeFirst ? std::string("DecodeFirst")
                                                                         : std::string("PrefillFirst");
                         });

}  // namespace
}  // namespace kiln
