// Soak: 2,000 requests of random prompt and output lengths and priorities, random cancellations, and a KV
// budget small enough to force preemption. Every request ends exactly once with the right finish reason,
// the pool returns to all free, and memory does not grow. Meant to run under ASan/LSan as well.
#include <gtest/gtest.h>

#include <malloc.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "kiln/executor.h"
#include "kiln/tokenizer.h"
#include "kiln/model.h"

namespace kiln {
namespace {

using namespace std::chrono_literals;

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif

struct Record {
  int64_t max_tokens = 0;
  bool ignore_eos = false;
  bool cancelled = false;
  int finished = 0;
  int64_t tokens = 0;
  FinishReason reason = FinishReason::None;
  int32_t last = -1;
};

TEST(ExecutorSoak, TwoThousandRequestsEndExactlyOnce) {
  // $KILN_FIXTURES_DIR replaces tests/fixtures where the binary runs away from its checkout (the GPU machine).
  const char* fixtures = std::getenv("KILN_FIXTURES_DIR");
  const std::string dir =
      std::string(fixtures ? fixtures : KILN_SOURCE_DIR "/tests/fixtures") + "/llama2c/stories260K/";
  // KILN_TEST_DEVICE=cuda runs the same soak on the GPU backend (ctest label gpu).
  LoadOptions options;
  if (const char* d = std::getenv("KILN_TEST_DEVICE"); d != nullptr && std::string(d) == "cuda") options.device = Device::CUDA;
  std::shared_ptr<const Model> model = Model::load(dir + "stories260K.bin", options);
  std::shared_ptr<const Tokenizer> tok = Tokenizer::from_path(dir + "tok512.bin");
  ExecutorConfig c;
  c.block_size = 8;
  c.max_batch_size = 16;
  c.max_num_tokens = 96;
  c.kv_cache_bytes = 24 * model->kv_block_bytes(c.block_size);  // 192 tokens for up to 16 requests of <= 74
  c.max_queue = 0;
  Executor ex(model, tok, c);

  std::mutex mu;
  std::map<RequestId, Record> recs;
  std::atomic<int> done{0};
  std::mt19937 rng(2024);
  const int kRequests = 2000;
  size_t heap_at_half = 0;
  std::vector<RequestId> ids;
  for (int i = 0; i < kRequests; ++i) {
    Request r;
    r.prompt_ids = {1};
    if (rng() % 3 == 0) {
      // One of a few shared openings, so prefix reuse, eviction and preemption meet.
      const int32_t which = static_cast<int32_t>(rng() % 4);
      for (int k = 0; k < 17; ++k) r.prompt_ids.push_back(10 + which * 50 + k);
    }
    const int n = static_cast<int>(r.prompt_ids.size()) + static_cast<int>(rng() % 32);
    while (static_cast<int>(r.prompt_ids.size()) < n) r.prompt_ids.push_back(3 + static_cast<int32_t>(rng() % 400));
    r.max_tokens = 1 + static_cast<int64_t>(rng() % 24);
    r.ignore_eos = rng() % 2 == 0;
    r.priority = static_cast<int32_t>(rng() % 3);
    r.sampling.temperature = rng() % 2 ? 0.0f : 1.0f;
    if (rng() % 8 == 0) r.stop_strings = {"the"};
    Record rec;
    rec.max_tokens = r.max_tokens;
    rec.ignore_eos = r.ignore_eos;
    std::lock_guard lk(mu);  // held across enqueue so the callback finds the record
    const RequestId id = ex.enqueue(std::move(r), [&](const Response& resp) {
      std::lock_guard lk2(mu);
      Record& x = recs.at(resp.id);
      EXPECT_EQ(x.finished, 0) << "request " << resp.id << " got a response after its last";
      x.tokens += static_cast<int64_t>(resp.token_ids.size());
      if (!resp.token_ids.empty()) x.last = resp.token_ids.back();
      EXPECT_EQ(x.tokens, resp.generated_tokens);
      if (resp.finished) {
        ++x.finished;
        x.reason = resp.finish_reason;
        ++done;
      }
    });
    recs.emplace(id, rec);
    ids.push_back(id);
    if (rng() % 10 == 0) {
      const RequestId victim = ids[rng() % ids.size()];
      recs.at(victim).cancelled = true;
      ex.cancel(victim);
    }
    // Keep a few dozen in flight, so that requests arrive while others run.
    if (i > 40) {
      mu.unlock();
      while (done.load() < i - 30) std::this_thread::sleep_for(50us);
      mu.lock();
    }
    if (i == kRequests / 2) {
      mu.unlock();
      while (done.load() < i + 1) std::this_thread::sleep_for(50us);
      mu.lock();
      heap_at_half = mallinfo2().uordblks;
    }
  }
  while (done.load() < kRequests) std::this_thread::sleep_for(1ms);
  const ExecutorStats s = ex.stats();
  const size_t heap_at_end = mallinfo2().uordblks;

  std::lock_guard lk(mu);
  ASSERT_EQ(recs.size(), static_cast<size_t>(kRequests));
  int cancelled = 0;
  for (const auto& [id, x] : recs) {
    ASSERT_EQ(x.finished, 1) << "request " << id;
    if (x.reason == FinishReason::Cancelled) {
      EXPECT_TRUE(x.cancelled) << "request " << id << " was cancelled without being asked";
      EXPECT_LE(x.tokens, x.max_tokens);
      ++cancelled;
    } else if (x.reason == FinishReason::Length) {
      EXPECT_EQ(x.tokens, x.max_tokens) << "request " << id;
    } else {
      ASSERT_EQ(x.reason, FinishReason::Stop) << "request " << id;
      EXPECT_LE(x.tokens, x.max_tokens);
      if (x.ignore_eos) EXPECT_NE(x.last, 2) << "request " << id << " stopped at EOS despite ignore_eos";
    }
  }
  EXPECT_GT(cancelled, 0);
  EXPECT_GT(s.preemptions, 0) << "the KV budget was meant to force preemption";
  EXPECT_GT(s.prefix_hit_rate, 0.0);
  EXPECT_EQ(s.requests_finished, kRequests);
  EXPECT_EQ(s.running, 0);
  EXPECT_EQ(s.queued, 0);
  EXPECT_EQ(s.kv_blocks_free, s.kv_blocks_total);
  EXPECT_EQ(s.kv_blocks_used, 0);
  if (!kSanitized) {
    // The second thousand requests leave the heap where the first left it (the KV pool and workspaces are
    // sized at start; per-request state is freed).
    EXPECT_LT(static_cast<double>(heap_at_end), static_cast<double>(heap_at_half) + 256.0 * 1024)
        << "heap grew from " << heap_at_half << " to " << heap_at_end << " bytes";
  }
  std::printf("soak: %lld steps, %lld preemptions, %d cancelled, prefix hit rate %.3f\n",
              static_cast<long long>(s.steps), static_cast<long long>(s.preemptions), cancelled, s.prefix_hit_rate);
}

}  // namespace
}  // namespace kiln
