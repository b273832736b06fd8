// Decoders (tokenizer.json "decoder") and post-processors ("post_processor").
#include "kiln/error.h"
#include "tokenizer/pipeline.h"
#include "tokenizer/unicode.h"

namespace kiln::tok {

void ByteLevelDecoder::decode_chain(std::vector<std::string>& tokens) const {
  const auto& table = byte_level_table();
  std::string bytes;
  for (const auto& t : tokens) {
    size_t start = bytes.size();
    bool ok = true;
    size_t pos = 0;
    while (pos < t.size()) {
      char32_t c = next_code_point(t, pos);
      if (c >= table.char_to_byte.size() || table.char_to_byte[c] < 0) {
        ok = false;
        break;
      }
      bytes.push_back(static_cast<char>(table.char_to_byte[c]));
    }
    if (!ok) {  // a token with a character outside the map is taken as its raw bytes
      bytes.resize(start);
      bytes += t;
    }
  }
  tokens.assign(1, to_valid_utf8(bytes));
}

void ReplaceDecoder::decode_chain(std::vector<std::string>& tokens) const {
  for (auto& t : tokens) t = replace_all(t, pattern_, content_);
}

namespace {
// "<0xAB>" -> 0xAB, or -1.
int parse_byte_token(std::string_view t) {
  if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return -1;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  int hi = hex(t[3]), lo = hex(t[4]);
  if (hi < 0 || lo < 0) return -1;
  return hi * 16 + lo;
}
}  // namespace

void ByteFallbackDecoder::decode_chain(std::vector<std::string>& tokens) const {
  std::vector<std::string> out;
  out.reserve(tokens.size());
  std::string pending;
  auto flush = [&] {
    if (pending.empty()) return;
    if (is_valid_utf8(pending)) {
      out.push_back(pending);
    } else {
      for (size_t i = 0; i < pending.size(); ++i) out.emplace_back("\xEF\xBF\xBD");
    }
    pending.clear();
  };
  for (auto& t : tokens) {
    int b = parse_byte_token(t);
    if (b >= 0) {
      pending.push_back(static_cast<char>(b));
    } else {
      flush();
      out.push_back(std::move(t));
    }
  }
  flush();
  tokens = std::move(out);
}

void FuseDecoder::decode_chain(std::vector<std::string>& tokens) const {
  std::string all;
  for (const auto& t : tokens) all += t;
  tokens.assign(1, std::move(all));
}

void StripDecoder::decode_chain(std::vector<std::string>& tokens) const {
  for (auto& t : tokens) {
    // Up to start_ leading and stop_ trailing characters equal to content_.
    size_t b = 0, count = 0;
    while (count < start_ && b < t.size()) {
      size_t pos = b;
      if (next_code_point(t, pos) != content_) break;
      b = pos;
      ++count;
    }
    size_t e = t.size();
    count = 0;
    while (count < stop_ && e > b) {
      size_t s = e - 1;
      while (s > b && (static_cast<unsigned char>(t[s]) & 0xC0) == 0x80) --s;
      size_t pos = s;
      if (next_code_point(t, pos) != content_) break;
      e = s;
      ++count;
    }
    t = t.substr(b, e - b);
  }
}

namespace {

class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, bool strip_first) : rep_(std::move(replacement)), strip_first_(strip_first) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    // In the first token every replacement character is dropped (not only a leading one), as HF does.
    const Pattern rep = Pattern::literal(rep_);
    for (size_t i = 0; i < tokens.size(); ++i) {
      tokens[i] = replace_all(tokens[i], rep, i == 0 && strip_first_ ? "" : " ");
    }
  }

 private:
  std::string rep_;
  bool strip_first_;
};

class BpeSuffixDecoder : public Decoder {
 public:
  explicit BpeSuffixDecoder(std::string suffix) : suffix_(std::move(suffix)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    const Pattern p = Pattern::literal(suffix_);
    for (size_t i = 0; i < tokens.size(); ++i) {
      tokens[i] = replace_all(tokens[i], p, i + 1 == tokens.size() ? "" : " ");
    }
  }

 private:
  std::string suffix_;
};

// transformers' clean_up_tokenization.
std::string cleanup(std::string s) {
  static const std::pair<const char*, const char*> kRules[] = {
      {" .", "."},     {" ?", "?"},    {" !", "!"},    {" ,", ","},   {" ' ", "'"},   {" n't", "n't"},
      {" 'm", "'m"},   {" do not", " don't"},          {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (const auto& [from, to] : kRules) s = replace_all(s, Pattern::literal(from), to);
  return s;
}

class WordPieceDecoder : public Decoder {
 public:
  WordPieceDecoder(std::string prefix, bool cleanup) : prefix_(std::move(prefix)), cleanup_(cleanup) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      auto& t = tokens[i];
      if (i != 0) {
        if (!prefix_.empty() && t.compare(0, prefix_.size(), prefix_) == 0) {
          t.erase(0, prefix_.size());
        } else {
          t = " " + t;
        }
      }
      if (cleanup_) t = cleanup(t);
    }
  }

 private:
  std::string prefix_;
  bool cleanup_;
};

class CtcDecoder : public Decoder {
 public:
  CtcDecoder(std::string pad, std::string delim, bool cleanup)
      : pad_(std::move(pad)), delim_(std::move(delim)), cleanup_(cleanup) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    // Repeats collapse, the pad token is removed (also inside tokens), empty results dropped.
    std::vector<std::string> out;
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i > 0 && tokens[i] == tokens[i - 1]) continue;
      std::string t = replace_all(tokens[i], Pattern::literal(pad_), "");
      if (cleanup_) t = replace_all(cleanup(t), Pattern::literal(delim_), " ");
      if (!t.empty()) out.push_back(std::move(t));
    }
    tokens = std::move(out);
  }

 private:
  std::string pad_, delim_;
  bool cleanup_;
};

}  // namespace

std::unique_ptr<Decoder> make_decoder(const nlohmann::json& j) {
  if (j.is_null()) return nullptr;
  const std::string type = j.at("type").get<std::string>();
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Decoder>> items;
    for (const auto& d : j.at("decoders")) {
      if (auto p = make_decoder(d)) items.push_back(std::move(p));
    }
    return std::make_unique<SequenceDecoder>(std::move(items));
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Replace") {
    return std::make_unique<ReplaceDecoder>(Pattern::from_json(j.at("pattern")), j.at("content").get<std::string>());
  }
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    std::string content = j.value("content", std::string(" "));
    size_t pos = 0;
    KILN_CHECK(!content.empty(), "Strip decoder content must be one character");
    char32_t c = next_code_point(content, pos);
    return std::make_unique<StripDecoder>(c, j.value("start", size_t{0}), j.value("stop", size_t{0}));
  }
  if (type == "Metaspace") {
    bool strip_first = true;
    if (j.contains("prepend_scheme") && j.at("prepend_scheme").is_string()) {
      strip_first = j.at("prepend_scheme").get<std::string>() != "never";
    } else if (j.contains("add_prefix_space")) {
      strip_first = j.at("add_prefix_space").get<bool>();
    }
    return std::make_unique<MetaspaceDecoder>(j.value("replacement", std::string("\xE2\x96\x81")), strip_first);
  }
  if (type == "BPEDecoder") return std::make_unique<BpeSuffixDecoder>(j.value("suffix", std::string("</w>")));
  if (type == "WordPiece") {
    return std::make_unique<WordPieceDecoder>(j.value("prefix", std::string("##")), j.value("cleanup", true));
  }
  if (type == "CTC") {
    return std::make_unique<CtcDecoder>(j.value("pad_token", std::string("<pad>")),
                                        j.value("word_delimiter_token", std::string("|")), j.value("cleanup", true));
  }
  KILN_THROW("decoder type '{}' is not supported", type);
}

// --- Post-processors ---

void TemplatePostProcessor::process(std::vector<int32_t>& ids) const {
  if (before_.empty() && after_.empty()) return;
  std::vector<int32_t> out;
  out.reserve(before_.size() + ids.size() + after_.size());
  out.insert(out.end(), before_.begin(), before_.end());
  out.insert(out.end(), ids.begin(), ids.end());
  out.insert(out.end(), after_.begin(), after_.end());
  ids = std::move(out);
}

namespace {

class SequencePostProcessor : public PostProcessor {
 public:
  explicit SequencePostProcessor(std::vector<std::unique_ptr<PostProcessor>> items) : items_(std::move(items)) {}
  void process(std::vector<int32_t>& ids) const override {
    for (const auto& p : items_) p->process(ids);
  }
  std::vector<int32_t> leading_ids() const override {
    for (const auto& p : items_) {
      auto l = p->leading_ids();
      if (!l.empty()) return l;
    }
    return {};
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> items_;
};

int32_t pair_id(const nlohmann::json& j, const char* what) {
  KILN_CHECK(j.is_array() && j.size() == 2, "post_processor {} must be [token, id]", what);
  return j.at(1).get<int32_t>();
}

}  // namespace

std::unique_ptr<PostProcessor> make_post_processor(const nlohmann::json& j) {
  if (j.is_null()) return nullptr;
  const std::string type = j.at("type").get<std::string>();
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PostProcessor>> items;
    for (const auto& p : j.at("processors")) {
      if (auto q = make_post_processor(p)) items.push_back(std::move(q));
    }
    return std::make_unique<SequencePostProcessor>(std::move(items));
  }
  if (type == "ByteLevel") return std::make_unique<TemplatePostProcessor>(std::vector<int32_t>{}, std::vector<int32_t>{});
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    return std::make_unique<TemplatePostProcessor>(std::vector<int32_t>{pair_id(j.at("cls"), "cls")},
                                                   std::vector<int32_t>{pair_id(j.at("sep"), "sep")});
  }
  if (type == "TemplateProcessing") {
    const auto& specials = j.at("special_tokens");
    std::vector<int32_t> before, after;
    bool seen_sequence = false;
    for (const auto& item : j.at("single")) {
      if (item.contains("Sequence")) {
        seen_sequence = true;
        continue;
      }
      KILN_CHECK(item.contains("SpecialToken"), "TemplateProcessing item {} is neither Sequence nor SpecialToken",
                 item.dump());
      std::string name = item.at("SpecialToken").at("id").get<std::string>();
      KILN_CHECK(specials.contains(name), "TemplateProcessing special token '{}' is not in special_tokens", name);
      auto& dst = seen_sequence ? after : before;
      for (const auto& id : specials.at(name).at("ids")) dst.push_back(id.get<int32_t>());
    }
    return std::make_unique<TemplatePostProcessor>(std::move(before), std::move(after));
  }
  KILN_THROW("post_processor type '{}' is not supported", type);
}

}  // namespace kiln::tok
