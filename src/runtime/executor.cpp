// Executor: the engine thread (owns the model's KV pool, the KV cache manager and the scheduler) and the
// thread-safe front (enqueue, await_responses, cancel, stats, shutdown); LLM, text in and text out.
#include "kiln/executor.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>

#include "core/thread_pool.h"
#include "kiln/tokenizer.h"
#include "kiln/model.h"
#include "runtime/batch_builder.h"
#include "runtime/kv_cache_manager.h"
#include "runtime/memory_plan.h"
#include "runtime/sampler.h"
#include "runtime/scheduler.h"
#include "runtime/stop_strings.h"

namespace kiln {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::None: return "";
    case FinishReason::Length: return "length";
    case FinishReason::Stop: return "stop";
    case FinishReason::Cancelled: return "cancelled";
    case FinishReason::Error: return "error";
  }
  return "";
}

namespace {

// The tokenizer of a model path: the path itself, or for a llama2.c checkpoint the tokenizer beside it
// (tokenizer.bin, or tok<N>.bin).
std::unique_ptr<Tokenizer> tokenizer_for_model(const std::string& model_path) {
  namespace fs = std::filesystem;
  const fs::path p(model_path);
  if (p.extension() == ".bin") {
    const fs::path dir = p.parent_path().empty() ? fs::path(".") : p.parent_path();
    for (const auto& e : fs::directory_iterator(dir)) {
      const std::string name = e.path().filename().string();
      if (e.path() != p && (name == "tokenizer.bin" || (name.rfind("tok", 0) == 0 && e.path().extension() == ".bin")))
        return Tokenizer::from_path(e.path().string());
    }
    KILN_THROW("{}: no llama2.c tokenizer (tokenizer.bin or tok<N>.bin) beside the model", model_path);
  }
  return Tokenizer::from_path(model_path);
}

// One accepted request on the engine thread.
struct Active {
  Active(Request r, ResponseCallback cb)
      : req(std::move(r)), callback(std::move(cb)), sampler(req.sampling), stops(req.stop_strings) {}
  Request req;  // its seed resolved at enqueue
  ResponseCallback callback;
  Sequence seq;
  // The request's sampling: its parameters, its step and its penalty statistics, for either sampling path.
  Sampler sampler;
  StopStringFilter stops;
  std::unique_ptr<IncrementalDetokenizer> detok;
  std::vector<int32_t> stop_ids;  // sorted: EOS (unless ignore_eos) and the request's stop ids
  int64_t max_total = 0;          // prompt + generated tokens at most
  Response pending;               // what the next response carries
};

struct Incoming {
  RequestId id;
  Request request;
  ResponseCallback callback;
};

// ExecutorConfig::step_log_path: one tab-separated line per step, for finding where an engine step's time goes:
// when it started, its host phases (schedule and pack, the model's forward, the tokens' bookkeeping, and the
// rest of the loop before it: admission, cancels, handing out responses), the GPU time the model measured
// (-1 when it measures none), and the step's shape.
class StepLog {
 public:
  using Clock = std::chrono::steady_clock;
  explicit StepLog(const std::string& path) {
    if (path.empty()) return;
    f_ = std::fopen(path.c_str(), "w");
    KILN_CHECK(f_ != nullptr, "step log: cannot open {} for writing", path);
    std::fprintf(f_, "step\tt_ms\tloop_ms\tschedule_ms\tforward_ms\tpost_ms\tgpu_ms\tseqs\tdecodes\ttokens\n");
    origin_ = last_end_ = Clock::now();
  }
  ~StepLog() {
    if (f_) std::fclose(f_);
  }
  StepLog(const StepLog&) = delete;
  StepLog& operator=(const StepLog&) = delete;
  bool on() const { return f_ != nullptr; }
  static double ms(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
  }
  // t0 step start, t1 batch packed, t2 forward returned, t3 tokens handled.
  void write(Clock::time_point t0, Clock::time_point t1, Clock::time_point t2, Clock::time_point t3,
             double gpu_ms, int64_t seqs, int64_t decodes, int64_t tokens) {
    std::fprintf(f_, "%lld\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%lld\t%lld\t%lld\n", static_cast<long long>(n_++),
                 ms(origin_, t0), ms(last_end_, t0), ms(t0, t1), ms(t1, t2), ms(t2, t3), gpu_ms,
                 static_cast<long long>(seqs), static_cast<long long>(decodes), static_cast<long long>(tokens));
    last_end_ = t3;
  }

 private:
  std::FILE* f_ = nullptr;
  Clock::time_point origin_, last_end_;
  int64_t n_ = 0;
};

// Responses of a request enqueued without a callback, waiting for await_responses.
struct Mailbox {
  std::deque<Response> responses;
};

}  // namespace

struct Executor::Impl {
  Impl(std::shared_ptr<const Model> m, std::shared_ptr<const Tokenizer> t, ExecutorConfig c);
  ~Impl();

  RequestId enqueue(Request request, ResponseCallback callback);
  void validate(const Request& r) const;
  std::vector<Response> await_responses(RequestId id, std::chrono::milliseconds timeout);
  void cancel(RequestId id);
  void shutdown(std::chrono::milliseconds timeout);

  // Engine thread.
  void loop();
  void admit(Incoming& in);
  void step();
  void on_token(Active& a, const SampleResult& s);
  void finish(Active& a, FinishReason reason, std::string error = {});
  void die(const std::string& reason);
  void fail_all();
  void deliver(Active& a);
  void publish();
  bool idle_locked() const { return incoming_.empty() && active_count_ == 0; }

  std::shared_ptr<const Model> model_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  ExecutorConfig config_;
  std::vector<int32_t> eos_ids_;
  int64_t vocab_ = 0;
  int64_t max_seq_len_ = 0;

  // Engine state: touched by the engine thread only (built before it starts).
  std::unique_ptr<KvPool> pool_;
  std::unique_ptr<KvCacheManager> kv_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<BatchBuilder> builder_;
  std::unordered_map<RequestId, std::unique_ptr<Active>> active_;
  std::vector<Active*> step_actives_;        // the rows of this step's logits (reused across steps)
  std::vector<SampleResult> step_samples_;
  std::vector<RequestId> finished_now_;
  // Responses of this iteration, handed out after its bookkeeping (so stats() agree with a final response).
  struct Outgoing {
    const ResponseCallback* callback;  // null: to the mailbox
    Response response;
  };
  std::vector<Outgoing> outbox_;
  // Prompt progress of this iteration (Request::on_prefill_progress), reported before the responses.
  struct PrefillProgress {
    const std::function<void(int64_t, int64_t)>* callback;
    int64_t computed, prompt_len;
  };
  std::vector<PrefillProgress> progress_;
  std::vector<float> logits_;
  std::vector<RowSampling> step_rows_;  // device sampling: each logit row's parameters
  BatchSamples step_device_samples_;
  bool device_sampling_ = false;
  MemoryPlan plan_;
  std::unique_ptr<Workspace> ws_;
  std::unique_ptr<StepLog> step_log_;

  // Shared state, under mu_.
  mutable std::mutex mu_;
  std::condition_variable work_cv_;   // wakes the engine thread
  std::condition_variable resp_cv_;   // wakes await_responses
  std::condition_variable idle_cv_;   // wakes shutdown
  std::vector<Incoming> incoming_;
  std::vector<RequestId> cancels_;
  std::unordered_map<RequestId, Mailbox> mailboxes_;
  RequestId next_id_ = 1;
  std::mt19937_64 seed_rng_{std::random_device{}()};
  int64_t active_count_ = 0;  // accepted and not finished, as the engine thread last saw
  int64_t waiting_count_ = 0;
  bool accepting_ = true;
  bool cancel_all_ = false;
  std::string dead_reason_;  // set once the engine died (a device fault); enqueue refuses from then on
  bool stop_ = false;
  ExecutorStats stats_;

  std::thread thread_;
};

Executor::Impl::Impl(std::shared_ptr<const Model> m, std::shared_ptr<const Tokenizer> t, ExecutorConfig c)
    : model_(std::move(m)), tokenizer_(std::move(t)), config_(c) {
  KILN_CHECK(model_ != nullptr, "executor: no model");
  const ModelConfig& mc = model_->config();
  vocab_ = mc.vocab_size;
  KILN_CHECK(c.max_num_tokens > 0, "executor: max_num_tokens must be positive, got {}", c.max_num_tokens);
  KILN_CHECK(c.max_batch_size > 0, "executor: max_batch_size must be positive, got {}", c.max_batch_size);
  KILN_CHECK(c.block_size > 0 && c.block_size <= 4096, "executor: block_size must be in [1, 4096], got {}",
             c.block_size);
  KILN_CHECK(c.max_seq_len >= 0, "executor: max_seq_len must be >= 0, got {}", c.max_seq_len);
  KILN_CHECK(c.kv_cache_bytes >= 0, "executor: kv_cache_bytes must be >= 0, got {}", c.kv_cache_bytes);
  KILN_CHECK(c.max_queue >= 0, "executor: max_queue must be >= 0, got {}", c.max_queue);
  KILN_CHECK(c.kv_cache_fraction > 0.0 && c.kv_cache_fraction <= 1.0,
             "executor: kv_cache_fraction must be in (0, 1], got {}", c.kv_cache_fraction);

  if (tokenizer_) eos_ids_ = tokenizer_->eos_ids();
  for (int64_t e : mc.eos_token_ids) eos_ids_.push_back(static_cast<int32_t>(e));
  std::sort(eos_ids_.begin(), eos_ids_.end());
  eos_ids_.erase(std::unique(eos_ids_.begin(), eos_ids_.end()), eos_ids_.end());

  plan_ = plan_memory(*model_, c);
  max_seq_len_ = plan_.max_seq_len;
  pool_ = model_->new_kv_pool(plan_.num_blocks, c.block_size);
  ws_ = model_->new_workspace(c.max_num_tokens);
  device_sampling_ = c.device_sampling && model_->samples_on_device();
  kv_ = std::make_unique<KvCacheManager>(
      KvCacheManager::Config{plan_.num_blocks, c.block_size, c.enable_prefix_caching});
  scheduler_ = std::make_unique<Scheduler>(
      SchedulerConfig{c.max_num_tokens, c.max_batch_size,
                      c.prefill_first ? SchedulePolicy::PrefillFirst : SchedulePolicy::DecodeFirst},
      *kv_);
  builder_ = std::make_unique<BatchBuilder>(c.max_num_tokens, c.max_batch_size);
  step_log_ = std::make_unique<StepLog>(c.step_log_path);
  stats_.kv_blocks_total = plan_.num_blocks;
  stats_.kv_blocks_free = plan_.num_blocks;
  stats_.kv_cache_bytes = plan_.kv_cache;
  stats_.max_seq_len = max_seq_len_;
  thread_ = std::thread([this] { loop(); });
}

Executor::Impl::~Impl() {
  shutdown(std::chrono::milliseconds(0));
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  thread_.join();
}

void Executor::Impl::validate(const Request& r) const {
  const int64_t n = static_cast<int64_t>(r.prompt_ids.size());
  KILN_CHECK(n > 0, "request: the prompt is empty");
  for (int64_t i = 0; i < n; ++i)
    KILN_CHECK(r.prompt_ids[i] >= 0 && r.prompt_ids[i] < vocab_,
               "request: prompt token {} at index {} is outside the vocabulary [0, {})", r.prompt_ids[i], i, vocab_);
  KILN_CHECK(n < max_seq_len_,
             "request: the prompt has {} tokens but the context holds {} (the prompt must leave room for one more)",
             n, max_seq_len_);
  KILN_CHECK(r.max_tokens >= 1, "request: max_tokens must be >= 1, got {}", r.max_tokens);
  Sampler::validate(r.sampling);
  for (int32_t id : r.stop_token_ids)
    KILN_CHECK(id >= 0 && id < vocab_, "request: stop token id {} is outside the vocabulary [0, {})", id, vocab_);
  if (!r.stop_strings.empty())
    KILN_CHECK(tokenizer_ != nullptr, "request: stop strings need a tokenizer, and this executor has none");
  for (const std::string& s : r.stop_strings) KILN_CHECK(!s.empty(), "request: a stop string is empty");
}

RequestId Executor::Impl::enqueue(Request request, ResponseCallback callback) {
  validate(request);
  RequestId id = 0;
  {
    std::lock_guard lk(mu_);
    if (!dead_reason_.empty()) throw EngineDeadError("executor: the engine is dead: " + dead_reason_);
    KILN_CHECK(accepting_, "executor: shut down, no new requests are accepted");
    const int64_t queued = static_cast<int64_t>(incoming_.size()) + waiting_count_;
    if (config_.max_queue > 0 && queued >= config_.max_queue)
      throw QueueFullError(fmt::format("executor: the queue is full ({} requests waiting, max_queue {})", queued,
                                       config_.max_queue));
    id = next_id_++;
    // Resolved here, once: every path after this samples with the same seed.
    if (!request.sampling.seed) request.sampling.seed = seed_rng_();
    if (!callback) mailboxes_.emplace(id, Mailbox{});
    incoming_.push_back({id, std::move(request), std::move(callback)});
  }
  work_cv_.notify_one();
  return id;
}

std::vector<Response> Executor::Impl::await_responses(RequestId id, std::chrono::milliseconds timeout) {
  std::unique_lock lk(mu_);
  auto it = mailboxes_.find(id);
  KILN_CHECK(it != mailboxes_.end(),
             "executor: unknown request id {} (never enqueued, already fully collected, or streaming to a callback)",
             id);
  resp_cv_.wait_for(lk, timeout, [&] { return !it->second.responses.empty(); });
  std::vector<Response> out(std::make_move_iterator(it->second.responses.begin()),
                            std::make_move_iterator(it->second.responses.end()));
  it->second.responses.clear();
  if (!out.empty() && out.back().finished) mailboxes_.erase(it);
  return out;
}

void Executor::Impl::cancel(RequestId id) {
  {
    std::lock_guard lk(mu_);
    cancels_.push_back(id);
  }
  work_cv_.notify_one();
}

void Executor::Impl::shutdown(std::chrono::milliseconds timeout) {
  std::unique_lock lk(mu_);
  accepting_ = false;
  if (!idle_cv_.wait_for(lk, timeout, [&] { return idle_locked(); })) {
    cancel_all_ = true;
    work_cv_.notify_one();
    idle_cv_.wait(lk, [&] { return idle_locked(); });
  }
}

void Executor::Impl::loop() {
  std::vector<Incoming> incoming;
  std::vector<RequestId> cancels;
  for (;;) {
    bool cancel_all = false;
    {
      std::unique_lock lk(mu_);
      work_cv_.wait(lk, [&] {
        return stop_ || !incoming_.empty() || !cancels_.empty() || cancel_all_ || !active_.empty();
      });
      if (stop_ && incoming_.empty() && active_.empty()) return;
      incoming.swap(incoming_);
      cancels.swap(cancels_);
      cancel_all = cancel_all_;
      // Counted as active from here, so that shutdown never sees an accepted request as gone.
      active_count_ += static_cast<int64_t>(incoming.size());
    }
    for (Incoming& in : incoming) admit(in);
    incoming.clear();
    for (RequestId id : cancels) {
      auto it = active_.find(id);
      if (it != active_.end()) finish(*it->second, FinishReason::Cancelled);
    }
    cancels.clear();
    if (cancel_all)
      for (auto& [id, a] : active_) finish(*a, FinishReason::Cancelled);
    if (!dead_reason_.empty()) {
      fail_all();
    } else if (!active_.empty()) {
      try {
        step();
      } catch (const DeviceFault& e) {
        die(e.what());
      } catch (const std::exception& e) {
        // Not a request's fault that the loop can pin down: fail every request, keep the engine alive.
        for (auto& [id, a] : active_)
          if (!a->pending.finished) finish(*a, FinishReason::Error, std::string("internal error: ") + e.what());
      }
    }
    publish();
  }
}

// Updates the shared view, hands out the iteration's responses, then forgets finished requests.
void Executor::Impl::publish() {
  {
    std::lock_guard lk(mu_);
    waiting_count_ = scheduler_->num_waiting();
    stats_.queued = waiting_count_ + static_cast<int64_t>(incoming_.size());
    stats_.running = scheduler_->num_running();
    stats_.kv_blocks_free = kv_->num_free_blocks();
    stats_.kv_blocks_used = kv_->num_used_blocks();
    stats_.preemptions = scheduler_->num_preemptions();
    stats_.prefix_hit_rate = scheduler_->prefix_query_tokens() > 0
                                 ? static_cast<double>(scheduler_->prefix_hit_tokens()) /
                                       static_cast<double>(scheduler_->prefix_query_tokens())
                                 : 0.0;
    for (Outgoing& o : outbox_) {
      if (o.callback != nullptr) continue;
      auto it = mailboxes_.find(o.response.id);
      if (it != mailboxes_.end()) it->second.responses.push_back(std::move(o.response));
    }
  }
  resp_cv_.notify_all();
  for (const PrefillProgress& p : progress_) {
    try {
      (*p.callback)(p.computed, p.prompt_len);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "kiln: a prefill progress callback threw: %s\n", e.what());
    }
  }
  progress_.clear();
  for (Outgoing& o : outbox_) {
    if (o.callback == nullptr) continue;
    try {
      (*o.callback)(o.response);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "kiln: the response callback of request %llu threw: %s\n",
                   static_cast<unsigned long long>(o.response.id), e.what());
    }
  }
  outbox_.clear();
  for (RequestId id : finished_now_) active_.erase(id);
  finished_now_.clear();
  // Idle only once every callback has run: shutdown's caller may free what they use.
  std::lock_guard lk(mu_);
  active_count_ = static_cast<int64_t>(active_.size());
  if (idle_locked()) {
    cancel_all_ = false;
    idle_cv_.notify_all();
  }
}

void Executor::Impl::admit(Incoming& in) {
  auto a = std::make_unique<Active>(std::move(in.request), std::move(in.callback));
  Active& r = *a;
  r.seq.id = in.id;
  r.seq.priority = r.req.priority;
  r.seq.arrival = in.id;
  r.seq.tokens = r.req.prompt_ids;
  r.seq.tokens.reserve(r.req.prompt_ids.size() + static_cast<size_t>(std::min<int64_t>(r.req.max_tokens, 4096)));
  r.seq.prompt_len = static_cast<int64_t>(r.req.prompt_ids.size());
  r.max_total = std::min(r.seq.prompt_len + r.req.max_tokens, max_seq_len_);
  if (!r.req.ignore_eos) r.stop_ids = eos_ids_;
  r.stop_ids.insert(r.stop_ids.end(), r.req.stop_token_ids.begin(), r.req.stop_token_ids.end());
  std::sort(r.stop_ids.begin(), r.stop_ids.end());
  if (tokenizer_) r.detok = std::make_unique<IncrementalDetokenizer>(*tokenizer_, r.req.prompt_ids, true);
  r.sampler.add_prompt(r.req.prompt_ids);
  r.pending.id = in.id;
  r.pending.prompt_tokens = r.seq.prompt_len;
  scheduler_->add(&r.seq);
  active_.emplace(in.id, std::move(a));
}

void Executor::Impl::step() {
  const StepLog::Clock::time_point t0 = step_log_->on() ? StepLog::Clock::now() : StepLog::Clock::time_point{};
  const SchedulerOutput& out = scheduler_->schedule();
  if (out.scheduled.empty()) {
    // Everything running was preempted this round (the next admits again); nothing running and nothing
    // admitted would be a capacity bug, which must not spin silently.
    KILN_CHECK(!out.preempted.empty() || scheduler_->num_waiting() == 0 || scheduler_->num_running() > 0,
               "executor: no waiting request fits the empty KV cache");
    return;
  }
  const ForwardBatch& batch = builder_->build(out, *kv_);
  StepLog::Clock::time_point t1, t2;
  const std::vector<Sequence*>& seqs = builder_->logit_seqs();
  step_actives_.resize(seqs.size());
  step_samples_.resize(seqs.size());
  for (size_t i = 0; i < seqs.size(); ++i) step_actives_[i] = active_.at(seqs[i]->id).get();
  if (device_sampling_) {
    // The model samples where the logits are, reading each request's sampler; only ids and log-probs come back.
    step_rows_.resize(seqs.size());
    for (size_t i = 0; i < seqs.size(); ++i) {
      const Sampler& s = step_actives_[i]->sampler;
      step_rows_[i] = {s.params(), s.step(), s.penalties()};
    }
    if (step_log_->on()) t1 = StepLog::Clock::now();
    try {
      model_->forward_batch_sample(*pool_, *ws_, batch, step_rows_, step_device_samples_);
    } catch (const DeviceFault&) {
      throw;
    } catch (const std::exception& e) {
      for (const ScheduledSeq& s : out.scheduled) finish(*active_.at(s.seq->id), FinishReason::Error, e.what());
      return;
    }
    if (step_log_->on()) t2 = StepLog::Clock::now();
    scheduler_->finish_step(out);
    const BatchSamples& d = step_device_samples_;
    for (size_t i = 0; i < seqs.size(); ++i) {
      SampleResult& r = step_samples_[i];
      r.token = d.tokens[i];
      r.logprob = d.logprobs[i];
      r.top.clear();
      const int32_t k = step_rows_[i].params.logprobs;
      for (int32_t j = 0; j < k; ++j)
        r.top.push_back({d.top_ids[i * d.top_stride + j], static_cast<double>(d.top_logprobs[i * d.top_stride + j])});
    }
  } else {
    if (step_log_->on()) t1 = StepLog::Clock::now();
    try {
      model_->forward_batch(*pool_, *ws_, batch, logits_);
    } catch (const DeviceFault&) {
      throw;
    } catch (const std::exception& e) {
      for (const ScheduledSeq& s : out.scheduled) finish(*active_.at(s.seq->id), FinishReason::Error, e.what());
      return;
    }
    if (step_log_->on()) t2 = StepLog::Clock::now();
    scheduler_->finish_step(out);
    // Each row is sampled by its own request's sampler (a draw depends on its seed and step alone), so rows run
    // in parallel with the same result as one after another; tokens are then applied in row order.
    ThreadPool::global().parallel_for(static_cast<int64_t>(seqs.size()), 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const std::span<const float> row(logits_.data() + i * static_cast<size_t>(vocab_),
                                         static_cast<size_t>(vocab_));
        step_samples_[i] = step_actives_[i]->sampler.sample(row);
      }
    });
  }
  for (const ScheduledSeq& s : out.scheduled) {
    const Sequence& q = *s.seq;  // num_computed already counts this step's tokens
    const auto& cb = active_.at(q.id)->req.on_prefill_progress;
    if (cb && q.num_computed - s.num_tokens < q.prompt_len)
      progress_.push_back({&cb, std::min(q.num_computed, q.prompt_len), q.prompt_len});
  }
  for (size_t i = 0; i < seqs.size(); ++i) on_token(*step_actives_[i], step_samples_[i]);
  if (step_log_->on()) {
    int64_t decodes = 0;
    for (const ScheduledSeq& s : out.scheduled)  // (num_computed already counts this step's token)
      decodes += s.num_tokens == 1 && s.seq->num_computed - 1 >= s.seq->prompt_len;
    step_log_->write(t0, t1, t2, StepLog::Clock::now(), device_sampling_ ? model_->stats().last_step_gpu_ms : -1.0,
                    static_cast<int64_t>(out.scheduled.size()), decodes, out.num_tokens);
  }
  std::lock_guard lk(mu_);
  ++stats_.steps;
  stats_.tokens_last_step = out.num_tokens;
  stats_.peak_running = std::max(stats_.peak_running, static_cast<int64_t>(out.scheduled.size()));
}

// A device fault: nothing more can run. Every request ends with the reason, enqueue refuses from now on, and
// stats() says so (the server answers 503 and exits).
void Executor::Impl::die(const std::string& reason) {
  std::fprintf(stderr, "kiln: engine dead: %s\n", reason.c_str());
  {
    std::lock_guard lk(mu_);
    dead_reason_ = reason;
    stats_.dead = true;
    stats_.dead_reason = reason;
    accepting_ = false;
  }
  fail_all();
}

// Ends every accepted request with the engine's death (requests that arrived after the fault included).
void Executor::Impl::fail_all() {
  for (auto& [id, a] : active_)
    if (!a->pending.finished) finish(*a, FinishReason::Error, "engine dead: " + dead_reason_);
}

void Executor::Impl::on_token(Active& a, const SampleResult& s) {
  a.seq.tokens.push_back(s.token);
  a.sampler.accept(s.token);
  Response& r = a.pending;
  r.token_ids.push_back(s.token);
  TokenLogprobs lp;
  lp.token_id = s.token;
  lp.logprob = s.logprob;
  for (const TokenLogprob& t : s.top) lp.top.emplace_back(t.id, t.logprob);
  r.logprobs.push_back(std::move(lp));
  ++r.generated_tokens;
  if (a.seq.cached_prompt_tokens >= 0) r.cached_prompt_tokens = a.seq.cached_prompt_tokens;

  if (std::binary_search(a.stop_ids.begin(), a.stop_ids.end(), s.token)) return finish(a, FinishReason::Stop);
  if (a.detok) {
    r.text += a.stops.push(a.detok->push(s.token));
    if (a.stops.stopped()) return finish(a, FinishReason::Stop);
  }
  if (r.generated_tokens >= a.req.max_tokens || static_cast<int64_t>(a.seq.tokens.size()) >= a.max_total)
    return finish(a, FinishReason::Length);
  deliver(a);
}

void Executor::Impl::finish(Active& a, FinishReason reason, std::string error) {
  if (a.pending.finished) return;
  if (a.detok && reason != FinishReason::Stop && reason != FinishReason::Error) {
    a.pending.text += a.stops.push(a.detok->flush());
    if (a.stops.stopped()) {
      reason = FinishReason::Stop;
    } else {
      a.pending.text += a.stops.flush();
    }
  }
  a.pending.finished = true;
  a.pending.finish_reason = reason;
  a.pending.error = std::move(error);
  if (a.seq.cached_prompt_tokens >= 0) a.pending.cached_prompt_tokens = a.seq.cached_prompt_tokens;
  scheduler_->remove(&a.seq);
  deliver(a);
  finished_now_.push_back(a.seq.id);
  std::lock_guard lk(mu_);
  ++stats_.requests_finished;
}

void Executor::Impl::deliver(Active& a) {
  Response r = std::move(a.pending);
  a.pending = Response{};
  a.pending.id = r.id;
  a.pending.prompt_tokens = r.prompt_tokens;
  a.pending.cached_prompt_tokens = r.cached_prompt_tokens;
  a.pending.generated_tokens = r.generated_tokens;
  a.pending.finished = r.finished;  // a finished request takes no more
  outbox_.push_back({a.callback ? &a.callback : nullptr, std::move(r)});
}

Executor::Executor(std::shared_ptr<const Model> model, std::shared_ptr<const Tokenizer> tokenizer,
                   ExecutorConfig config)
    : impl_(std::make_unique<Impl>(std::move(model), std::move(tokenizer), config)) {}

Executor::~Executor() = default;

RequestId Executor::enqueue(Request request, ResponseCallback callback) {
  return impl_->enqueue(std::move(request), std::move(callback));
}

std::vector<Response> Executor::await_responses(RequestId id, std::chrono::milliseconds timeout) {
  return impl_->await_responses(id, timeout);
}

void Executor::cancel(RequestId id) { impl_->cancel(id); }

ExecutorStats Executor::stats() const {
  std::lock_guard lk(impl_->mu_);
  return impl_->stats_;
}

void Executor::shutdown(std::chrono::milliseconds timeout) { impl_->shutdown(timeout); }

const ExecutorConfig& Executor::config() const { return impl_->config_; }

const MemoryPlan& Executor::memory_plan() const { return impl_->plan_; }

LLM::LLM(const std::string& model_path, ExecutorConfig config) : LLM(model_path, LoadOptions{}, config) {}

LLM::LLM(const std::string& model_path, const LoadOptions& load, ExecutorConfig config) {
  model_ = Model::load(model_path, load);
  tokenizer_ = tokenizer_for_model(model_path);
  executor_ = std::make_unique<Executor>(model_, tokenizer_, config);
}

LLM::~LLM() = default;

std::vector<LLM::Output> LLM::generate(const std::vector<std::string>& prompts, const Request& params) {
  std::vector<RequestId> ids;
  try {
    for (const std::string& p : prompts) {
      Request r = params;
      r.prompt_ids = tokenizer_->encode(p, /*add_special=*/true);
      ids.push_back(executor_->enqueue(std::move(r)));
    }
  } catch (...) {
    // Nothing is left running behind the caller's back.
    for (RequestId id : ids) executor_->cancel(id);
    for (RequestId id : ids)
      for (bool done = false; !done;)
        for (const Response& r : executor_->await_responses(id, std::chrono::milliseconds(1000))) done |= r.finished;
    throw;
  }
  std::vector<Output> outs(prompts.size());
  std::string error;
  for (size_t i = 0; i < ids.size(); ++i) {
    for (bool done = false; !done;) {
      for (Response& r : executor_->await_responses(ids[i], std::chrono::milliseconds(1000))) {
        outs[i].text += r.text;
        outs[i].token_ids.insert(outs[i].token_ids.end(), r.token_ids.begin(), r.token_ids.end());
        if (r.finished) {
          done = true;
          outs[i].finish_reason = r.finish_reason;
          if (r.finish_reason == FinishReason::Error && error.empty()) error = r.error;
        }
      }
    }
  }
  KILN_CHECK(error.empty(), "generate: {}", error);
  return outs;
}

Executor& LLM::executor() { return *executor_; }

const Tokenizer& LLM::tokenizer() const { return *tokenizer_; }

}  // namespace kiln
