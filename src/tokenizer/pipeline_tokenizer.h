// PipelineTokenizer: the one Tokenizer implementation. Added/special tokens are cut out of the text
// first, then normalizer -> pre-tokenizer -> model -> post-processor, as HF `tokenizers` runs them.
// The loaders (tokenizer.json, GGUF, llama2.c) only differ in how they assemble the stages.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "kiln/tokenizer.h"
#include "tokenizer/models.h"
#include "tokenizer/pipeline.h"

namespace kiln::tok {

struct AddedToken {
  int32_t id = -1;
  std::string content;  // the text that stands for the token
  bool special = false;
  bool lstrip = false, rstrip = false, single_word = false;
  bool normalized = false;  // matched in normalized text (its content normalized too) rather than raw text
};

struct TokenizerParts {
  std::unique_ptr<Model> model;
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::unique_ptr<PostProcessor> post_processor;
  std::unique_ptr<Decoder> decoder;
  std::vector<AddedToken> added_tokens;
  // The string decode() gives the decoder for an id when it is not the token's content (GGUF
  // user-defined tokens are stored as raw text but decoded through the byte-level decoder).
  std::unordered_map<int32_t, std::string> decode_strings;
  std::vector<int32_t> extra_special_ids;  // special, but never matched in text
  std::optional<int32_t> bos_id;
  std::vector<int32_t> eos_ids;
  std::optional<std::string> chat_template;
};

// Leftmost-longest matching of added-token contents (a byte trie).
class TokenMatcher {
 public:
  void add(std::string_view pattern, int32_t value);
  bool empty() const { return nodes_.size() <= 1; }
  // The value of the longest pattern that starts at text[pos], or -1; len gets its length.
  int32_t longest_at(std::string_view text, size_t pos, size_t& len) const;

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> next;
    int32_t value = -1;
  };
  std::vector<Node> nodes_{Node{}};
  int32_t root_next_[256];
  bool root_init_ = false;
};

class PipelineTokenizer final : public Tokenizer {
 public:
  explicit PipelineTokenizer(TokenizerParts parts);

  std::vector<int32_t> encode(std::string_view text, bool add_special = true, bool parse_special = true) const override;
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const override;
  int32_t vocab_size() const override { return vocab_size_; }
  std::string id_to_token(int32_t id) const override;
  std::optional<int32_t> token_to_id(std::string_view token) const override;
  bool is_special(int32_t id) const override {
    return id >= 0 && id < static_cast<int32_t>(special_.size()) && special_[id];
  }
  std::optional<int32_t> bos_id() const override { return bos_id_; }
  std::vector<int32_t> eos_ids() const override { return eos_ids_; }
  std::optional<std::string> chat_template() const override { return chat_template_; }

  const std::vector<AddedToken>& added_tokens() const { return added_; }

 private:
  struct Span {
    size_t begin, end;
    int32_t token;  // -1: plain text
  };
  void split_added(std::string_view text, const TokenMatcher& matcher, bool parse_special,
                   std::vector<Span>& out) const;
  void encode_text(std::string text, bool at_origin, bool parse_special, std::vector<int32_t>& ids) const;
  void encode_words(std::string text, bool at_origin, std::vector<int32_t>& ids) const;

  TokenizerParts p_;
  std::vector<AddedToken>& added_ = p_.added_tokens;
  TokenMatcher raw_matcher_, normalized_matcher_;  // values index added_
  std::unordered_map<int32_t, std::string> added_strings_;   // id -> content
  std::unordered_map<std::string, int32_t> added_ids_;        // content -> id
  std::vector<bool> special_;
  int32_t vocab_size_ = 0;
  std::optional<int32_t> bos_id_;
  std::vector<int32_t> eos_ids_;
  std::optional<std::string> chat_template_;
};

// Loaders (each throws kiln::Error naming the path).
std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::string& tokenizer_json, const std::string& folder);
std::unique_ptr<Tokenizer> load_gguf_tokenizer(const std::string& path);
std::unique_ptr<Tokenizer> load_llama2c_tokenizer(const std::string& path);

}  // namespace kiln::tok
