// The OpenAI protocol of `kiln serve` without a socket: request validation (every refusal is a 400
// naming its field), context checks, response and chunk shapes, SSE framing, Prometheus text.
#include <gtest/gtest.h>

#include "server/metrics.h"
#include "server/protocol.h"

namespace kiln::server {
namespace {

ModelInfo info() {
  ModelInfo m;
  m.name = "tiny";
  m.context_length = 128;
  m.vocab_size = 1000;
  return m;
}

GenerationRequest parse(Endpoint e, const std::string& body) {
  return parse_request(e, parse_body(body), info());
}

// The ApiError a body gets, as (status, param).
std::pair<int, std::string> refusal(Endpoint e, const std::string& body) {
  try {
    parse(e, body);
  } catch (const ApiError& err) {
    return {err.status, err.param};
  }
  return {200, ""};
}

TEST(ServerProtocol, CompletionDefaults) {
  GenerationRequest r = parse(Endpoint::Completions, R"({"model": "tiny", "prompt": "hi"})");
  ASSERT_EQ(r.prompts.size(), 1u);
  EXPECT_EQ(*r.prompts[0].text, "hi");
  EXPECT_FALSE(r.stream);
  EXPECT_EQ(r.n, 1);
  EXPECT_EQ(r.logprobs, -1);
  EXPECT_FALSE(r.max_tokens.has_value());
  EXPECT_FLOAT_EQ(r.sampling.temperature, 1.0f);
  EXPECT_EQ(settle_max_tokens(r, 10, 128), 16);  // OpenAI's default for completions
}

// Fields kiln does not know are ignored, as OpenAI ignores them; an empty tools list asks for no tools.
TEST(ServerProtocol, UnknownFieldsAreIgnored) {
  EXPECT_EQ(refusal(Endpoint::Completions, R"({"prompt": "hi", "frobnicate": {"x": 1}, "user": "u"})").first, 200);
  EXPECT_EQ(refusal(Endpoint::ChatCompletions,
                    R"({"messages": [{"role": "user", "content": "x"}], "metadata": {"a": "b"}, "tools": []})")
                .first,
            200);
  const auto [status, param] = refusal(
      Endpoint::ChatCompletions,
      R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {"name": "f"}}]})");
  EXPECT_EQ(status, 400);
  EXPECT_EQ(param, "tools");
}

TEST(ServerProtocol, CompletionFields) {
  GenerationRequest r = parse(Endpoint::Completions, R"({
      "prompt": [[1, 2, 3], [4, 5]], "max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "top_k": 40,
      "min_p": 0.05, "presence_penalty": 0.5, "frequency_penalty": -0.5, "repetition_penalty": 1.1,
      "seed": 42, "stop": ["\n", "END"], "n": 3, "logprobs": 5, "stream": true,
      "stream_options": {"include_usage": true}, "user": "someone", "ignore_eos": true})");
  ASSERT_EQ(r.prompts.size(), 2u);
  EXPECT_EQ(r.prompts[1].ids, (std::vector<int32_t>{4, 5}));
  EXPECT_EQ(*r.max_tokens, 7);
  EXPECT_FLOAT_EQ(r.sampling.top_p, 0.9f);
  EXPECT_EQ(r.sampling.top_k, 40);
  EXPECT_FLOAT_EQ(r.sampling.repetition_penalty, 1.1f);
  EXPECT_EQ(*r.sampling.seed, 42u);
  EXPECT_EQ(r.sampling.logprobs, 5);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"\n", "END"}));
  EXPECT_EQ(r.n, 3);
  EXPECT_TRUE(r.include_usage);
  EXPECT_TRUE(r.ignore_eos);
  // Token ids and a list of strings are prompts too.
  EXPECT_EQ(parse(Endpoint::Completions, R"({"prompt": [1, 2]})").prompts[0].ids, (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(parse(Endpoint::Completions, R"({"prompt": ["a", "b"]})").prompts.size(), 2u);
  EXPECT_EQ(parse(Endpoint::Completions, R"({"prompt": "x", "stop": "\n"})").stop, (std::vector<std::string>{"\n"}));
  EXPECT_EQ(parse(Endpoint::Completions, R"({"prompt": "x", "top_k": -1})").sampling.top_k, 0);
  EXPECT_EQ(*parse(Endpoint::Completions, R"({"prompt": "x", "max_completion_tokens": 9})").max_tokens, 9);
}

TEST(ServerProtocol, ChatMessages) {
  GenerationRequest r = parse(Endpoint::ChatCompletions, R"({"messages": [
      {"role": "system", "content": "be brief"},
      {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
      {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
          "function": {"name": "f", "arguments": "{\"x\": 1}"}}]},
      {"role": "tool", "tool_call_id": "c1", "content": "ok"}],
      "logprobs": true, "top_logprobs": 3, "max_tokens": 5})");
  ASSERT_EQ(r.messages.size(), 4u);
  EXPECT_EQ(r.messages[1]["content"], "a\nb");
  EXPECT_TRUE(r.messages[2]["content"].is_null());
  EXPECT_EQ(r.messages[2]["tool_calls"][0]["function"]["arguments"]["x"], 1);  // parsed for templates
  EXPECT_EQ(r.logprobs, 3);
  EXPECT_TRUE(r.add_generation_prompt);
  EXPECT_TRUE(r.tools.is_null());
  // The default max_tokens of chat is what the context has left.
  GenerationRequest d = parse(Endpoint::ChatCompletions, R"({"messages": [{"role": "user", "content": "x"}]})");
  EXPECT_EQ(settle_max_tokens(d, 28, 128), 100);
}

TEST(ServerProtocol, Refusals) {
  using E = Endpoint;
  const std::vector<std::tuple<E, std::string, std::string>> cases = {
      {E::Completions, R"({"prompt": "x", "model": "other"})", "model"},
      {E::Completions, R"({"prompt": "x", "model": 3})", "model"},
      {E::Completions, R"({})", "prompt"},
      {E::Completions, R"({"prompt": 5})", "prompt"},
      {E::Completions, R"({"prompt": []})", "prompt"},
      {E::Completions, R"({"prompt": [1, "a"]})", "prompt"},
      {E::Completions, R"({"prompt": [1, 5000]})", "prompt"},
      {E::Completions, R"({"prompt": [-1]})", "prompt"},
      {E::Completions, R"({"prompt": "x", "max_tokens": 0})", "max_tokens"},
      {E::Completions, R"({"prompt": "x", "max_tokens": "10"})", "max_tokens"},
      {E::Completions, R"({"prompt": "x", "max_tokens": 1.5})", "max_tokens"},
      {E::Completions, R"({"prompt": "x", "temperature": -1})", "temperature"},
      {E::Completions, R"({"prompt": "x", "temperature": 3})", "temperature"},
      {E::Completions, R"({"prompt": "x", "temperature": "hot"})", "temperature"},
      {E::Completions, R"({"prompt": "x", "top_p": 0})", "top_p"},
      {E::Completions, R"({"prompt": "x", "top_p": 1.5})", "top_p"},
      {E::Completions, R"({"prompt": "x", "top_k": -2})", "top_k"},
      {E::Completions, R"({"prompt": "x", "min_p": 2})", "min_p"},
      {E::Completions, R"({"prompt": "x", "presence_penalty": 3})", "presence_penalty"},
      {E::Completions, R"({"prompt": "x", "frequency_penalty": -2.5})", "frequency_penalty"},
      {E::Completions, R"({"prompt": "x", "repetition_penalty": 0})", "repetition_penalty"},
      {E::Completions, R"({"prompt": "x", "seed": "1"})", "seed"},
      {E::Completions, R"({"prompt": "x", "stop": 1})", "stop"},
      {E::Completions, R"({"prompt": "x", "stop": [""]})", "stop"},
      {E::Completions, R"({"prompt": "x", "stop": ["a", 2]})", "stop"},
      {E::Completions, R"({"prompt": "x", "n": 0})", "n"},
      {E::Completions, R"({"prompt": "x", "n": 100})", "n"},
      {E::Completions, R"({"prompt": "x", "logprobs": 50})", "logprobs"},
      {E::Completions, R"({"prompt": "x", "logprobs": true})", "logprobs"},
      {E::Completions, R"({"prompt": "x", "echo": true, "logprobs": 1})", "echo"},
      {E::Completions, R"({"prompt": "x", "stream": "yes"})", "stream"},
      {E::Completions, R"({"prompt": "x", "stream_options": {"include_usage": true}})", "stream_options"},
      {E::Completions, R"({"prompt": "x", "logit_bias": {"1": 5}})", "logit_bias"},
      {E::Completions, R"({"prompt": "x", "suffix": "end"})", "suffix"},
      {E::Completions, R"({"prompt": "x", "best_of": 3})", "best_of"},
      {E::ChatCompletions, R"({})", "messages"},
      {E::ChatCompletions, R"({"messages": []})", "messages"},
      {E::ChatCompletions, R"({"messages": "hi"})", "messages"},
      {E::ChatCompletions, R"({"messages": [1]})", "messages[0]"},
      {E::ChatCompletions, R"({"messages": [{"content": "x"}]})", "messages[0].role"},
      {E::ChatCompletions, R"({"messages": [{"role": "user"}]})", "messages[0].content"},
      {E::ChatCompletions, R"({"messages": [{"role": "user", "content": 5}]})", "messages[0].content"},
      {E::ChatCompletions, R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})",
       "messages[0].content[0].type"},
      {E::ChatCompletions, R"({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})", "top_logprobs"},
      {E::ChatCompletions, R"({"messages": [{"role": "user", "content": "x"}], "logprobs": 1})", "logprobs"},
      {E::ChatCompletions, R"({"messages": [{"role": "user", "content": "x"}], "tools": {}})", "tools"},
      // Tool calls are not parsed yet, so tools are refused by name rather than shown to the model.
      {E::ChatCompletions,
       R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {"name": "f"}}]})",
       "tools"},
      {E::ChatCompletions,
       R"({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}})",
       "response_format"},
  };
  for (const auto& [e, body, param] : cases) {
    SCOPED_TRACE(body);
    const auto [status, got_param] = refusal(e, body);
    EXPECT_EQ(status, 400);
    EXPECT_EQ(got_param, param);
  }
}

TEST(ServerProtocol, Bodies) {
  auto status_of = [](const std::string& body) {
    try {
      parse_body(body);
    } catch (const ApiError& e) {
      return e.status;
    }
    return 200;
  };
  EXPECT_EQ(status_of("{\"prompt\": "), 400);
  EXPECT_EQ(status_of("[1, 2]"), 400);
  EXPECT_EQ(status_of(""), 400);
  EXPECT_EQ(status_of("{\"a\": \"\xff\"}"), 400);                                               // not UTF-8
  EXPECT_EQ(status_of("{\"a\": " + std::string(100, '[') + std::string(100, ']') + "}"), 400);  // too deep
  EXPECT_EQ(status_of("{\"a\": [[[1]]]}"), 200);
  // The error body is OpenAI's shape, nulls included.
  const ojson b = error_body(ApiError(400, "bad", "temperature", "invalid_value"));
  EXPECT_EQ(
      b.dump(),
      R"({"error":{"message":"bad","type":"invalid_request_error","param":"temperature","code":"invalid_value"}})");
  EXPECT_EQ(error_body(ApiError(429, "busy")).dump(),
            R"({"error":{"message":"busy","type":"invalid_request_error","param":null,"code":null}})");
}

TEST(ServerProtocol, ContextChecks) {
  GenerationRequest r = parse(Endpoint::Completions, R"({"prompt": "x", "max_tokens": 20})");
  EXPECT_EQ(settle_max_tokens(r, 100, 128), 20);
  try {
    settle_max_tokens(r, 120, 128);
    FAIL();
  } catch (const ApiError& e) {
    EXPECT_EQ(e.param, "max_tokens");
    EXPECT_EQ(e.code, "context_length_exceeded");
  }
  try {
    settle_max_tokens(r, 128, 128);
    FAIL();
  } catch (const ApiError& e) {
    EXPECT_EQ(e.param, "prompt");
    EXPECT_NE(std::string(e.what()).find("maximum context length is 128"), std::string::npos);
  }
  EXPECT_THROW(settle_max_tokens(r, 0, 128), ApiError);
  // Without max_tokens, completions take 16 or what is left.
  GenerationRequest d = parse(Endpoint::Completions, R"({"prompt": "x"})");
  EXPECT_EQ(settle_max_tokens(d, 120, 128), 8);
}

TEST(ServerProtocol, ResponsesAndChunks) {
  const ResponseHeader h{"cmpl-1", 1700000000, "tiny"};
  ChoiceOutput c;
  c.text = " world";
  c.token_ids = {7, 8};
  c.logprobs = {{7, -0.5, {{7, -0.5}, {9, -1.5}}}, {8, -0.25, {{8, -0.25}}}};
  c.finish_reason = FinishReason::Length;
  c.prompt_tokens = 3;
  c.generated_tokens = 2;
  auto text = [](int32_t, int32_t id) { return "t" + std::to_string(id); };
  const ojson comp = completion_response(h, {c}, {"hello"}, 1, Usage{3, 2, 1}, text);
  EXPECT_EQ(comp["object"], "text_completion");
  EXPECT_EQ(comp["choices"][0]["text"], "hello world");  // echo
  EXPECT_EQ(comp["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(comp["choices"][0]["logprobs"]["tokens"], ojson::parse(R"(["t7", "t8"])"));
  EXPECT_EQ(comp["choices"][0]["logprobs"]["text_offset"], ojson::parse("[5, 7]"));
  EXPECT_EQ(comp["choices"][0]["logprobs"]["top_logprobs"][0]["t9"], -1.5);
  EXPECT_EQ(
      comp["usage"].dump(),
      R"({"prompt_tokens":3,"completion_tokens":2,"total_tokens":5,"prompt_tokens_details":{"cached_tokens":1}})");
  const ojson chat = chat_response(h, {c}, 2, Usage{3, 2, 0}, text);
  EXPECT_EQ(chat["object"], "chat.completion");
  EXPECT_EQ(chat["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(chat["choices"][0]["message"]["content"], " world");
  EXPECT_EQ(chat["choices"][0]["logprobs"]["content"][0]["top_logprobs"][1]["token"], "t9");
  EXPECT_EQ(chat["choices"][0]["logprobs"]["content"][0]["bytes"], ojson::parse("[116, 55]"));
  EXPECT_TRUE(chat_response(h, {c}, -1, Usage{}, text)["choices"][0]["logprobs"].is_null());

  const ojson k = chat_chunk(h, 0, {{"content", "x"}}, nullptr, nullptr, true);
  EXPECT_EQ(k["object"], "chat.completion.chunk");
  EXPECT_TRUE(k["usage"].is_null());
  EXPECT_TRUE(k["choices"][0]["finish_reason"].is_null());
  EXPECT_FALSE(completion_chunk(h, 0, "x", nullptr, "stop", false).contains("usage"));
  EXPECT_EQ(usage_chunk(h, true, Usage{1, 2, 0})["choices"].size(), 0u);
  EXPECT_EQ(sse_data(ojson{{"a", 1}}), "data: {\"a\":1}\n\n");
  EXPECT_EQ(std::string(sse_done()), "data: [DONE]\n\n");
  // A token cut inside a UTF-8 character does not break the stream.
  EXPECT_EQ(sse_data(ojson{{"a", std::string("\xe4\xb8")}}), "data: {\"a\":\"\xef\xbf\xbd\"}\n\n");
  EXPECT_NE(make_id("cmpl-"), make_id("cmpl-"));
}

TEST(ServerMetrics, PrometheusText) {
  Metrics m;
  m.count_http("/v1/completions", 200);
  m.count_http("/v1/completions", 200);
  m.count_http("/v1/completions", 400);
  m.count_http("/nonsense/path", 404);
  RequestRecord r;
  r.prompt_tokens = 10;
  r.generated_tokens = 5;
  r.ttft_seconds = 0.03;
  r.tpot_seconds = 0.012;
  r.e2e_seconds = 0.1;
  r.finish_reasons = {FinishReason::Stop, FinishReason::Length};
  m.record(r);
  ExecutorStats s;
  s.kv_blocks_total = 100;
  s.kv_blocks_used = 25;
  s.kv_blocks_free = 75;
  s.running = 2;
  s.queued = 1;
  s.prefix_hit_rate = 0.5;
  const std::string text = m.render(s);
  auto has = [&](const std::string& line) { return text.find(line + "\n") != std::string::npos; };
  EXPECT_TRUE(has("kiln_http_requests_total{route=\"/v1/completions\",status=\"200\"} 2"));
  EXPECT_TRUE(has("kiln_http_requests_total{route=\"/v1/completions\",status=\"400\"} 1"));
  EXPECT_TRUE(has("kiln_http_requests_total{route=\"other\",status=\"404\"} 1"));
  EXPECT_TRUE(has("kiln_requests_total 1"));
  EXPECT_TRUE(has("kiln_prompt_tokens_total 10"));
  EXPECT_TRUE(has("kiln_generation_tokens_total 5"));
  EXPECT_TRUE(has("kiln_request_finish_total{reason=\"stop\"} 1"));
  EXPECT_TRUE(has("kiln_request_finish_total{reason=\"length\"} 1"));
  EXPECT_TRUE(has("kiln_time_to_first_token_seconds_bucket{le=\"0.02\"} 0"));
  EXPECT_TRUE(has("kiln_time_to_first_token_seconds_bucket{le=\"0.04\"} 1"));
  EXPECT_TRUE(has("kiln_time_to_first_token_seconds_bucket{le=\"+Inf\"} 1"));
  EXPECT_TRUE(has("kiln_time_to_first_token_seconds_count 1"));
  EXPECT_TRUE(has("kiln_time_per_output_token_seconds_count 1"));
  EXPECT_TRUE(has("kiln_requests_running 2"));
  EXPECT_TRUE(has("kiln_requests_waiting 1"));
  EXPECT_TRUE(has("kiln_kv_cache_blocks_free 75"));
  EXPECT_TRUE(has("kiln_kv_cache_usage_ratio 0.25"));
  EXPECT_TRUE(has("kiln_prefix_cache_hit_rate 0.5"));
  EXPECT_TRUE(has("# TYPE kiln_time_to_first_token_seconds histogram"));
  // Without an engine the engine gauges are left out.
  EXPECT_EQ(m.render(std::nullopt).find("kiln_requests_running"), std::string::npos);
}

}  // namespace
}  // namespace kiln::server
