// OpenAI request validation and response bodies for `kiln serve`.
#include "server/protocol.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <random>

namespace kiln::server {

namespace {

std::string type_of(const ojson& j) {
  switch (j.type()) {
    case ojson::value_t::null:
      return "null";
    case ojson::value_t::boolean:
      return "a boolean";
    case ojson::value_t::number_integer:
    case ojson::value_t::number_unsigned:
      return "an integer";
    case ojson::value_t::number_float:
      return "a number";
    case ojson::value_t::string:
      return "a string";
    case ojson::value_t::array:
      return "an array";
    case ojson::value_t::object:
      return "an object";
    default:
      return "a value";
  }
}

[[noreturn]] void bad_type(const std::string& name, const char* expected, const ojson& got) {
  throw ApiError(400,
                 fmt::format("Invalid type for '{}': expected {}, but got {} instead.", name, expected, type_of(got)),
                 name, "invalid_type");
}

[[noreturn]] void bad_value(const std::string& name, const std::string& what) {
  throw ApiError(400, fmt::format("Invalid value for '{}': {}", name, what), name, "invalid_value");
}

// The field, or nullptr when absent or null (OpenAI treats null as "not given").
const ojson* field(const ojson& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

std::optional<bool> get_bool(const ojson& body, const char* name) {
  const ojson* f = field(body, name);
  if (!f) return std::nullopt;
  if (!f->is_boolean()) bad_type(name, "a boolean", *f);
  return f->get<bool>();
}

std::optional<double> get_number(const ojson& body, const char* name) {
  const ojson* f = field(body, name);
  if (!f) return std::nullopt;
  if (!f->is_number()) bad_type(name, "a number", *f);
  const double v = f->get<double>();
  if (!std::isfinite(v)) bad_value(name, "must be finite");
  return v;
}

std::optional<int64_t> get_int(const ojson& body, const char* name) {
  const ojson* f = field(body, name);
  if (!f) return std::nullopt;
  if (f->is_number_float()) {
    const double d = f->get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15) return static_cast<int64_t>(d);
  }
  if (!f->is_number_integer()) bad_type(name, "an integer", *f);
  if (f->is_number_unsigned() && f->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) bad_value(name, "is too large");
  return f->get<int64_t>();
}

double in_range(const char* name, double v, double lo, double hi) {
  if (v < lo || v > hi) bad_value(name, fmt::format("{} is outside [{}, {}]", v, lo, hi));
  return v;
}

void check_depth(const ojson& j) {
  // Iterative, so a deeply nested body cannot overflow the stack here.
  std::vector<std::pair<const ojson*, int>> stack{{&j, 1}};
  while (!stack.empty()) {
    auto [node, depth] = stack.back();
    stack.pop_back();
    if (depth > kMaxJsonDepth)
      throw ApiError(400, fmt::format("The request body nests deeper than {} levels.", kMaxJsonDepth), "",
                     "invalid_json");
    if (node->is_structured())
      for (const auto& child : *node) stack.emplace_back(&child, depth + 1);
  }
}

std::vector<int32_t> parse_ids(const ojson& arr, const std::string& name, const ModelInfo& m) {
  std::vector<int32_t> ids;
  ids.reserve(arr.size());
  for (const ojson& x : arr) {
    if (!x.is_number_integer()) bad_type(name, "an array of integers", arr);
    const int64_t id = x.get<int64_t>();
    if (id < 0 || (m.vocab_size > 0 && id >= m.vocab_size))
      bad_value(name, fmt::format("token id {} is outside the vocabulary [0, {})", id, m.vocab_size));
    ids.push_back(static_cast<int32_t>(id));
  }
  return ids;
}

std::vector<PromptInput> parse_prompt(const ojson& body, const ModelInfo& m) {
  const ojson* p = field(body, "prompt");
  if (!p) throw ApiError(400, "Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter");
  std::vector<PromptInput> out;
  if (p->is_string()) {
    out.push_back({p->get<std::string>(), {}});
    return out;
  }
  if (!p->is_array()) bad_type("prompt", "a string, an array of strings or an array of token ids", *p);
  if (p->empty()) bad_value("prompt", "must not be empty");
  if (std::all_of(p->begin(), p->end(), [](const ojson& x) { return x.is_string(); })) {
    for (const ojson& x : *p) out.push_back({x.get<std::string>(), {}});
  } else if (std::all_of(p->begin(), p->end(), [](const ojson& x) { return x.is_number_integer(); })) {
    out.push_back({std::nullopt, parse_ids(*p, "prompt", m)});
  } else if (std::all_of(p->begin(), p->end(), [](const ojson& x) { return x.is_array(); })) {
    for (const ojson& x : *p) {
      if (x.empty()) bad_value("prompt", "a token id prompt must not be empty");
      out.push_back({std::nullopt, parse_ids(x, "prompt", m)});
    }
  } else {
    bad_type("prompt", "a string, an array of strings or an array of token ids", *p);
  }
  return out;
}

ojson parse_messages(const ojson& body) {
  const ojson* msgs = field(body, "messages");
  if (!msgs) throw ApiError(400, "Missing required parameter: 'messages'.", "messages", "missing_required_parameter");
  if (!msgs->is_array()) bad_type("messages", "an array", *msgs);
  if (msgs->empty()) bad_value("messages", "must contain at least one message");
  ojson out = ojson::array();
  for (size_t i = 0; i < msgs->size(); ++i) {
    const ojson& m = (*msgs)[i];
    const std::string where = fmt::format("messages[{}]", i);
    if (!m.is_object()) bad_type(where, "an object", m);
    const ojson* role = field(m, "role");
    if (!role)
      throw ApiError(400, fmt::format("Missing required parameter: '{}.role'.", where), where + ".role",
                     "missing_required_parameter");
    if (!role->is_string() || role->get<std::string>().empty()) bad_type(where + ".role", "a non-empty string", *role);
    ojson msg = m;
    auto c = m.find("content");
    if (c == m.end() || c->is_null()) {
      // Only an assistant turn (carrying tool calls) may come without content.
      if (role->get<std::string>() != "assistant")
        throw ApiError(400, fmt::format("Missing required parameter: '{}.content'.", where), where + ".content",
                       "missing_required_parameter");
      msg["content"] = nullptr;
    } else if (c->is_array()) {
      // Text parts are joined with newlines, as vLLM does for templates that expect a string.
      std::string text;
      for (size_t k = 0; k < c->size(); ++k) {
        const ojson& part = (*c)[k];
        const std::string pw = fmt::format("{}.content[{}]", where, k);
        if (!part.is_object()) bad_type(pw, "an object", part);
        const ojson* type = field(part, "type");
        if (!type || !type->is_string() || type->get<std::string>() != "text")
          bad_value(pw + ".type", "only 'text' content parts are supported");
        const ojson* t = field(part, "text");
        if (!t || !t->is_string()) bad_type(pw + ".text", "a string", t ? *t : ojson());
        if (!text.empty()) text += "\n";
        text += t->get<std::string>();
      }
      msg["content"] = text;
    } else if (!c->is_string()) {
      bad_type(where + ".content", "a string or an array of content parts", *c);
    }
    // Templates index tool-call arguments as objects; OpenAI sends them as JSON strings.
    if (auto tc = msg.find("tool_calls"); tc != msg.end() && tc->is_array()) {
      for (ojson& call : *tc) {
        if (!call.is_object() || !call.contains("function") || !call["function"].is_object()) continue;
        ojson& fn = call["function"];
        if (auto a = fn.find("arguments"); a != fn.end() && a->is_string()) {
          ojson parsed = ojson::parse(a->get<std::string>(), nullptr, false);
          if (!parsed.is_discarded() && parsed.is_object()) *a = std::move(parsed);
        }
      }
    }
    out.push_back(std::move(msg));
  }
  return out;
}

ojson bytes_of(const std::string& s) {
  ojson b = ojson::array();
  for (unsigned char c : s) b.push_back(static_cast<int>(c));
  return b;
}

ojson header_json(const ResponseHeader& h, const char* object) {
  ojson j;
  j["id"] = h.id;
  j["object"] = object;
  j["created"] = h.created;
  j["model"] = h.model;
  return j;
}

}  // namespace

ojson error_body(const ApiError& e) {
  ojson err;
  err["message"] = e.what();
  err["type"] = e.type;
  err["param"] = e.param.empty() ? ojson(nullptr) : ojson(e.param);
  err["code"] = e.code.empty() ? ojson(nullptr) : ojson(e.code);
  ojson body;
  body["error"] = std::move(err);
  return body;
}

ojson parse_body(const std::string& body) {
  ojson j = ojson::parse(body, nullptr, false);
  if (j.is_discarded()) {
    // Re-parse with exceptions for the position of the error.
    std::string detail;
    try {
      const ojson again = ojson::parse(body);
      (void)again;
    } catch (const ojson::parse_error& e) {
      detail = fmt::format(" (at byte {})", e.byte);
    }
    throw ApiError(400, "The request body is not valid JSON" + detail + ".", "", "invalid_json");
  }
  if (!j.is_object()) throw ApiError(400, "The request body must be a JSON object.", "", "invalid_json");
  check_depth(j);
  return j;
}

GenerationRequest parse_request(Endpoint endpoint, const ojson& body, const ModelInfo& m) {
  GenerationRequest r;
  r.endpoint = endpoint;
  const bool chat = endpoint == Endpoint::ChatCompletions;
  if (const ojson* model = field(body, "model")) {
    if (!model->is_string()) bad_type("model", "a string", *model);
    r.model = model->get<std::string>();
    if (r.model != m.name)
      throw ApiError(400, fmt::format("The model '{}' does not exist; this server serves '{}'.", r.model, m.name),
                     "model", "model_not_found");
  } else {
    r.model = m.name;
  }

  if (chat) {
    r.messages = parse_messages(body);
    if (const ojson* tools = field(body, "tools")) {
      if (!tools->is_array()) bad_type("tools", "an array", *tools);
      // A model could be shown the tools, but its tool calls would come back as plain text: refused by name
      // until tool calls are parsed, so a client does not mistake that text for an answer.
      if (!tools->empty())
        throw ApiError(400, "'tools' is not supported yet: kiln does not parse tool calls from the model's output.",
                       "tools", "unsupported_parameter");
    }
    r.add_generation_prompt = get_bool(body, "add_generation_prompt").value_or(true);
    if (get_bool(body, "continue_final_message").value_or(false))
      bad_value("continue_final_message", "is not supported");
    if (const ojson* kw = field(body, "chat_template_kwargs")) {
      if (!kw->is_object()) bad_type("chat_template_kwargs", "an object", *kw);
      r.chat_template_kwargs = *kw;
    }
    if (const ojson* rf = field(body, "response_format")) {
      if (!rf->is_object()) bad_type("response_format", "an object", *rf);
      const ojson* t = field(*rf, "type");
      if (!t || !t->is_string() || t->get<std::string>() != "text")
        bad_value("response_format", "only {\"type\": \"text\"} is supported");
    }
  } else {
    r.prompts = parse_prompt(body, m);
    r.echo = get_bool(body, "echo").value_or(false);
    if (const ojson* suffix = field(body, "suffix")) {
      if (!suffix->is_string()) bad_type("suffix", "a string", *suffix);
      if (!suffix->get<std::string>().empty()) bad_value("suffix", "is not supported");
    }
  }

  r.stream = get_bool(body, "stream").value_or(false);
  if (const ojson* so = field(body, "stream_options")) {
    if (!so->is_object()) bad_type("stream_options", "an object", *so);
    if (!r.stream) bad_value("stream_options", "is only allowed when 'stream' is true");
    r.include_usage = get_bool(*so, "include_usage").value_or(false);
  }

  if (auto n = get_int(body, "n")) {
    if (*n < 1 || *n > kMaxN) bad_value("n", fmt::format("{} is outside [1, {}]", *n, kMaxN));
    r.n = static_cast<int>(*n);
  }
  if (auto b = get_int(body, "best_of"); b && *b != r.n) bad_value("best_of", "must equal n when given");
  if (!chat && static_cast<int64_t>(r.prompts.size()) * r.n > 64)
    bad_value("prompt", fmt::format("{} prompts with n={} make more than 64 completions", r.prompts.size(), r.n));

  // max_completion_tokens is the newer name; either may be given.
  for (const char* name : {"max_tokens", "max_completion_tokens"}) {
    if (auto v = get_int(body, name)) {
      if (*v < 1) bad_value(name, fmt::format("{} must be at least 1", *v));
      r.max_tokens = *v;
    }
  }

  RequestSampling& s = r.sampling;
  if (auto t = get_number(body, "temperature")) s.temperature = static_cast<float>(in_range("temperature", *t, 0, 2));
  if (auto p = get_number(body, "top_p")) {
    if (*p <= 0 || *p > 1) bad_value("top_p", fmt::format("{} is outside (0, 1]", *p));
    s.top_p = static_cast<float>(*p);
  }
  if (auto k = get_int(body, "top_k")) {
    if (*k < -1) bad_value("top_k", fmt::format("{} must be -1 (off), 0 (off) or positive", *k));
    s.top_k = *k <= 0 ? 0 : static_cast<int32_t>(std::min<int64_t>(*k, INT32_MAX));
  }
  if (auto p = get_number(body, "min_p")) s.min_p = static_cast<float>(in_range("min_p", *p, 0, 1));
  if (auto p = get_number(body, "presence_penalty"))
    s.presence_penalty = static_cast<float>(in_range("presence_penalty", *p, -2, 2));
  if (auto p = get_number(body, "frequency_penalty"))
    s.frequency_penalty = static_cast<float>(in_range("frequency_penalty", *p, -2, 2));
  if (auto p = get_number(body, "repetition_penalty")) {
    if (*p <= 0 || *p > 10) bad_value("repetition_penalty", fmt::format("{} is outside (0, 10]", *p));
    s.repetition_penalty = static_cast<float>(*p);
  }
  if (auto seed = get_int(body, "seed")) s.seed = static_cast<uint64_t>(*seed);

  if (const ojson* stop = field(body, "stop")) {
    if (stop->is_string()) {
      r.stop.push_back(stop->get<std::string>());
    } else if (stop->is_array()) {
      for (const ojson& x : *stop) {
        if (!x.is_string()) bad_type("stop", "a string or an array of strings", *stop);
        r.stop.push_back(x.get<std::string>());
      }
    } else {
      bad_type("stop", "a string or an array of strings", *stop);
    }
    if (r.stop.size() > static_cast<size_t>(kMaxStopStrings))
      bad_value("stop", fmt::format("at most {} stop strings", kMaxStopStrings));
    for (const std::string& x : r.stop)
      if (x.empty()) bad_value("stop", "stop strings must not be empty");
  }

  if (chat) {
    const bool want = get_bool(body, "logprobs").value_or(false);
    auto top = get_int(body, "top_logprobs");
    if (top && (*top < 0 || *top > kMaxLogprobs))
      bad_value("top_logprobs", fmt::format("{} is outside [0, {}]", *top, kMaxLogprobs));
    if (top && !want) bad_value("top_logprobs", "requires 'logprobs' to be true");
    if (want) r.logprobs = static_cast<int>(top.value_or(0));
  } else if (auto lp = get_int(body, "logprobs")) {
    if (*lp < 0 || *lp > kMaxLogprobs) bad_value("logprobs", fmt::format("{} is outside [0, {}]", *lp, kMaxLogprobs));
    r.logprobs = static_cast<int>(*lp);
    if (r.echo) bad_value("echo", "echo together with logprobs is not supported (prompt logprobs are not computed)");
  }
  if (r.logprobs >= 0) s.logprobs = r.logprobs;

  if (const ojson* bias = field(body, "logit_bias")) {
    if (!bias->is_object()) bad_type("logit_bias", "an object", *bias);
    if (!bias->empty()) bad_value("logit_bias", "is not supported");
  }
  r.ignore_eos = get_bool(body, "ignore_eos").value_or(false);
  return r;
}

int64_t settle_max_tokens(const GenerationRequest& r, int64_t prompt_tokens, int64_t context) {
  const char* prompt_param = r.endpoint == Endpoint::ChatCompletions ? "messages" : "prompt";
  if (prompt_tokens == 0) throw ApiError(400, "The prompt is empty after tokenization.", prompt_param, "invalid_value");
  if (prompt_tokens >= context)
    throw ApiError(400,
                   fmt::format("This model's maximum context length is {} tokens, but the prompt has {} tokens.",
                               context, prompt_tokens),
                   prompt_param, "context_length_exceeded");
  const int64_t room = context - prompt_tokens;
  if (!r.max_tokens) return r.endpoint == Endpoint::Completions ? std::min<int64_t>(16, room) : room;
  if (*r.max_tokens > room)
    throw ApiError(400,
                   fmt::format("This model's maximum context length is {} tokens; the prompt has {} tokens and {} "
                               "more were requested ({} in all).",
                               context, prompt_tokens, *r.max_tokens, prompt_tokens + *r.max_tokens),
                   "max_tokens", "context_length_exceeded");
  return *r.max_tokens;
}

const char* finish_reason_text(FinishReason r) {
  switch (r) {
    case FinishReason::Length:
      return "length";
    case FinishReason::Stop:
      return "stop";
    case FinishReason::Cancelled:
      return "abort";
    case FinishReason::Error:
      return "error";
    default:
      return nullptr;
  }
}

ojson usage_json(const Usage& u) {
  ojson j;
  j["prompt_tokens"] = u.prompt_tokens;
  j["completion_tokens"] = u.completion_tokens;
  j["total_tokens"] = u.prompt_tokens + u.completion_tokens;
  j["prompt_tokens_details"] = {{"cached_tokens", u.cached_tokens}};
  return j;
}

ojson completion_logprobs(const std::vector<TokenLogprobs>& lps, const TokenText& text, int64_t text_offset,
                          int32_t prev) {
  ojson tokens = ojson::array(), token_lps = ojson::array(), tops = ojson::array(), offsets = ojson::array();
  for (const TokenLogprobs& lp : lps) {
    const std::string t = text(prev, lp.token_id);
    tokens.push_back(t);
    token_lps.push_back(lp.logprob);
    ojson top = ojson::object();
    for (const auto& [id, v] : lp.top) {
      const std::string k = text(prev, id);
      if (!top.contains(k)) top[k] = v;
    }
    tops.push_back(std::move(top));
    offsets.push_back(text_offset);
    text_offset += static_cast<int64_t>(t.size());
    prev = lp.token_id;
  }
  ojson j;
  j["tokens"] = std::move(tokens);
  j["token_logprobs"] = std::move(token_lps);
  j["top_logprobs"] = std::move(tops);
  j["text_offset"] = std::move(offsets);
  return j;
}

ojson chat_logprobs(const std::vector<TokenLogprobs>& lps, const TokenText& text, int32_t prev) {
  ojson content = ojson::array();
  for (const TokenLogprobs& lp : lps) {
    ojson e;
    const std::string t = text(prev, lp.token_id);
    e["token"] = t;
    e["logprob"] = lp.logprob;
    e["bytes"] = bytes_of(t);
    ojson top = ojson::array();
    for (const auto& [id, v] : lp.top) {
      const std::string s = text(prev, id);
      top.push_back({{"token", s}, {"logprob", v}, {"bytes", bytes_of(s)}});
    }
    e["top_logprobs"] = std::move(top);
    content.push_back(std::move(e));
    prev = lp.token_id;
  }
  return {{"content", std::move(content)}};
}

ojson completion_response(const ResponseHeader& h, const std::vector<ChoiceOutput>& choices,
                          const std::vector<std::string>& echo_texts, int logprobs, const Usage& usage,
                          const TokenText& text) {
  ojson j = header_json(h, "text_completion");
  ojson arr = ojson::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const ChoiceOutput& c = choices[i];
    const std::string prefix = i < echo_texts.size() ? echo_texts[i] : std::string();
    ojson ch;
    ch["index"] = static_cast<int>(i);
    ch["text"] = prefix + c.text;
    ch["logprobs"] = logprobs >= 0
                         ? completion_logprobs(c.logprobs, text, static_cast<int64_t>(prefix.size()), c.context_token)
                         : ojson(nullptr);
    const char* fr = finish_reason_text(c.finish_reason);
    ch["finish_reason"] = fr ? ojson(fr) : ojson(nullptr);
    arr.push_back(std::move(ch));
  }
  j["choices"] = std::move(arr);
  j["usage"] = usage_json(usage);
  return j;
}

ojson chat_response(const ResponseHeader& h, const std::vector<ChoiceOutput>& choices, int logprobs, const Usage& usage,
                    const TokenText& text) {
  ojson j = header_json(h, "chat.completion");
  ojson arr = ojson::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const ChoiceOutput& c = choices[i];
    ojson ch;
    ch["index"] = static_cast<int>(i);
    ch["message"] = {{"role", "assistant"}, {"content", c.text}};
    ch["logprobs"] = logprobs >= 0 ? chat_logprobs(c.logprobs, text, c.context_token) : ojson(nullptr);
    const char* fr = finish_reason_text(c.finish_reason);
    ch["finish_reason"] = fr ? ojson(fr) : ojson(nullptr);
    arr.push_back(std::move(ch));
  }
  j["choices"] = std::move(arr);
  j["usage"] = usage_json(usage);
  return j;
}

ojson completion_chunk(const ResponseHeader& h, int index, const std::string& text, ojson logprobs,
                       const char* finish_reason, bool include_usage) {
  ojson j = header_json(h, "text_completion");
  ojson ch;
  ch["index"] = index;
  ch["text"] = text;
  ch["logprobs"] = std::move(logprobs);
  ch["finish_reason"] = finish_reason ? ojson(finish_reason) : ojson(nullptr);
  j["choices"] = ojson::array({std::move(ch)});
  if (include_usage) j["usage"] = nullptr;
  return j;
}

ojson chat_chunk(const ResponseHeader& h, int index, ojson delta, ojson logprobs, const char* finish_reason,
                 bool include_usage) {
  ojson j = header_json(h, "chat.completion.chunk");
  ojson ch;
  ch["index"] = index;
  ch["delta"] = std::move(delta);
  ch["logprobs"] = std::move(logprobs);
  ch["finish_reason"] = finish_reason ? ojson(finish_reason) : ojson(nullptr);
  j["choices"] = ojson::array({std::move(ch)});
  if (include_usage) j["usage"] = nullptr;
  return j;
}

ojson usage_chunk(const ResponseHeader& h, bool chat, const Usage& usage) {
  ojson j = header_json(h, chat ? "chat.completion.chunk" : "text_completion");
  j["choices"] = ojson::array();
  j["usage"] = usage_json(usage);
  return j;
}

std::string sse_data(const ojson& j) {
  // Invalid UTF-8 (a token cut mid-character) is replaced rather than failing the stream.
  return "data: " + j.dump(-1, ' ', false, ojson::error_handler_t::replace) + "\n\n";
}

std::string make_id(const char* prefix) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("{}{:016x}{:08x}", prefix, rng(), static_cast<uint32_t>(rng()));
}

}  // namespace kiln::server
