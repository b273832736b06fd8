// Chat templates over the Jinja engine, with the variables apply_chat_template passes.
#include "tokenizer/chat_template.h"

#include "kiln/tokenizer.h"

namespace kiln {

ChatTemplate::ChatTemplate(std::string_view source, std::string bos_token, std::string eos_token)
    : template_(std::make_shared<const jinja::Template>(source)),
      bos_token_(std::move(bos_token)),
      eos_token_(std::move(eos_token)) {}

std::optional<ChatTemplate> ChatTemplate::from_tokenizer(const Tokenizer& tokenizer) {
  const std::optional<std::string> src = tokenizer.chat_template();
  if (!src) return std::nullopt;
  std::string bos, eos;
  if (auto b = tokenizer.bos_id()) bos = tokenizer.id_to_token(*b);
  // eos_ids() lists the configured eos_token first, then what else ends generation.
  if (auto e = tokenizer.eos_ids(); !e.empty()) eos = tokenizer.id_to_token(e.front());
  return ChatTemplate(*src, std::move(bos), std::move(eos));
}

std::string ChatTemplate::apply(const ChatTemplateInputs& inputs, const jinja::RenderOptions& options) const {
  // As transformers: special tokens, then extra keyword arguments (which may override them).
  jinja::Dict vars;
  vars.set("bos_token", jinja::Value(bos_token_));
  vars.set("eos_token", jinja::Value(eos_token_));
  for (auto it = inputs.extra.begin(); it != inputs.extra.end(); ++it)
    vars.set(it.key(), jinja::Value::from_json(it.value()));
  vars.set("messages", jinja::Value::from_json(inputs.messages));
  vars.set("tools", jinja::Value::from_json(inputs.tools));
  vars.set("add_generation_prompt", jinja::Value(inputs.add_generation_prompt));
  return template_->render(vars, options);
}

}  // namespace kiln
