// Chat templates: kiln's Jinja engine against jinja2's renders of real model templates
// (tests/fixtures/chat-templates/goldens.json, made by tools/make_chat_template_goldens.py), plus
// the engine's own edge cases.
#include "tokenizer/chat_template.h"

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "tokenizer/jinja.h"

namespace kiln {
namespace {

using ojson = nlohmann::ordered_json;

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return {};
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string resolve(const std::string& ref) {
  if (ref.rfind("fixtures:", 0) == 0)
    return std::string(KILN_SOURCE_DIR) + "/tests/fixtures/chat-templates/" + ref.substr(9);
  return ref;
}

jinja::RenderOptions pinned_clock() {
  jinja::RenderOptions o;
  std::tm tm{};
  tm.tm_year = 2024 - 1900;
  tm.tm_mon = 6;
  tm.tm_mday = 26;
  tm.tm_hour = 12;
  tm.tm_wday = 5;
  tm.tm_yday = 207;
  o.now = tm;
  return o;
}

TEST(ChatTemplateGoldens, MatchJinja2) {
  const std::string text = read_file(std::string(KILN_SOURCE_DIR) + "/tests/fixtures/chat-templates/goldens.json");
  ASSERT_FALSE(text.empty());
  const ojson goldens = ojson::parse(text);
  ASSERT_GT(goldens.size(), 100u);
  std::map<std::string, std::optional<ChatTemplate>> cache;
  int checked = 0;
  std::set<std::string> families;
  for (const ojson& g : goldens) {
    const std::string ref = g.at("template");
    const std::string name = ref + " / " + g.at("case").get<std::string>();
    SCOPED_TRACE(name);
    const ojson& vars = g.at("variables");
    auto it = cache.find(ref);
    if (it == cache.end()) {
      const std::string src = read_file(resolve(ref));
      if (src.empty()) {
        ADD_FAILURE() << "cannot read the template " << resolve(ref);
        cache.emplace(ref, std::nullopt);
        continue;
      }
      std::optional<ChatTemplate> t;
      try {
        t.emplace(src, vars.at("bos_token").get<std::string>(), vars.at("eos_token").get<std::string>());
      } catch (const std::exception& e) {
        ADD_FAILURE() << "parse failed: " << e.what();
      }
      it = cache.emplace(ref, std::move(t)).first;
    }
    if (!it->second) continue;
    // The special tokens differ per template family; rebuild with this record's (cheap: shared tree).
    ChatTemplateInputs in;
    in.messages = vars.at("messages");
    in.tools = vars.at("tools");
    in.add_generation_prompt = vars.at("add_generation_prompt");
    in.extra["bos_token"] = vars.at("bos_token");
    in.extra["eos_token"] = vars.at("eos_token");
    if (g.contains("expected")) {
      try {
        EXPECT_EQ(it->second->apply(in, pinned_clock()), g.at("expected").get<std::string>());
      } catch (const std::exception& e) {
        ADD_FAILURE() << "render failed: " << e.what();
      }
    } else {
      try {
        const std::string out = it->second->apply(in, pinned_clock());
        ADD_FAILURE() << "rendered, but jinja2 failed with: " << g.at("error") << "\n" << out.substr(0, 300);
      } catch (const jinja::TemplateError& e) {
        if (g.at("raised").get<bool>()) {
          EXPECT_TRUE(e.raised()) << e.what();
          EXPECT_EQ(std::string(e.what()), g.at("error").get<std::string>());
        }
      }
    }
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(goldens.size()));
  std::printf("checked %d renders\n", checked);
}

std::string render(const std::string& src, const ojson& vars = ojson::object()) {
  jinja::Template t(src);
  jinja::Dict d;
  for (auto it = vars.begin(); it != vars.end(); ++it) d.set(it.key(), jinja::Value::from_json(it.value()));
  return t.render(d);
}

TEST(Jinja, WhitespaceControl) {
  EXPECT_EQ(render("a  {%- if true -%}  b  {%- endif -%}  c"), "abc");
  EXPECT_EQ(render("{% if true %}\nx\n{% endif %}\ny"), "x\ny");      // trim_blocks
  EXPECT_EQ(render("  {% if true %}x{% endif %}"), "x");              // lstrip_blocks
  EXPECT_EQ(render("  {%+ if true %}x{% endif %}"), "  x");           // + keeps the indent
  EXPECT_EQ(render("{{ 'a' }}  {% if true %}b{% endif %}"), "a  b");  // not at line start
  EXPECT_EQ(render("x\n"), "x");                                      // trailing newline dropped
  EXPECT_EQ(render("x\n\n"), "x\n");
  EXPECT_EQ(render("a {#- c -#} b"), "ab");
  EXPECT_EQ(render("a\r\nb"), "a\nb");
}

TEST(Jinja, Values) {
  EXPECT_EQ(render("{{ 1e16 }} {{ 1e15 }} {{ 0.0001 }} {{ 0.00001 }} {{ 1.5e-7 }} {{ -0.0 }} {{ 3.0 }}"),
            "1e+16 1000000000000000.0 0.0001 1e-05 1.5e-07 -0.0 3.0");
  EXPECT_EQ(render("{{ x }}|{{ none }}|{{ true }}|{{ [none, 'a\\'b'] }}"), "|None|True|[None, \"a'b\"]");
  EXPECT_EQ(render("{{ {'a': 'é\\n'} | tojson }}"), "{\"a\": \"é\\n\"}");
  EXPECT_EQ(render("{{ '\\u00e9\\x41' }}"), "éA");
  EXPECT_EQ(render("{{ 'ab' 'cd' }}"), "abcd");
}

TEST(Jinja, Scoping) {
  EXPECT_EQ(render("{% set x = 1 %}{% for i in [1, 2] %}{% set x = x + i %}{{ x }}{% endfor %}{{ x }}"), "231");
  EXPECT_EQ(render("{% set ns = namespace(x=1) %}{% for i in [1, 2] %}{% set ns.x = ns.x + i %}{% endfor %}{{ ns.x }}"),
            "4");
  EXPECT_EQ(render("{% if true %}{% set y = 2 %}{% endif %}{{ y }}"), "2");
  EXPECT_EQ(render("{% macro m(a, b=2) %}{{ a }}{{ b }}{% endmacro %}{{ m(1) }}{{ m(1, b=3) }}"), "1213");
}

TEST(Jinja, Errors) {
  auto error_of = [](const std::string& src, const ojson& vars = ojson::object()) -> std::string {
    try {
      render(src, vars);
    } catch (const jinja::TemplateError& e) {
      return e.what();
    }
    return "no error";
  };
  EXPECT_NE(error_of("{% if x %}").find("endif"), std::string::npos);
  EXPECT_NE(error_of("line\n{% frobnicate %}").find("line 2"), std::string::npos);
  EXPECT_NE(error_of("{{ x | nosuchfilter }}").find("nosuchfilter"), std::string::npos);
  EXPECT_NE(error_of("{{ x is nosuchtest }}").find("nosuchtest"), std::string::npos);
  EXPECT_NE(error_of("{{ x.y.z }}").find("undefined"), std::string::npos);
  EXPECT_NE(error_of("{{ 'a' + 1 }}").find("unsupported operand"), std::string::npos);
  EXPECT_NE(error_of("{{ 'unterminated }}").find("unterminated"), std::string::npos);
  EXPECT_EQ(error_of("{{ raise_exception('no system role') }}"), "no system role");
  try {
    render("{{ raise_exception('boom') }}");
  } catch (const jinja::TemplateError& e) {
    EXPECT_TRUE(e.raised());
  }
  // Unbounded output is refused, not allowed to eat memory.
  jinja::Template big(
      "{% for i in range(100000) %}{% for j in range(100000) %}xxxxxxxxxxxxxxxx{% endfor %}{% endfor %}");
  jinja::RenderOptions small;
  small.max_output_bytes = 1 << 20;
  EXPECT_THROW(big.render({}, small), jinja::TemplateError);
  // Deep macro recursion is refused.
  EXPECT_NE(error_of("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}").find("recursed"), std::string::npos);
}

// Truncated and byte-flipped templates either render or throw TemplateError: never crash, hang or
// throw anything else (run under ASan too).
TEST(Jinja, CorruptTemplatesFailCleanly) {
  std::vector<std::string> sources;
  for (const char* name :
       {"meta-llama-Llama-2-7b-chat.jinja", "kiln-jinja-features.jinja", "HuggingFaceTB-SmolLM2-135M-Instruct.jinja"})
    sources.push_back(read_file(std::string(KILN_SOURCE_DIR) + "/tests/fixtures/chat-templates/" + name));
  sources.push_back(read_file(std::string(KILN_SOURCE_DIR) +
                              "/tests/fixtures/chat-templates/llama.cpp/meta-llama-Llama-3.1-8B-Instruct.jinja"));
  for (const std::string& s : sources) ASSERT_FALSE(s.empty()) << "a template fixture is missing";
  ChatTemplateInputs in;
  in.messages = ojson::parse(R"([{"role":"system","content":"s"},{"role":"user","content":"u"},
                                 {"role":"assistant","content":"a"},{"role":"user","content":"v"}])");
  jinja::RenderOptions opts = pinned_clock();
  opts.max_output_bytes = 1 << 20;
  uint64_t state = 12345;
  auto next = [&] {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<size_t>(state >> 33);
  };
  const char kBytes[] = "{}%#-+()[]'\".,|~ \n0aZ_";
  int rendered = 0, refused = 0;
  for (const std::string& src : sources) {
    ASSERT_FALSE(src.empty());
    for (int i = 0; i < 400; ++i) {
      std::string m = src;
      if (i % 4 == 0) {
        m.resize(next() % m.size());
      } else {
        for (int k = 0, n = 1 + static_cast<int>(next() % 4); k < n; ++k)
          m[next() % m.size()] = kBytes[next() % (sizeof kBytes - 1)];
      }
      try {
        ChatTemplate t(m, "<s>", "</s>");
        t.apply(in, opts);
        ++rendered;
      } catch (const jinja::TemplateError&) {
        ++refused;
      }
    }
  }
  EXPECT_GT(rendered, 0);
  EXPECT_GT(refused, 0);
}

TEST(ChatTemplate, FromTokenizerVariables) {
  ChatTemplate t(
      "{{ bos_token }}{% for m in messages %}[{{ m.role }}:{{ m.content }}]{% endfor %}"
      "{% if add_generation_prompt %}>{% endif %}{{ tools is none }}{{ eos_token }}",
      "<s>", "</s>");
  ChatTemplateInputs in;
  in.messages = ojson::parse(R"([{"role":"user","content":"hi"}])");
  EXPECT_EQ(t.apply(in), "<s>[user:hi]>True</s>");
  in.add_generation_prompt = false;
  in.tools = ojson::parse(R"([{"type":"function"}])");
  EXPECT_EQ(t.apply(in), "<s>[user:hi]False</s>");
}

}  // namespace
}  // namespace kiln
