// PipelineTokenizer: added-token splitting, the encode/decode pipelines, id <-> token lookups.
#include "tokenizer/pipeline_tokenizer.h"

#include <algorithm>

#include "kiln/error.h"
#include "tokenizer/unicode.h"

namespace kiln::tok {

// ---------------- TokenMatcher ----------------

void TokenMatcher::add(std::string_view pattern, int32_t value) {
  if (pattern.empty()) return;
  if (!root_init_) {
    std::fill(std::begin(root_next_), std::end(root_next_), -1);
    root_init_ = true;
  }
  int32_t node = 0;
  for (size_t i = 0; i < pattern.size(); ++i) {
    auto b = static_cast<unsigned char>(pattern[i]);
    int32_t child = -1;
    if (node == 0) {
      child = root_next_[b];
    } else {
      for (auto [c, n] : nodes_[node].next) {
        if (c == b) {
          child = n;
          break;
        }
      }
    }
    if (child < 0) {
      child = static_cast<int32_t>(nodes_.size());
      nodes_.emplace_back();
      if (node == 0) {
        root_next_[b] = child;
      } else {
        nodes_[node].next.emplace_back(b, child);
      }
    }
    node = child;
  }
  if (nodes_[node].value < 0) nodes_[node].value = value;  // the first token with this content wins
}

int32_t TokenMatcher::longest_at(std::string_view text, size_t pos, size_t& len) const {
  if (!root_init_) return -1;
  int32_t node = root_next_[static_cast<unsigned char>(text[pos])];
  int32_t best = -1;
  size_t i = pos + 1;
  while (node >= 0) {
    if (nodes_[node].value >= 0) {
      best = nodes_[node].value;
      len = i - pos;
    }
    if (i >= text.size()) break;
    auto b = static_cast<unsigned char>(text[i]);
    int32_t child = -1;
    for (auto [c, n] : nodes_[node].next) {
      if (c == b) {
        child = n;
        break;
      }
    }
    node = child;
    ++i;
  }
  return best;
}

// ---------------- PipelineTokenizer ----------------

PipelineTokenizer::PipelineTokenizer(TokenizerParts parts) : p_(std::move(parts)) {
  KILN_ASSERT(p_.model != nullptr);
  vocab_size_ = p_.model->vocab().size();
  for (const auto& t : added_) vocab_size_ = std::max(vocab_size_, t.id + 1);
  for (int32_t id : p_.extra_special_ids) vocab_size_ = std::max(vocab_size_, id + 1);
  special_.assign(static_cast<size_t>(vocab_size_), false);
  for (size_t i = 0; i < added_.size(); ++i) {
    const AddedToken& t = added_[i];
    KILN_CHECK(t.id >= 0, "added token '{}' has a negative id", t.content);
    added_strings_.emplace(t.id, t.content);
    added_ids_.emplace(t.content, t.id);
    if (t.special) special_[t.id] = true;
    if (t.normalized && p_.normalizer) {
      std::string s = t.content;
      p_.normalizer->normalize(s);
      normalized_matcher_.add(s, static_cast<int32_t>(i));
    } else if (t.normalized) {
      normalized_matcher_.add(t.content, static_cast<int32_t>(i));
    } else {
      raw_matcher_.add(t.content, static_cast<int32_t>(i));
    }
  }
  for (int32_t id : p_.extra_special_ids) special_[id] = true;
  bos_id_ = p_.bos_id;
  eos_ids_ = p_.eos_ids;
  chat_template_ = p_.chat_template;
}

namespace {

bool is_word_char(char32_t c) { return c == '_' || is_alphanumeric(c); }

// The code point that ends text[0, end).
char32_t char_before(std::string_view text, size_t end) {
  size_t b = end - 1;
  while (b > 0 && (static_cast<unsigned char>(text[b]) & 0xC0) == 0x80) --b;
  return next_code_point(text, b);
}

}  // namespace

void PipelineTokenizer::split_added(std::string_view text, const TokenMatcher& matcher, bool parse_special,
                                    std::vector<Span>& out) const {
  size_t start_offset = 0;
  size_t pos = 0;
  const size_t n = text.size();
  if (!matcher.empty()) {
    while (pos < n) {
      size_t len = 0;
      int32_t idx = matcher.longest_at(text, pos, len);
      if (idx < 0) {
        ++pos;
        continue;
      }
      const AddedToken& t = added_[idx];
      size_t start = pos, stop = pos + len;
      pos = stop;  // matching goes on after this match whether or not it is kept
      if (t.special && !parse_special) continue;
      if (t.single_word) {
        bool word_before = start > 0 && is_word_char(char_before(text, start));
        size_t q = stop;
        bool word_after = stop < n && is_word_char(next_code_point(text, q));
        if (word_before || word_after) continue;
      }
      if (t.lstrip) {
        size_t s = start;
        while (s > start_offset) {
          size_t b = s - 1;
          while (b > 0 && (static_cast<unsigned char>(text[b]) & 0xC0) == 0x80) --b;
          size_t q = b;
          if (!is_whitespace(next_code_point(text, q))) break;
          s = b;
        }
        start = s;
      }
      if (t.rstrip) {
        while (stop < n) {
          size_t q = stop;
          if (!is_whitespace(next_code_point(text, q))) break;
          stop = q;
        }
        pos = std::max(pos, stop);
      }
      if (start_offset < start) out.push_back({start_offset, start, -1});
      out.push_back({start, stop, t.id});
      start_offset = stop;
    }
  }
  if (start_offset < n) out.push_back({start_offset, n, -1});
}

void PipelineTokenizer::encode_words(std::string text, bool at_origin, std::vector<int32_t>& ids) const {
  if (text.empty()) return;
  std::vector<Piece> pieces;
  pieces.push_back({std::move(text), at_origin});
  if (p_.pre_tokenizer) p_.pre_tokenizer->pre_tokenize(pieces);
  for (const auto& piece : pieces) p_.model->tokenize(piece.text, ids);
}

void PipelineTokenizer::encode_text(std::string text, bool at_origin, bool parse_special,
                                    std::vector<int32_t>& ids) const {
  if (p_.normalizer) p_.normalizer->normalize(text);
  if (normalized_matcher_.empty()) {
    encode_words(std::move(text), at_origin, ids);
    return;
  }
  std::vector<Span> spans;
  split_added(text, normalized_matcher_, parse_special, spans);
  for (const auto& s : spans) {
    if (s.token >= 0) {
      ids.push_back(s.token);
    } else {
      encode_words(text.substr(s.begin, s.end - s.begin), at_origin && s.begin == 0, ids);
    }
  }
}

std::vector<int32_t> PipelineTokenizer::encode(std::string_view text, bool add_special, bool parse_special) const {
  std::string owned;
  if (!is_valid_utf8(text)) {
    owned = to_valid_utf8(text);
    text = owned;
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  std::vector<Span> spans;
  split_added(text, raw_matcher_, parse_special, spans);
  for (const auto& s : spans) {
    if (s.token >= 0) {
      ids.push_back(s.token);
    } else {
      encode_text(std::string(text.substr(s.begin, s.end - s.begin)), s.begin == 0, parse_special, ids);
    }
  }
  if (add_special && p_.post_processor) p_.post_processor->process(ids);
  return ids;
}

std::string PipelineTokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (skip_special && is_special(id)) continue;
    if (auto it = p_.decode_strings.find(id); it != p_.decode_strings.end()) {
      tokens.push_back(it->second);
      continue;
    }
    if (auto it = added_strings_.find(id); it != added_strings_.end()) {
      tokens.push_back(it->second);
      continue;
    }
    if (const std::string* s = p_.model->vocab().token(id)) tokens.push_back(*s);
  }
  std::string out;
  if (p_.decoder) {
    p_.decoder->decode_chain(tokens);
    for (const auto& t : tokens) out += t;
  } else {
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i) out += ' ';
      out += tokens[i];
    }
  }
  return out;
}

std::string PipelineTokenizer::id_to_token(int32_t id) const {
  if (auto it = added_strings_.find(id); it != added_strings_.end()) return it->second;
  if (const std::string* s = p_.model->vocab().token(id)) return *s;
  return {};
}

std::optional<int32_t> PipelineTokenizer::token_to_id(std::string_view token) const {
  if (auto it = added_ids_.find(std::string(token)); it != added_ids_.end()) return it->second;
  return p_.model->vocab().find(token);
}

}  // namespace kiln::tok
