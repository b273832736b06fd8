// The OpenAI protocol of `kiln serve`: request parsing and validation for /v1/completions and
// /v1/chat/completions, OpenAI-shaped errors, response and stream-chunk bodies, SSE framing.
// Pure functions over JSON, so they are tested without a model or a socket.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "kiln/executor.h"

namespace kiln::server {

using ojson = nlohmann::ordered_json;

// An error answered with an OpenAI-shaped body: {"error": {"message", "type", "param", "code"}}.
struct ApiError : std::runtime_error {
  ApiError(int status, std::string message, std::string param = {}, std::string code = {},
           std::string type = "invalid_request_error")
      : std::runtime_error(message),
        status(status),
        type(std::move(type)),
        param(std::move(param)),
        code(std::move(code)) {}
  int status;
  std::string type;
  std::string param;  // empty: null
  std::string code;   // empty: null
};
ojson error_body(const ApiError& e);

// What a request is checked against.
struct ModelInfo {
  std::string name;            // the served model name; requests naming another are refused
  int64_t context_length = 0;  // prompt + generated tokens at most
  int32_t vocab_size = 0;
  int64_t created = 0;  // unix time, for /v1/models
};

enum class Endpoint { Completions, ChatCompletions };

// A /v1/completions prompt: text, or token ids.
struct PromptInput {
  std::optional<std::string> text;
  std::vector<int32_t> ids;
};

struct GenerationRequest {
  Endpoint endpoint = Endpoint::Completions;
  std::string model;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  int n = 1;
  // /v1/completions
  std::vector<PromptInput> prompts;
  bool echo = false;
  // /v1/chat/completions: content parts flattened to strings, tool-call arguments parsed to objects.
  ojson messages = ojson::array();
  ojson tools;  // null when none
  bool add_generation_prompt = true;
  ojson chat_template_kwargs = ojson::object();
  // Both
  int logprobs = -1;  // -1: none; else the number of top alternatives reported per token
  std::optional<int64_t> max_tokens;
  RequestSampling sampling;
  std::vector<std::string> stop;
  bool ignore_eos = false;
};

// Limits on what one request may ask for.
inline constexpr int kMaxN = 16;
inline constexpr int kMaxLogprobs = 20;
inline constexpr int kMaxStopStrings = 16;
inline constexpr int kMaxJsonDepth = 64;

// Parses and validates a request body; throws ApiError (400) naming the offending field.
GenerationRequest parse_request(Endpoint endpoint, const ojson& body, const ModelInfo& model);
// Parses a body as JSON (throws ApiError 400 for malformed JSON, a non-object or nesting beyond
// kMaxJsonDepth).
ojson parse_body(const std::string& body);

// Checks a tokenized prompt against the context and returns the max_tokens to run with: as asked,
// or by default 16 for completions and the rest of the context for chat. Throws ApiError 400.
int64_t settle_max_tokens(const GenerationRequest& r, int64_t prompt_tokens, int64_t context_length);

// "stop", "length", or "abort" (cancelled) / "error".
const char* finish_reason_text(FinishReason r);

// One choice's output as it accumulates.
struct ChoiceOutput {
  std::string text;
  std::vector<int32_t> token_ids;
  std::vector<TokenLogprobs> logprobs;
  FinishReason finish_reason = FinishReason::None;
  std::string error;
  int64_t prompt_tokens = 0;
  int64_t cached_prompt_tokens = 0;
  int64_t generated_tokens = 0;
  int32_t context_token = -1;  // the prompt's last token: what the first generated token follows
};

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;
};
ojson usage_json(const Usage& u);

// The text of token `id` as logprobs report it, following token `prev` (-1: none), so that the
// leading space SentencePiece tokens carry only after other text is kept.
using TokenText = std::function<std::string(int32_t prev, int32_t id)>;

// Logprobs bodies: completions ({"tokens", "token_logprobs", "top_logprobs", "text_offset"}) and
// chat ({"content": [{"token", "logprob", "bytes", "top_logprobs"}]}). prev: the token before the
// first one (the prompt's last), -1 when none.
ojson completion_logprobs(const std::vector<TokenLogprobs>& lps, const TokenText& text, int64_t text_offset,
                          int32_t prev = -1);
ojson chat_logprobs(const std::vector<TokenLogprobs>& lps, const TokenText& text, int32_t prev = -1);

struct ResponseHeader {
  std::string id;  // cmpl-... or chatcmpl-...
  int64_t created = 0;
  std::string model;
};

// Whole (non-streamed) responses. echo_texts: per choice, the prompt text put before it (echo).
ojson completion_response(const ResponseHeader& h, const std::vector<ChoiceOutput>& choices,
                          const std::vector<std::string>& echo_texts, int logprobs, const Usage& usage,
                          const TokenText& text);
ojson chat_response(const ResponseHeader& h, const std::vector<ChoiceOutput>& choices, int logprobs, const Usage& usage,
                    const TokenText& text);

// Stream chunks. logprobs may be null. With include_usage every chunk carries "usage": null and a
// last chunk with no choices carries the totals.
ojson completion_chunk(const ResponseHeader& h, int index, const std::string& text, ojson logprobs,
                       const char* finish_reason, bool include_usage);
ojson chat_chunk(const ResponseHeader& h, int index, ojson delta, ojson logprobs, const char* finish_reason,
                 bool include_usage);
ojson usage_chunk(const ResponseHeader& h, bool chat, const Usage& usage);

// Server-sent events framing.
std::string sse_data(const ojson& j);
inline const char* sse_done() {
  return "data: [DONE]\n\n";
}

// A random id with a prefix ("cmpl-", "chatcmpl-").
std::string make_id(const char* prefix);

}  // namespace kiln::server
