// Executor: the public C++ API of the runtime. A thread that owns the model and the KV cache runs
// in-flight batching over every accepted request; clients enqueue requests and receive streamed
// responses through a callback or await_responses. LLM wraps it with text in, text out.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kiln/error.h"

namespace kiln {

class Model;
class Tokenizer;

using RequestId = uint64_t;

// Thrown by enqueue when the waiting queue is at its limit (the server answers 429).
class QueueFullError : public Error {
 public:
  using Error::Error;
};

struct RequestSampling {
  float temperature = 1.0f;  // 0: greedy
  int32_t top_k = 0;         // 0: off
  float top_p = 1.0f;        // 1: off
  float min_p = 0.0f;        // 0: off
  float repetition_penalty = 1.0f;  // HF style, over prompt and output tokens; 1: off
  float presence_penalty = 0.0f;    // OpenAI style, over output tokens
  float frequency_penalty = 0.0f;   // OpenAI style, over output tokens
  std::optional<uint64_t> seed;     // none: drawn from the executor's generator
  int32_t logprobs = 0;             // top alternatives reported per generated token (0: only the chosen one's)
};

struct Request {
  std::vector<int32_t> prompt_ids;
  RequestSampling sampling;
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

struct ExecutorConfig {
  int64_t max_num_tokens = 2048;   // token budget of one step
  int32_t max_batch_size = 64;     // running requests at most
  int64_t max_seq_len = 0;         // 0: the model's context length
  int32_t block_size = 16;         // tokens per KV block
  int64_t kv_cache_bytes = 0;      // 0: use kv_cache_fraction
  double kv_cache_fraction = 0.5;  // of the memory free after weights (CPU: of MemAvailable)
  bool enable_prefix_caching = true;
  int64_t max_queue = 0;           // waiting requests at most (0: unbounded); beyond it enqueue throws QueueFullError
  // What a step's token budget serves first: running decodes (false, the default: a long prompt never stalls
  // them) or prompts (true: a burst of requests finishes sooner, as its requests then decode in large batches,
  // but running decodes wait while prompts fill the budget).
  bool prefill_first = false;
  // Sample on the device when the model can (Model::samples_on_device: the CUDA backend), so logits never
  // leave it. Same semantics as the CPU Sampler, but seeded draws come from a different generator (Philox keyed
  // by seed and token index instead of mt19937): a seed repeats on one path, not across the two.
  bool device_sampling = true;
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

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Text in, text out, over an Executor.
class LLM {
 public:
  explicit LLM(const std::string& model_path, ExecutorConfig config = {});
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
