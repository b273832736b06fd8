// The memory plan (kiln::MemoryPlan, runtime/memory_plan.h) on the CPU backend: its arithmetic, its one-line report,
// the refusal of a context that can never fit, the shortening of a model's context that does not, and that a workload
// larger than the cache queues and finishes.
#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "kiln/error.h"
#include "kiln/executor.h"
#include "kiln/model.h"
#include "runtime/memory_plan.h"

namespace kiln {
namespace {

const std::string kModel = std::string(KILN_SOURCE_DIR) + "/tests/fixtures/models/llama2-mha-f32";

TEST(MemoryPlan, CpuBudgetIsKvCacheBytesOrTheDocumentedDefault) {
  auto m = Model::load(kModel);
  const int64_t block = m->kv_block_bytes(16);
  ExecutorConfig c;
  c.max_batch_size = 1000;
  MemoryPlan p = plan_memory(*m, c);
  EXPECT_EQ(p.device, Device::CPU);
  EXPECT_EQ(p.weights, static_cast<int64_t>(m->weight_bytes()));
  EXPECT_EQ(p.workspace, m->workspace_bytes(c.max_num_tokens));
  // The model's context is 128 tokens: 8 blocks for each of 1000 requests at most, far below 4 GiB.
  EXPECT_EQ(p.num_blocks, 8 * 1000);
  EXPECT_EQ(p.kv_cache, p.num_blocks * block);
  c.max_batch_size = 1 << 20;  // no cap from the requests: the 4 GiB default itself
  p = plan_memory(*m, c);
  EXPECT_EQ(p.num_blocks, kCpuKvCacheBytes / block);
  c.kv_cache_bytes = 10 * block + block / 2;  // whole blocks only
  p = plan_memory(*m, c);
  EXPECT_EQ(p.num_blocks, 10);
  EXPECT_EQ(p.tokens(), 160);
  EXPECT_EQ(p.max_seq_len, 128);
  EXPECT_EQ(p.concurrency(40), 3);  // 3 blocks each
  const std::string line = p.describe(40);
  for (const char* part : {"weights", "workspace", "KV cache", "10 blocks of 16 tokens", "160 tokens",
                           "3 requests of 40 tokens at once", "context 128"})
    EXPECT_NE(line.find(part), std::string::npos) << line;
  EXPECT_EQ(line.find('\n'), std::string::npos);
}

TEST(MemoryPlan, AContextThatCannotFitIsRefusedAndTheModelsIsShortened) {
  auto m = Model::load(kModel);
  const int64_t block = m->kv_block_bytes(16);
  ExecutorConfig c;
  c.kv_cache_bytes = 4 * block;  // 64 tokens
  c.max_seq_len = 100;
  try {
    plan_memory(*m, c);
    ADD_FAILURE() << "planned";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("--max-seq-len 100"), std::string::npos) << msg;
    EXPECT_NE(msg.find("64 tokens"), std::string::npos) << msg;
  }
  EXPECT_THROW(Executor(std::shared_ptr<const Model>(Model::load(kModel)), nullptr, c), Error);
  c.max_seq_len = 0;  // the model's 128 does not fit: shortened to what does, and the line says so
  const MemoryPlan p = plan_memory(*m, c);
  EXPECT_EQ(p.max_seq_len, 64);
  EXPECT_NE(p.describe(0).find("the model's 128 does not fit"), std::string::npos) << p.describe(0);
  c.max_seq_len = 64;
  EXPECT_EQ(plan_memory(*m, c).max_seq_len, 64);
}

TEST(MemoryPlan, AWorkloadLargerThanTheCacheQueuesAndFinishes) {
  std::shared_ptr<const Model> m = Model::load(kModel);
  ExecutorConfig c;
  c.kv_cache_bytes = 8 * m->kv_block_bytes(16);  // 128 tokens: two requests of 50 at once
  c.max_batch_size = 16;
  Executor ex(m, nullptr, c);
  EXPECT_EQ(ex.memory_plan().concurrency(50), 2);
  std::vector<RequestId> ids;
  for (int i = 0; i < 12; ++i) {
    Request r;
    for (int t = 0; t < 20; ++t) r.prompt_ids.push_back(1 + (7 * i + 3 * t) % 300);
    r.max_tokens = 30;
    r.ignore_eos = true;
    r.sampling.temperature = 0;
    ids.push_back(ex.enqueue(r));
  }
  for (RequestId id : ids) {
    int64_t generated = 0;
    for (bool done = false; !done;)
      for (const Response& r : ex.await_responses(id, std::chrono::seconds(10))) {
        generated += static_cast<int64_t>(r.token_ids.size());
        if (r.finished) {
          done = true;
          EXPECT_EQ(r.finish_reason, FinishReason::Length);
        }
      }
    EXPECT_EQ(generated, 30);
  }
  const ExecutorStats s = ex.stats();
  // Prompts of 2 blocks: 4 start at once, then grow past the cache and preempt one another; all finish.
  EXPECT_LE(s.peak_running, 4);
  EXPECT_GT(s.preemptions, 0);
  EXPECT_EQ(s.kv_blocks_free, s.kv_blocks_total);
}

}  // namespace
}  // namespace kiln
