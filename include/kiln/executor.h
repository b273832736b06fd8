// Executor: the public C++ API of the runtime. A thread that owns the model and the KV cache runs
// in-flight batching over every accepted request; clients enqueue requests and receive streamed
// responses through a callback or await_responses. LLM wraps it with text in, text out.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kiln/error.h"
#include "kiln/sampling.h"
#include "kiln/tensor.h"

namespace kiln {

class Model;
class Tokenizer;
struct LoadOptions;

using RequestId = uint64_t;

// Thrown by enqueue when the waiting queue is at its limit (the server answers 429).
class QueueFullError : public Error {
 public:
  using Error::Error;
};

// Thrown by enqueue once the engine is dead (a device fault it cannot recover from: ExecutorStats::dead).
class EngineDeadError : public Error {
 public:
  using Error::Error;
};

struct Request {
  std::vector<int32_t> prompt_ids;
  SamplingParams sampling;  // an unset seed is drawn from the executor's generator at enqueue
  int64_t max_tokens = 16;
  std::vector<int32_t> stop_token_ids;  // in addition to the tokenizer's EOS ids unless ignore_eos
  std::vector<std::string> stop_strings;  // found across token boundaries; never emitted
  bool ignore_eos = false;
  int32_t priority = 0;  // higher runs first; equal priorities are first come, first served
  // Called on the executor thread after each step that computed part of the prompt, with the prompt tokens
  // computed so far (those found in the prefix cache included) and the prompt's length; the call that reaches
  // the length comes before the response with the first token. Must be quick. (`kiln generate` draws a
  // long prompt's progress with it.)
  std::function<void(int64_t computed, int64_t prompt_len)> on_prefill_progress;
};

enum class FinishReason { None, Length, Stop, Cancelled, Error };
const char* finish_reason_name(FinishReason r);  // "length", "stop", "cancelled", "error"; "" for None

struct TokenLogprobs {
  int32_t token_id = 0;
  double logprob = 0.0;
  std::vector<std::pair<int32_t, double>> top;  // best first
};

// One streamed piece of a request's output. Every request gets exactly one response with
// finished == true, and none after it.
struct Response {
  RequestId id = 0;
  std::vector<int32_t> token_ids;      // tokens generated since the previous response
  std::string text;                    // their text (complete UTF-8; held back while it may start a stop string)
  std::vector<TokenLogprobs> logprobs; // one per token in token_ids
  bool finished = false;
  FinishReason finish_reason = FinishReason::None;
  std::string error;                   // when finish_reason == Error
  int64_t prompt_tokens = 0;
  int64_t cached_prompt_tokens = 0;    // prompt tokens served from the prefix cache
  int64_t generated_tokens = 0;        // total so far
};

using ResponseCallback = std::function<void(const Response&)>;

// Where the engine's memory goes, decided once at start (Executor::memory_plan): the weights (already loaded), the
// workspace of a step of max_num_tokens rows, and the KV cache from what is left. On a device the engine takes at
// most kv_cache_fraction of the device's memory in all (what other processes and the CUDA context use counts
// against it, as vLLM's gpu_memory_utilization does); the KV cache is what remains of it after the weights and the
// workspace, capped by kv_cache_bytes when given. On the CPU the KV cache is kv_cache_bytes, or kCpuKvCacheBytes.
struct MemoryPlan {
  Device device = Device::CPU;
  int64_t device_total = 0;    // the device's memory (CPU: MemTotal)
  int64_t in_use_before = 0;   // in use when the plan was made (weights, context, other processes); CPU: 0
  int64_t weights = 0;
  int64_t workspace = 0;
  int64_t kv_cache = 0;        // bytes of the pool
  int64_t num_blocks = 0;
  int32_t block_size = 0;
  int64_t max_seq_len = 0;     // the context a request gets
  int64_t model_context = 0;   // the context asked for (max_seq_len, else the model's); more than max_seq_len when
                               // the model's does not fit the cache and was shortened
  int64_t tokens() const { return num_blocks * block_size; }
  // Requests of `tokens_per_request` tokens (prompt + output) that fit the cache at once.
  int64_t concurrency(int64_t tokens_per_request) const;
  // One line: "weights 14.96 GiB, workspace 1.23 GiB, KV cache 52.10 GiB (26675 blocks, 426800 tokens; 208 requests
  // of 2048 tokens at once) on NVIDIA H100 80GB HBM3 (79.1 GiB, 90% used at most)".
  std::string describe(int64_t tokens_per_request) const;
};
// The CPU's KV cache when no kv_cache_bytes is given: 4 GiB (reserved, committed as blocks are first written).
inline constexpr int64_t kCpuKvCacheBytes = int64_t{4} << 30;

struct ExecutorConfig {
  int64_t max_num_tokens = 2048;   // token budget of one step (and the workspace's rows)
  int32_t max_batch_size = 64;     // running requests at most
  int64_t max_seq_len = 0;         // 0: the model's context length
  int32_t block_size = 16;         // tokens per KV block
  int64_t kv_cache_bytes = 0;      // the KV cache at most (0: the device plan, or kCpuKvCacheBytes on the CPU)
  double kv_cache_fraction = 0.9;  // of the device's memory the engine takes in all (MemoryPlan)
  bool enable_prefix_caching = true;
  int64_t max_queue = 0;           // waiting requests at most (0: unbounded); beyond it enqueue throws QueueFullError
  // What a step's token budget serves first: running decodes (false, the default: a long prompt never stalls
  // them) or prompts (true: a burst of requests finishes sooner, as its requests then decode in large batches,
  // but running decodes wait while prompts fill the budget).
  bool prefill_first = false;
  // Sample on the device when the model can (Model::samples_on_device: the CUDA backend), so logits never
  // leave it. The same sampling as the CPU Sampler, draws included (one counter-based generator keyed by the seed
  // and the token's step): a seeded request samples the same tokens on either path, up to rounding near a tie.
  bool device_sampling = true;
  // A file to write one tab-separated line per step to (when it started, its host phases, the GPU time the model
  // measured with LoadOptions::time_steps, its shape); empty: none. bench/step_log_summary.py sums it per step kind.
  std::string step_log_path;
};

struct ExecutorStats {
  int64_t queued = 0;
  int64_t running = 0;
  int64_t kv_blocks_total = 0;
  int64_t kv_blocks_used = 0;
  int64_t kv_blocks_free = 0;       // includes cached blocks nobody references
  double prefix_hit_rate = 0.0;     // prompt tokens found in the cache / prompt tokens looked up
  int64_t steps = 0;
  int64_t tokens_last_step = 0;
  int64_t preemptions = 0;
  int64_t requests_finished = 0;
  int64_t kv_cache_bytes = 0;       // the KV pool as sized at start
  int64_t max_seq_len = 0;          // the context a request gets: config, model and KV pool limits applied
  int64_t peak_running = 0;         // the most requests that ran in one step so far
  // The engine died (a device fault it cannot recover from): every request ended with an error, enqueue throws
  // EngineDeadError, and dead_reason says why.
  bool dead = false;
  std::string dead_reason;
};

class Executor {
 public:
  // tokenizer may be null: then stop strings are refused and responses carry no text.
  Executor(std::shared_ptr<const Model> model, std::shared_ptr<const Tokenizer> tokenizer, ExecutorConfig config = {});
  ~Executor();  // cancels what is left and joins the thread
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Validates and queues a request. Throws kiln::Error for an invalid one (empty prompt, prompt
  // longer than the context, bad sampling values, ids out of range) and QueueFullError when full.
  // The callback, if any, runs on the executor thread and must be quick.
  RequestId enqueue(Request request, ResponseCallback callback = {});
  // Waits up to `timeout` for responses of a request enqueued without a callback; returns what has
  // arrived (possibly nothing). Throws kiln::Error for an unknown id.
  std::vector<Response> await_responses(RequestId id, std::chrono::milliseconds timeout);
  // Ends a request early with FinishReason::Cancelled; unknown or finished ids are ignored.
  void cancel(RequestId id);
  ExecutorStats stats() const;
  // Stops accepting (enqueue throws), lets running and queued requests finish for up to `timeout`,
  // then cancels the rest. Returns once the loop is idle.
  void shutdown(std::chrono::milliseconds timeout);

  const ExecutorConfig& config() const;
  const MemoryPlan& memory_plan() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Text in, text out, over an Executor.
class LLM {
 public:
  explicit LLM(const std::string& model_path, ExecutorConfig config = {});
  LLM(const std::string& model_path, const LoadOptions& load, ExecutorConfig config = {});
  ~LLM();
  struct Output {
    std::string text;
    std::vector<int32_t> token_ids;
    FinishReason finish_reason = FinishReason::None;
  };
  // Runs every prompt as one in-flight batch; outputs in the order of the prompts.
  std::vector<Output> generate(const std::vector<std::string>& prompts, const Request& params);
  Executor& executor();
  const Tokenizer& tokenizer() const;

 private:
  std::shared_ptr<const Model> model_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  std::unique_ptr<Executor> executor_;
};

}  // namespace kiln
