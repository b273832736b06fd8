// Executor on the stories260K llama2.c model: a request's tokens (and logprobs) are bitwise the same alone
// or in a busy batch, chunked or not, from the prefix cache or not, preempted or not; stop strings across
// token boundaries; cancellation; the queue limit; refusals with clear messages; the LLM wrapper.
#include <gtest/gtest.h>

#include <cstdlib>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <random>
#include <thread>

#include "kiln/error.h"
#include "kiln/executor.h"
#include "kiln/tokenizer.h"
#include "kiln/model.h"

namespace kiln {
namespace {

using namespace std::chrono_literals;

#define EXPECT_MENTIONS(text, what) EXPECT_NE(std::string(text).find(what), std::string::npos) << (text)

// tests/fixtures/llama2c/stories260K; $KILN_FIXTURES_DIR replaces tests/fixtures where the binary runs away from
// its checkout (tests/gpu/validate_device.sh on the GPU machine).
const std::string kStoriesDir = std::string(std::getenv("KILN_FIXTURES_DIR") ? std::getenv("KILN_FIXTURES_DIR")
                                                                             : KILN_SOURCE_DIR "/tests/fixtures") +
                                "/llama2c/stories260K/";
const std::string kModelPath = kStoriesDir + "stories260K.bin";

// KILN_TEST_DEVICE=cuda runs these tests on the GPU backend (ctest label gpu; the bitwise batch-invariance
// tests are excluded there, tests/gpu/cuda_runtime_test.cpp checks their greedy ids on the GPU).
LoadOptions test_load_options() {
  LoadOptions o;
  if (const char* d = std::getenv("KILN_TEST_DEVICE"); d != nullptr && std::string(d) == "cuda") o.device = Device::CUDA;
  return o;
}

struct Fixture {
  std::shared_ptr<const Model> model = Model::load(kModelPath, test_load_options());
  std::shared_ptr<const Tokenizer> tok = Tokenizer::from_path(kStoriesDir + "tok512.bin");
};

Fixture& fx() {
  static Fixture f;
  return f;
}

ExecutorConfig small_config() {
  ExecutorConfig c;
  c.kv_cache_bytes = 4 << 20;
  c.max_num_tokens = 64;
  c.max_batch_size = 32;
  c.block_size = 8;
  return c;
}

struct Outcome {
  std::vector<int32_t> tokens;
  std::vector<double> logprobs;
  std::string text;
  FinishReason reason = FinishReason::None;
  std::string error;
  int64_t cached = 0;
  int finished = 0;
};

Outcome collect(Executor& ex, RequestId id) {
  Outcome o;
  while (o.finished == 0) {
    for (const Response& r : ex.await_responses(id, 5000ms)) {
      EXPECT_EQ(o.finished, 0) << "a response after the finished one";
      o.tokens.insert(o.tokens.end(), r.token_ids.begin(), r.token_ids.end());
      for (const TokenLogprobs& l : r.logprobs) o.logprobs.push_back(l.logprob);
      o.text += r.text;
      if (r.finished) {
        ++o.finished;
        o.reason = r.finish_reason;
        o.error = r.error;
        o.cached = r.cached_prompt_tokens;
      }
    }
  }
  return o;
}

std::vector<int32_t> random_prompt(std::mt19937& rng, int n) {
  std::vector<int32_t> p = {1};
  while (static_cast<int>(p.size()) < n) p.push_back(3 + static_cast<int32_t>(rng() % 500));
  return p;
}

Request greedy(std::vector<int32_t> prompt, int64_t max_tokens) {
  Request r;
  r.prompt_ids = std::move(prompt);
  r.sampling.temperature = 0.0f;
  r.max_tokens = max_tokens;
  r.ignore_eos = true;
  return r;
}

Outcome run_alone(const Request& r, ExecutorConfig c = small_config()) {
  Executor ex(fx().model, fx().tok, c);
  return collect(ex, ex.enqueue(r));
}

void expect_same(const Outcome& a, const Outcome& b) {
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.logprobs, b.logprobs);  // bitwise: the logits were bitwise equal
  EXPECT_EQ(a.text, b.text);
  EXPECT_EQ(a.reason, b.reason);
}

// Waits until the executor has run `steps` steps, or has nothing left to do.
void wait_steps(Executor& ex, int64_t steps) {
  for (;;) {
    const ExecutorStats s = ex.stats();
    if (s.steps >= steps || (s.running == 0 && s.queued == 0)) return;
    std::this_thread::sleep_for(100us);
  }
}

TEST(Executor, GreedyTokensAreTheSameAloneOrAmong31Others) {
  std::mt19937 rng(1234);
  Request target = greedy(random_prompt(rng, 37), 40);
  Request sampled = target;  // and a seeded sampled one
  sampled.sampling.temperature = 0.9f;
  sampled.sampling.top_p = 0.95f;
  sampled.sampling.seed = 99;
  const Outcome alone = run_alone(target);
  const Outcome alone_sampled = run_alone(sampled);
  ASSERT_EQ(alone.tokens.size(), 40u);

  for (int round = 0; round < 2; ++round) {
    Executor ex(fx().model, fx().tok, small_config());
    std::vector<RequestId> others;
    RequestId tid = 0, sid = 0;
    int64_t at = 0;
    for (int k = 0; k < 31; ++k) {
      at += rng() % 4;
      wait_steps(ex, at);
      Request r = greedy(random_prompt(rng, 1 + static_cast<int>(rng() % 90)), 1 + rng() % 60);
      if (k % 3 == 0) r.sampling.temperature = 1.0f;
      others.push_back(ex.enqueue(r));
      if (k == 7 + round * 10) tid = ex.enqueue(target);
      if (k == 12) sid = ex.enqueue(sampled);
    }
    expect_same(collect(ex, tid), alone);
    expect_same(collect(ex, sid), alone_sampled);
    for (RequestId id : others) EXPECT_EQ(collect(ex, id).finished, 1);
    EXPECT_GT(ex.stats().steps, 40);
  }
}

TEST(Executor, ChunkedPrefillEqualsUnchunked) {
  std::mt19937 rng(5);
  const Request r = greedy(random_prompt(rng, 150), 20);
  ExecutorConfig c = small_config();
  c.max_num_tokens = 4096;
  const Outcome whole = run_alone(r, c);
  for (int64_t chunk : {1, 7, 16, 33}) {
    c.max_num_tokens = chunk;
    expect_same(run_alone(r, c), whole);
  }
}

// Under the prefill-first schedule (prompts take the budget, decodes wait, requests arriving as others run and
// several steps mixing the two), every request still gets the tokens it gets alone.
TEST(Executor, PrefillFirstTokensEqualAlone) {
  std::mt19937 rng(9);
  ExecutorConfig c = small_config();
  c.prefill_first = true;
  c.max_num_tokens = 24;
  std::vector<Request> reqs;
  for (int k = 0; k < 12; ++k)
    reqs.push_back(greedy(random_prompt(rng, 1 + static_cast<int>(rng() % 60)), 1 + rng() % 30));
  Executor ex(fx().model, fx().tok, c);
  std::vector<RequestId> ids;
  int64_t at = 0;
  for (const Request& r : reqs) {
    at += rng() % 5;
    wait_steps(ex, at);
    ids.push_back(ex.enqueue(r));
  }
  for (size_t i = 0; i < reqs.size(); ++i) expect_same(collect(ex, ids[i]), run_alone(reqs[i]));
}

TEST(Executor, PrefixCacheHitEqualsMissAndIsCounted) {
  std::mt19937 rng(6);
  const std::vector<int32_t> shared = random_prompt(rng, 70);
  std::vector<int32_t> longer = shared;
  for (int i = 0; i < 9; ++i) longer.push_back(5 + i);
  ExecutorConfig off = small_config();
  off.enable_prefix_caching = false;
  const Outcome miss = run_alone(greedy(longer, 25), off);

  Executor ex(fx().model, fx().tok, small_config());
  const Outcome first = collect(ex, ex.enqueue(greedy(shared, 10)));
  EXPECT_EQ(first.cached, 0);
  const Outcome hit = collect(ex, ex.enqueue(greedy(longer, 25)));
  EXPECT_EQ(hit.cached, 64);  // eight full blocks of 8 of the shared 70 tokens
  expect_same(hit, miss);
  EXPECT_GT(ex.stats().prefix_hit_rate, 0.0);
}

TEST(Executor, PreemptedRequestsEqualUninterruptedOnes) {
  std::mt19937 rng(7);
  std::vector<Request> reqs;
  std::vector<Outcome> alone;
  for (int i = 0; i < 6; ++i) {
    reqs.push_back(greedy(random_prompt(rng, 20 + 10 * i), 60));
    alone.push_back(run_alone(reqs.back()));
  }
  ExecutorConfig c = small_config();
  const int64_t block_bytes = fx().model->kv_block_bytes(c.block_size);
  c.kv_cache_bytes = 20 * block_bytes;  // 160 tokens for six requests of 80 to 130 tokens
  Executor ex(fx().model, fx().tok, c);
  std::vector<RequestId> ids;
  for (const Request& r : reqs) ids.push_back(ex.enqueue(r));
  for (size_t i = 0; i < ids.size(); ++i) expect_same(collect(ex, ids[i]), alone[i]);
  const ExecutorStats s = ex.stats();
  EXPECT_GT(s.preemptions, 0);
  EXPECT_EQ(s.kv_blocks_free, s.kv_blocks_total);
}

TEST(Executor, StopStringAcrossTwoTokensStopsAndIsNotEmitted) {
  Request r;
  r.prompt_ids = fx().tok->encode("Once upon a time", true);
  r.sampling.temperature = 0.0f;
  r.max_tokens = 60;
  const Outcome ref = run_alone(r);
  // Two neighbouring tokens with 2+ bytes of text each: the stop is the end of one and the start of the
  // next, where it first occurs in the text.
  IncrementalDetokenizer detok(*fx().tok, r.prompt_ids, true);
  std::vector<std::string> pieces;
  for (int32_t t : ref.tokens) pieces.push_back(detok.push(t));
  std::string stop;
  size_t split_token = 0, stop_at = 0;
  std::string before;
  for (size_t i = 0; i + 1 < pieces.size(); ++i) {
    before += pieces[i];
    if (i < 3 || pieces[i].size() < 2 || pieces[i + 1].size() < 2) continue;
    const std::string cand = pieces[i].substr(pieces[i].size() - 2) + pieces[i + 1].substr(0, 2);
    if (ref.text.find(cand) == before.size() - 2) {
      stop = cand;
      split_token = i + 1;
      stop_at = before.size() - 2;
      break;
    }
  }
  ASSERT_FALSE(stop.empty()) << "no usable token boundary in: " << ref.text;
  r.stop_strings = {stop};
  const Outcome got = run_alone(r);
  EXPECT_EQ(got.reason, FinishReason::Stop);
  EXPECT_EQ(got.text, ref.text.substr(0, stop_at));  // all that was ever emitted: the stop never leaked
  EXPECT_EQ(got.tokens.size(), split_token + 1);      // the token that completed it is the last
}

TEST(Executor, StopTokenIdsAndEos) {
  const Outcome ref = run_alone(greedy({1}, 30));
  Request r = greedy({1}, 30);
  r.stop_token_ids = {ref.tokens[5]};
  const Outcome got = run_alone(r);
  EXPECT_EQ(got.reason, FinishReason::Stop);
  const size_t first = std::find(ref.tokens.begin(), ref.tokens.end(), ref.tokens[5]) - ref.tokens.begin();
  EXPECT_EQ(got.tokens, std::vector<int32_t>(ref.tokens.begin(), ref.tokens.begin() + first + 1));
  // Without ignore_eos, EOS (id 2 for this tokenizer) ends a long generation with "stop".
  Request e = greedy({1}, 400);
  e.ignore_eos = false;
  const Outcome eos = run_alone(e);
  if (eos.reason == FinishReason::Stop) EXPECT_EQ(eos.tokens.back(), 2);
}

TEST(Executor, LengthAtTheContextLimit) {
  ExecutorConfig c = small_config();
  c.max_seq_len = 20;
  Executor ex(fx().model, fx().tok, c);
  const Outcome o = collect(ex, ex.enqueue(greedy(std::vector<int32_t>(15, 5), 100)));
  EXPECT_EQ(o.reason, FinishReason::Length);
  EXPECT_EQ(o.tokens.size(), 5u);
  EXPECT_EQ(ex.stats().max_seq_len, 20);
}

TEST(Executor, CancelRunningAndWaiting) {
  ExecutorConfig c = small_config();
  c.max_batch_size = 1;
  Executor ex(fx().model, fx().tok, c);
  const RequestId a = ex.enqueue(greedy({1, 5, 6}, 2000 - 3));
  const RequestId b = ex.enqueue(greedy({1, 7}, 10));
  ex.cancel(b);  // still waiting behind a
  std::vector<Response> first;
  while (first.empty()) first = ex.await_responses(a, 5000ms);
  ex.cancel(a);
  ex.cancel(12345);  // unknown: ignored
  const Outcome oa = collect(ex, a), ob = collect(ex, b);
  EXPECT_EQ(oa.reason, FinishReason::Cancelled);
  EXPECT_LT(oa.tokens.size() + first.size(), 1997u);
  EXPECT_EQ(ob.reason, FinishReason::Cancelled);
  EXPECT_TRUE(ob.tokens.empty());
  ex.cancel(a);  // finished: ignored
  EXPECT_THROW(ex.await_responses(a, 1ms), Error);  // fully collected: unknown now
  const ExecutorStats s = ex.stats();
  EXPECT_EQ(s.running, 0);
  EXPECT_EQ(s.kv_blocks_free, s.kv_blocks_total);
}

TEST(Executor, QueueFullThrowsQueueFullError) {
  ExecutorConfig c = small_config();
  c.max_batch_size = 1;
  c.max_queue = 2;
  Executor ex(fx().model, fx().tok, c);
  const RequestId a = ex.enqueue(greedy({1}, 1500));
  while (ex.stats().running == 0) std::this_thread::sleep_for(100us);
  const RequestId b = ex.enqueue(greedy({1}, 5));
  const RequestId d = ex.enqueue(greedy({1}, 5));
  EXPECT_THROW(ex.enqueue(greedy({1}, 5)), QueueFullError);
  ex.cancel(a);
  for (RequestId id : {a, b, d}) EXPECT_EQ(collect(ex, id).finished, 1);
}

TEST(Executor, InvalidRequestsAreRefusedClearly) {
  ExecutorConfig c = small_config();
  c.max_seq_len = 32;
  Executor ex(fx().model, fx().tok, c);
  auto refused = [&](Request r, const std::string& what) {
    try {
      ex.enqueue(std::move(r));
      ADD_FAILURE() << "accepted; expected a refusal naming '" << what << "'";
    } catch (const Error& e) {
      EXPECT_MENTIONS(e.what(), what);
    }
  };
  refused(greedy({}, 5), "prompt is empty");
  refused(greedy({1, 512}, 5), "outside the vocabulary");
  refused(greedy(std::vector<int32_t>(32, 5), 5), "context holds 32");
  refused(greedy({1}, 0), "max_tokens");
  Request t = greedy({1}, 5);
  t.sampling.temperature = -1;
  refused(t, "temperature");
  Request p = greedy({1}, 5);
  p.sampling.top_p = 0;
  refused(p, "top-p");
  Request rp = greedy({1}, 5);
  rp.sampling.repetition_penalty = 0;
  refused(rp, "repetition penalty");
  Request s = greedy({1}, 5);
  s.stop_strings = {""};
  refused(s, "stop string is empty");
  Request st = greedy({1}, 5);
  st.stop_token_ids = {-3};
  refused(st, "stop token id");
  EXPECT_THROW(ex.await_responses(777, 1ms), Error);

  Executor no_tok(fx().model, nullptr, c);
  Request ns = greedy({1}, 5);
  ns.stop_strings = {"x"};
  try {
    no_tok.enqueue(ns);
    ADD_FAILURE() << "stop strings accepted without a tokenizer";
  } catch (const Error& e) {
    EXPECT_MENTIONS(e.what(), "need a tokenizer");
  }
  ex.shutdown(1000ms);
  try {
    ex.enqueue(greedy({1}, 5));
    ADD_FAILURE() << "accepted after shutdown";
  } catch (const Error& e) {
    EXPECT_MENTIONS(e.what(), "shut down");
  }
}

TEST(Executor, CallbackStreamsEveryTokenAndFinishesOnce) {
  Executor ex(fx().model, fx().tok, small_config());
  std::mutex mu;
  std::vector<int32_t> tokens;
  int finished = 0;
  std::condition_variable cv;
  ex.enqueue(greedy({1}, 12), [&](const Response& r) {
    std::lock_guard lk(mu);
    tokens.insert(tokens.end(), r.token_ids.begin(), r.token_ids.end());
    finished += r.finished;
    cv.notify_all();
  });
  std::unique_lock lk(mu);
  cv.wait(lk, [&] { return finished > 0; });
  EXPECT_EQ(tokens, run_alone(greedy({1}, 12)).tokens);
  lk.unlock();
  ex.shutdown(1000ms);
  EXPECT_EQ(finished, 1);
}

TEST(Executor, ShutdownCancelsWhatIsLeft) {
  Executor ex(fx().model, fx().tok, small_config());
  const RequestId a = ex.enqueue(greedy({1}, 1800));
  ex.shutdown(0ms);
  const Outcome o = collect(ex, a);
  EXPECT_EQ(o.reason, FinishReason::Cancelled);
  EXPECT_EQ(ex.stats().requests_finished, 1);
}

TEST(Executor, LLMWrapsTextInTextOut) {
  ExecutorConfig c = small_config();
  LLM llm(kModelPath, c);
  Request params;
  params.sampling.temperature = 0.0f;
  params.max_tokens = 16;
  const auto outs = llm.generate({"Once upon a time", "The dog"}, params);
  ASSERT_EQ(outs.size(), 2u);
  for (const auto& o : outs) {
    EXPECT_FALSE(o.text.empty());
    EXPECT_TRUE(o.finish_reason == FinishReason::Length || o.finish_reason == FinishReason::Stop);
  }
  Request dog = params;
  dog.prompt_ids = llm.tokenizer().encode("The dog", true);
  const Outcome direct = run_alone(dog);
  EXPECT_EQ(outs[1].text, direct.text);
  EXPECT_EQ(outs[1].token_ids, direct.tokens);
  EXPECT_EQ(llm.generate({"The dog"}, params)[0].token_ids, outs[1].token_ids);
}

// A device fault (LoadOptions::fault_after_steps: the CPU's simulated one; on CUDA the fault is real and poisons the
// process, so this runs on the CPU only) kills the engine: every accepted request ends with an error naming it,
// including one queued after the fault, enqueue refuses from then on, and stats() says so.
TEST(Executor, DeviceFaultKillsTheEngine) {
  if (test_load_options().device != Device::CPU) GTEST_SKIP() << "the CUDA fault is real: tests/server/engine_death_test.py";
  LoadOptions o;
  o.fault_after_steps = 2;
  std::shared_ptr<const Model> m = Model::load(kModelPath, o);
  Executor ex(m, nullptr, small_config());
  std::vector<RequestId> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(ex.enqueue(greedy({1, 5, 9, static_cast<int32_t>(20 + i)}, 10)));
  for (RequestId id : ids) {
    const Outcome o2 = collect(ex, id);
    EXPECT_EQ(o2.reason, FinishReason::Error);
    EXPECT_MENTIONS(o2.error, "engine dead");
    EXPECT_MENTIONS(o2.error, "simulated device fault");
  }
  const ExecutorStats s = ex.stats();
  EXPECT_TRUE(s.dead);
  EXPECT_MENTIONS(s.dead_reason, "simulated device fault");
  EXPECT_THROW(ex.enqueue(greedy({1, 2}, 2)), EngineDeadError);
  ex.shutdown(1s);  // returns: nothing is left running
}

}  // namespace
}  // namespace kiln
