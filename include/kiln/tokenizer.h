// Tokenizer: text to token ids and back, exactly as Hugging Face `tokenizers` does, plus a
// UTF-8-safe incremental detokenizer for streaming.
#pragma once

#include <cstdint>
#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kiln {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // From a model path: an HF folder (tokenizer.json, with tokenizer_config.json when present), a
  // tokenizer.json file, a .gguf file (its tokenizer.ggml.* metadata) or a llama2.c tokenizer .bin.
  // Throws kiln::Error naming the path when no tokenizer is found there or it is malformed.
  static std::unique_ptr<Tokenizer> from_path(const std::string& path);

  // Encodes text. add_special: add what the tokenizer adds around a sequence (BOS, ...), as its
  // post-processor or add_bos_token says. parse_special: text that spells a special/added token
  // ("<|im_start|>") becomes that token.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_special = true,
                                      bool parse_special = true) const = 0;
  // Decodes ids to text as HF `decode` does (skip_special drops special tokens).
  virtual std::string decode(std::span<const int32_t> ids, bool skip_special = false) const = 0;

  virtual int32_t vocab_size() const = 0;
  // The token's string as stored in the vocabulary (e.g. "Ġthe", "▁the", "<0x0A>").
  virtual std::string id_to_token(int32_t id) const = 0;
  virtual std::optional<int32_t> token_to_id(std::string_view token) const = 0;
  virtual bool is_special(int32_t id) const = 0;

  virtual std::optional<int32_t> bos_id() const = 0;
  // Every id that ends generation (eos, eot, ...).
  virtual std::vector<int32_t> eos_ids() const = 0;
  // The chat template shipped with the tokenizer, when any.
  virtual std::optional<std::string> chat_template() const = 0;
};

// Turns a growing sequence of ids into text pieces for streaming: emits only complete UTF-8, and
// what it emits over a whole sequence concatenates to decode(all ids) (SentencePiece leading spaces
// and byte-fallback sequences included).
class IncrementalDetokenizer {
 public:
  // prefix: ids already shown (the prompt), so that the first generated piece gets its spacing right.
  IncrementalDetokenizer(const Tokenizer& tokenizer, std::span<const int32_t> prefix = {},
                         bool skip_special = true);
  // Adds one id; returns the new text that is now safe to show (may be empty).
  std::string push(int32_t id);
  // Returns what is left (an incomplete UTF-8 tail is emitted as U+FFFD, as decode would).
  std::string flush();

 private:
  size_t context_start(size_t end, size_t want) const;
  std::string decode_range(size_t begin, size_t end) const;

  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::vector<int32_t> ids_;
  size_t prefix_offset_ = 0;  // the decode window starts here
  size_t read_offset_ = 0;    // ids before this one are fully shown
  std::string base_;          // the window's text shown already
  size_t last_shown_ = SIZE_MAX;  // the last id that is not a skipped special id
};

}  // namespace kiln
