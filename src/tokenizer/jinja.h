// A Jinja2-subset template engine, enough for the chat templates models ship with: configured as
// Hugging Face's apply_chat_template configures jinja2 (trim_blocks, lstrip_blocks, loop controls,
// tojson as json.dumps, raise_exception, strftime_now).
#pragma once

#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "tokenizer/jinja_value.h"

namespace kiln::jinja {

struct Body;

struct RenderOptions {
  // What strftime_now() formats; none: the current local time. Tests pin it.
  std::optional<std::tm> now;
  // Output beyond this many bytes is an error (a template looping without bound).
  size_t max_output_bytes = size_t{64} << 20;
};

class Template {
 public:
  // Parses the template; throws TemplateError naming the line of a syntax error, an unknown tag,
  // filter or test.
  explicit Template(std::string_view source);
  ~Template();
  Template(Template&&) noexcept;
  Template& operator=(Template&&) noexcept;

  // Renders with these variables (messages, add_generation_prompt, ...); throws TemplateError.
  std::string render(const Dict& variables, const RenderOptions& options = {}) const;

 private:
  std::unique_ptr<Body> body_;
};

}  // namespace kiln::jinja
