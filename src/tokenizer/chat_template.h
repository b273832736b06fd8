// Chat templates: a model's Jinja chat template rendered over OpenAI-style messages, with the
// variables Hugging Face's apply_chat_template passes (messages, tools, add_generation_prompt,
// bos_token, eos_token, and any extra keyword arguments).
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "tokenizer/jinja.h"

namespace kiln {

class Tokenizer;

struct ChatTemplateInputs {
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();  // [{"role":..,"content":..}, ..]
  nlohmann::ordered_json tools;                                       // null: none (the template sees tools=None)
  bool add_generation_prompt = true;
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();  // more template variables
};

class ChatTemplate {
 public:
  // Parses the template; throws jinja::TemplateError (a kiln::Error) on a syntax error.
  ChatTemplate(std::string_view source, std::string bos_token, std::string eos_token);
  // The tokenizer's own template with its BOS/EOS strings; nullopt when it ships none.
  static std::optional<ChatTemplate> from_tokenizer(const Tokenizer& tokenizer);

  // Renders the prompt text; throws jinja::TemplateError (raised() for the template's own
  // raise_exception, e.g. roles that do not alternate).
  std::string apply(const ChatTemplateInputs& inputs, const jinja::RenderOptions& options = {}) const;

  const std::string& bos_token() const { return bos_token_; }
  const std::string& eos_token() const { return eos_token_; }

 private:
  std::shared_ptr<const jinja::Template> template_;
  std::string bos_token_, eos_token_;
};

}  // namespace kiln
