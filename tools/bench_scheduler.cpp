// bench_scheduler: the runtime's per-step cost (scheduling, KV block bookkeeping, batch packing) at a
// given decode batch size, against the CPU decode step of a real model at the same batch size.
// Usage: bench_scheduler [--batch 256] [--context 128] [--steps 200] [--block-size 16] [MODEL ...]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kiln/model.h"
#include "runtime/batch_builder.h"
#include "runtime/kv_cache_manager.h"
#include "runtime/scheduler.h"

using namespace kiln;
using Clock = std::chrono::steady_clock;

namespace {

struct Args {
  int batch = 256;
  int context = 128;
  int steps = 200;
  int block_size = 16;
  std::vector<std::string> models;
};

// `batch` sequences of `context` prompt tokens, then decoding: what the scheduler sees at steady state.
struct DecodeState {
  DecodeState(const Args& a, int64_t extra_tokens, int32_t vocab)
      : kv({static_cast<int64_t>(a.batch) * ((a.context + extra_tokens) / a.block_size + 2), a.block_size, true}),
        sched({std::max<int64_t>(4096, a.batch), a.batch}, kv),
        builder(std::max<int64_t>(4096, a.batch), a.batch) {
    std::mt19937 rng(1);
    for (int i = 0; i < a.batch; ++i) {
      auto s = std::make_unique<Sequence>();
      s->id = s->arrival = static_cast<uint64_t>(i);
      for (int t = 0; t < a.context; ++t) s->tokens.push_back(static_cast<int32_t>(rng() % vocab));
      s->prompt_len = a.context;
      sched.add(s.get());
      seqs.push_back(std::move(s));
    }
  }
  // Runs steps (through the model when given) until every sequence is decoding; returns the steps run.
  // Each step samples token 7 for the sequences that reached their end.
  int64_t step(const Model* m, KvPool* pool, Workspace* ws, std::vector<float>& logits) {
    const SchedulerOutput& out = sched.schedule();
    const ForwardBatch& b = builder.build(out, kv);
    if (m != nullptr) m->forward_batch(*pool, *ws, b, logits);
    sched.finish_step(out);
    for (Sequence* s : builder.logit_seqs()) s->tokens.push_back(7);
    return static_cast<int64_t>(b.tokens.size());
  }
  void prefill(const Model* m, KvPool* pool, Workspace* ws, std::vector<float>& logits) {
    auto decoding = [&] {
      for (auto& s : seqs)
        if (s->tokens_left() != 1) return false;
      return true;
    };
    while (!decoding()) step(m, pool, ws, logits);
  }
  KvCacheManager kv;
  Scheduler sched;
  BatchBuilder builder;
  std::vector<std::unique_ptr<Sequence>> seqs;
};

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    auto num = [&](int& v) {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench_scheduler: %s needs a value\n", argv[i]);
        std::exit(2);
      }
      v = std::atoi(argv[++i]);
    };
    if (!std::strcmp(argv[i], "--batch")) {
      num(a.batch);
    } else if (!std::strcmp(argv[i], "--context")) {
      num(a.context);
    } else if (!std::strcmp(argv[i], "--steps")) {
      num(a.steps);
    } else if (!std::strcmp(argv[i], "--block-size")) {
      num(a.block_size);
    } else {
      a.models.push_back(argv[i]);
    }
  }
  if (a.batch < 1 || a.context < 1 || a.steps < 1 || a.block_size < 1) {
    std::fprintf(stderr, "bench_scheduler: --batch, --context, --steps and --block-size must be positive\n");
    return 2;
  }

  // 1. Scheduler + KV bookkeeping + packing per decode step, no model.
  DecodeState st(a, a.steps + 1, 32000);
  std::vector<float> logits;
  st.prefill(nullptr, nullptr, nullptr, logits);
  double sched_ms = 0, pack_ms = 0, finish_ms = 0;
  int64_t rows = 0;
  for (int step = 0; step < a.steps; ++step) {
    auto t0 = Clock::now();
    const SchedulerOutput& out = st.sched.schedule();
    sched_ms += ms_since(t0);
    t0 = Clock::now();
    const ForwardBatch& b = st.builder.build(out, st.kv);
    pack_ms += ms_since(t0);
    rows += static_cast<int64_t>(b.tokens.size());
    t0 = Clock::now();
    st.sched.finish_step(out);
    for (Sequence* s : st.builder.logit_seqs()) s->tokens.push_back(7);
    finish_ms += ms_since(t0);
  }
  const double per_step = (sched_ms + pack_ms + finish_ms) / a.steps;
  std::printf("runtime per decode step at batch %d (context %d, block %d): schedule %.1f us, pack %.1f us, "
              "finish %.1f us, total %.1f us (%lld rows/step)\n",
              a.batch, a.context, a.block_size, 1e3 * sched_ms / a.steps, 1e3 * pack_ms / a.steps,
              1e3 * finish_ms / a.steps, 1e3 * per_step, static_cast<long long>(rows / a.steps));
  std::fflush(stdout);

  // 2. The model's decode step at the same batch: forward_batch of one token per sequence, after a real
  // prefill of every context (so attention reads real K/V).
  for (const std::string& path : a.models) {
    std::unique_ptr<Model> m = Model::load(path);
    const int model_steps = 5;
    DecodeState ms(a, model_steps + 2, static_cast<int32_t>(m->config().vocab_size));
    auto pool = m->new_kv_pool(ms.kv.num_blocks(), a.block_size);
    auto ws = m->new_workspace(std::max<int64_t>(4096, a.batch));
    auto t0 = Clock::now();
    ms.prefill(m.get(), pool.get(), ws.get(), logits);
    const double prefill_s = ms_since(t0) / 1e3;
    ms.step(m.get(), pool.get(), ws.get(), logits);  // warm-up
    t0 = Clock::now();
    for (int step = 0; step < model_steps; ++step) ms.step(m.get(), pool.get(), ws.get(), logits);
    const double step_ms = ms_since(t0) / model_steps;
    std::printf("%s (%.2fM parameters): prefill of %d x %d tokens in %.1f s; decode step at batch %d (forward "
                "incl. packing): %.2f ms; runtime share %.3f%%\n",
                path.c_str(), m->num_parameters() / 1e6, a.batch, a.context, prefill_s, a.batch, step_ms,
                100.0 * per_step / step_ms);
    std::fflush(stdout);
  }
  return 0;
}
