// CUDA graphs of pure-decode steps (CudaDecoderModel::forward_batch_sample): a replayed step gives bitwise the
// tokens and log-probs of the same step run kernel by kernel when the batch fills its bucket; a batch padded to
// its bucket agrees with the unpadded eager step up to rounding; the counters show that replays happen; and the
// executor runs its decode steps through them.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>

#include "cuda_test_util.h"
#include "kiln/executor.h"
#include "kiln/model.h"
#include "model/cuda/cuda_decoder_model.h"
#include "runtime/sampler.h"

namespace kiln {
namespace {

using namespace std::chrono_literals;

// A Llama with head_dim 64 and random weights (the tensor-core attention kernels), with or without graphs.
std::shared_ptr<const Model> load_model(bool graphs) {
  return testing::random_llama_hd64("kiln_cuda_graph_hd64", 11, graphs);
}

constexpr int32_t kBlock = 8;
constexpr int64_t kBlocksPerSeq = 24;

// Sequences on a pool, stepped by hand: a prefill of every prompt, then decode steps.
struct Driver {
  std::shared_ptr<const Model> model;
  std::unique_ptr<KvPool> pool;
  std::unique_ptr<Workspace> ws;
  std::vector<std::vector<int32_t>> tokens;  // prompt + generated
  std::vector<size_t> prompt_len;
  std::vector<std::vector<int32_t>> tables;
  std::vector<Sampler> samplers;  // each sequence's sampling state (step, penalty statistics), as the executor's

  Driver(std::shared_ptr<const Model> m, const std::vector<std::vector<int32_t>>& prompts,
         const std::vector<SamplingParams>& p)
      : model(std::move(m)), tokens(prompts) {
    const int64_t n = static_cast<int64_t>(prompts.size());
    pool = model->new_kv_pool(n * kBlocksPerSeq, kBlock);
    ws = model->new_workspace(2048);
    for (int64_t i = 0; i < n; ++i) {
      prompt_len.push_back(prompts[i].size());
      tables.emplace_back();
      for (int64_t b = 0; b < kBlocksPerSeq; ++b)
        tables.back().push_back(static_cast<int32_t>((n - 1 - i) * kBlocksPerSeq + b));
      samplers.emplace_back(p[i]);
      samplers.back().add_prompt(prompts[i]);
    }
  }
  // One step: the first step prefills every prompt (all but its last token are already "computed" = none),
  // later steps decode one token per sequence. `forced` (optional) overrides the token appended.
  BatchSamples step(const std::vector<int32_t>* forced = nullptr) {
    std::vector<int32_t> ids;
    std::vector<int64_t> pos, slots, rows;
    std::vector<BatchSeq> seqs;
    const bool first = tokens[0].size() == prompt_len[0];
    for (size_t i = 0; i < tokens.size(); ++i) {
      const int64_t ctx = static_cast<int64_t>(tokens[i].size());
      const int64_t q = first ? ctx : 1;
      BatchSeq s;
      s.query_start = static_cast<int64_t>(ids.size());
      s.query_len = q;
      s.context_len = ctx;
      s.block_table = tables[i];
      for (int64_t p = ctx - q; p < ctx; ++p) {
        ids.push_back(tokens[i][p]);
        pos.push_back(p);
        slots.push_back(static_cast<int64_t>(tables[i][p / kBlock]) * kBlock + p % kBlock);
      }
      rows.push_back(static_cast<int64_t>(ids.size()) - 1);
      seqs.push_back(s);
    }
    std::vector<RowSampling> rs;
    for (const Sampler& s : samplers) rs.push_back({s.params(), s.step(), s.penalties()});
    int64_t decodes = 0;  // the leading one-row sequences
    while (decodes < static_cast<int64_t>(seqs.size()) && seqs[decodes].query_len == 1) ++decodes;
    ForwardBatch b{ids, pos, slots, seqs, rows, decodes};
    BatchSamples out;
    model->forward_batch_sample(*pool, *ws, b, rs, out);
    for (size_t i = 0; i < tokens.size(); ++i) {
      const int32_t t = forced ? (*forced)[i] : out.tokens[i];
      tokens[i].push_back(t);
      samplers[i].accept(t);
    }
    return out;
  }
};

std::vector<std::vector<int32_t>> prompts_of(int n) {
  std::vector<std::vector<int32_t>> p;
  for (int i = 0; i < n; ++i) {
    std::vector<int32_t> v = {1};
    for (int j = 0; j < 5 + 7 * i; ++j) v.push_back(3 + (37 * i + 101 * j) % 990);
    p.push_back(v);
  }
  return p;
}

std::vector<SamplingParams> mixed_params(int n) {
  std::vector<SamplingParams> p(n);
  for (int i = 0; i < n; ++i) {
    SamplingParams& r = p[i];
    r.temperature = 0.0f;
    r.logprobs = i % 2 ? 5 : 0;
    r.seed = 1234 + i;
    if (i % 4 == 1) r.temperature = 0.8f, r.top_p = 0.9f;
    if (i % 4 == 2) r.temperature = 1.0f, r.top_k = 5, r.repetition_penalty = 1.3f;
    if (i % 4 == 3) r.frequency_penalty = 0.5f, r.presence_penalty = 0.2f;
  }
  return p;
}

TEST(CudaGraphs, ReplaysEqualTheEagerStepBitwiseForAFullBucket) {
  KILN_REQUIRE_GPU();
  const auto eager_model = load_model(false), graph_model = load_model(true);
  for (int n : {4, 8}) {  // batch sizes that are buckets: the replayed step has the eager step's shapes
    ASSERT_EQ(CudaDecoderModel::graph_bucket(n), n);
    const ModelStats before = graph_model->stats();
    Driver eager(eager_model, prompts_of(n), mixed_params(n)), graph(graph_model, prompts_of(n), mixed_params(n));
    for (int s = 0; s < 24; ++s) {
      const BatchSamples a = eager.step(), b = graph.step();
      ASSERT_EQ(a.tokens, b.tokens) << "n " << n << " step " << s;
      ASSERT_EQ(a.logprobs, b.logprobs) << "n " << n << " step " << s;
      ASSERT_EQ(a.top_stride, b.top_stride);
      ASSERT_EQ(a.top_ids, b.top_ids) << "n " << n << " step " << s;
      ASSERT_EQ(a.top_logprobs, b.top_logprobs) << "n " << n << " step " << s;
    }
    const ModelStats after = graph_model->stats();
    // 23 decode steps: the first of each (bucket, table width) eager, the rest captured once and replayed.
    EXPECT_GE(after.graph_captures - before.graph_captures, 1);
    EXPECT_GE(after.graph_replays - before.graph_replays, 18) << "n " << n;
    std::printf("  [n %d: %lld captures, %lld replays, %lld eager steps]\n", n,
                static_cast<long long>(after.graph_captures - before.graph_captures),
                static_cast<long long>(after.graph_replays - before.graph_replays),
                static_cast<long long>(after.eager_steps - before.eager_steps));
  }
  EXPECT_EQ(eager_model->stats().graph_replays, 0);
  EXPECT_EQ(eager_model->stats().graph_captures, 0);
}

TEST(CudaGraphs, PaddedBucketsAgreeWithTheUnpaddedEagerStep) {
  KILN_REQUIRE_GPU();
  const auto eager_model = load_model(false), graph_model = load_model(true);
  for (int n : {3, 5, 17}) {
    ASSERT_GT(CudaDecoderModel::graph_bucket(n), n);
    std::vector<SamplingParams> greedy(n);
    for (SamplingParams& r : greedy) r.temperature = 0.0f, r.logprobs = 2;
    Driver eager(eager_model, prompts_of(n), greedy), graph(graph_model, prompts_of(n), greedy);
    const int64_t replays0 = graph_model->stats().graph_replays;
    for (int s = 0; s < 12; ++s) {
      const BatchSamples a = eager.step();
      const BatchSamples b = graph.step(&a.tokens);  // both continue with the eager tokens
      for (int i = 0; i < n; ++i) {
        const double margin = a.top_logprobs[i * a.top_stride] - a.top_logprobs[i * a.top_stride + 1];
        if (margin > 0.01) EXPECT_EQ(a.tokens[i], b.tokens[i]) << "n " << n << " step " << s << " row " << i;
        EXPECT_NEAR(a.top_logprobs[i * a.top_stride], b.top_logprobs[i * b.top_stride], 0.03)
            << "n " << n << " step " << s << " row " << i;
      }
    }
    EXPECT_GE(graph_model->stats().graph_replays - replays0, 8) << "n " << n;
  }
}

TEST(CudaGraphs, TheExecutorReplaysDecodeSteps) {
  KILN_REQUIRE_GPU();
  const auto m = load_model(true);
  ExecutorConfig c;
  c.kv_cache_bytes = 8 << 20;
  c.max_num_tokens = 128;
  c.max_batch_size = 16;
  c.block_size = kBlock;
  const int64_t replays0 = m->stats().graph_replays;
  Executor ex(m, nullptr, c);
  std::vector<RequestId> ids;
  for (const auto& p : prompts_of(6)) {
    Request r;
    r.prompt_ids = p;
    r.max_tokens = 30;
    r.ignore_eos = true;
    r.sampling.temperature = 0.0f;
    ids.push_back(ex.enqueue(r));
  }
  for (RequestId id : ids)
    for (bool done = false; !done;)
      for (const Response& r : ex.await_responses(id, 10000ms)) {
        ASSERT_NE(r.finish_reason, FinishReason::Error) << r.error;
        done |= r.finished;
      }
  EXPECT_GE(m->stats().graph_replays - replays0, 20);
}

}  // namespace
}  // namespace kiln
