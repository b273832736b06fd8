// Normalizers (tokenizer.json "normalizer") and the Pattern helper shared with other stages.
#include <utf8proc.h>

#include "kiln/error.h"
#include "tokenizer/pipeline.h"
#include "tokenizer/unicode.h"

namespace kiln::tok {

Pattern Pattern::literal(std::string s) {
  Pattern p;
  p.literal_ = std::move(s);
  return p;
}

Pattern Pattern::regex(std::string_view re) {
  Pattern p;
  p.regex_ = std::make_shared<Regex>(re);
  return p;
}

Pattern Pattern::from_json(const nlohmann::json& j) {
  if (j.is_string()) return literal(j.get<std::string>());
  KILN_CHECK(j.is_object(), "pattern must be {{\"String\": ...}} or {{\"Regex\": ...}}, got {}", j.dump());
  if (j.contains("String")) return literal(j.at("String").get<std::string>());
  if (j.contains("Regex")) return regex(j.at("Regex").get<std::string>());
  KILN_THROW("pattern must be {{\"String\": ...}} or {{\"Regex\": ...}}, got {}", j.dump());
}

void Pattern::find(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const {
  if (regex_) {
    regex_->for_each_match(text, [&](size_t b, size_t e) { out.emplace_back(b, e); });
    return;
  }
  if (literal_.empty()) return;
  size_t pos = 0;
  while ((pos = text.find(literal_, pos)) != std::string_view::npos) {
    out.emplace_back(pos, pos + literal_.size());
    pos += literal_.size();
  }
}

std::string replace_all(std::string_view s, const Pattern& pattern, std::string_view content) {
  std::vector<std::pair<size_t, size_t>> m;
  pattern.find(s, m);
  if (m.empty()) return std::string(s);
  std::string out;
  out.reserve(s.size() + m.size() * content.size());
  size_t prev = 0;
  for (auto [b, e] : m) {
    out.append(s.substr(prev, b - prev));
    out.append(content);
    prev = e;
  }
  out.append(s.substr(prev));
  return out;
}

void UnicodeNormalizer::normalize(std::string& s) const { s = tok::normalize(s, form_); }

void ReplaceNormalizer::normalize(std::string& s) const { s = replace_all(s, pattern_, content_); }

namespace {

bool is_mark(char32_t c) {
  int k = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return k == UTF8PROC_CATEGORY_MN || k == UTF8PROC_CATEGORY_MC || k == UTF8PROC_CATEGORY_ME;
}

// StripAccents drops every mark (Mn, Mc, Me); BERT's accent stripping only nonspacing ones (Mn).
std::string strip_marks(std::string_view s, bool nonspacing_only) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (pos < s.size()) {
    size_t start = pos;
    char32_t c = next_code_point(s, pos);
    if (c >= 0x300 && (nonspacing_only ? is_mark_nonspacing(c) : is_mark(c))) continue;
    out.append(s.substr(start, pos - start));
  }
  return out;
}

class LowercaseNormalizer : public Normalizer {
 public:
  void normalize(std::string& s) const override { s = to_lower(s); }
};

class StripNormalizer : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  void normalize(std::string& s) const override {
    size_t b = 0, e = s.size();
    if (left_) {
      while (b < e) {
        size_t pos = b;
        if (!is_whitespace(next_code_point(s, pos))) break;
        b = pos;
      }
    }
    if (right_) {
      while (e > b) {
        size_t start = e - 1;
        while (start > b && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
        size_t pos = start;
        if (!is_whitespace(next_code_point(s, pos))) break;
        e = start;
      }
    }
    s = s.substr(b, e - b);
  }

 private:
  bool left_, right_;
};

class StripAccentsNormalizer : public Normalizer {
 public:
  void normalize(std::string& s) const override { s = strip_marks(s, false); }
};

class BertNormalizer : public Normalizer {
 public:
  BertNormalizer(bool clean_text, bool chinese, bool strip_accents, bool lowercase)
      : clean_text_(clean_text), chinese_(chinese), strip_accents_(strip_accents), lowercase_(lowercase) {}
  void normalize(std::string& s) const override {
    std::string out;
    out.reserve(s.size());
    size_t pos = 0;
    while (pos < s.size()) {
      size_t start = pos;
      char32_t c = next_code_point(s, pos);
      if (clean_text_) {
        // Controls (Cc, Cf, Co; not unassigned code points) go first, then whitespace becomes ' '.
        bool control = c != '\t' && c != '\n' && c != '\r' && is_control(c) &&
                       utf8proc_category(static_cast<utf8proc_int32_t>(c)) != UTF8PROC_CATEGORY_CN;
        if (c == 0 || c == 0xFFFD || control) continue;
        if (is_whitespace(c)) {
          out.push_back(' ');
          continue;
        }
      }
      if (chinese_ && is_cjk_ideograph(c)) {
        out.push_back(' ');
        out.append(s, start, pos - start);
        out.push_back(' ');
        continue;
      }
      out.append(s, start, pos - start);
    }
    if (strip_accents_) out = strip_marks(tok::normalize(out, NormalForm::NFD), true);
    if (lowercase_) out = to_lower(out);
    s = std::move(out);
  }

 private:
  bool clean_text_, chinese_, strip_accents_, lowercase_;
};

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& j) {
  if (j.is_null()) return nullptr;
  const std::string type = j.at("type").get<std::string>();
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Normalizer>> items;
    for (const auto& n : j.at("normalizers")) {
      if (auto p = make_normalizer(n)) items.push_back(std::move(p));
    }
    return std::make_unique<SequenceNormalizer>(std::move(items));
  }
  if (type == "Prepend") return std::make_unique<PrependNormalizer>(j.at("prepend").get<std::string>());
  if (type == "Replace") {
    return std::make_unique<ReplaceNormalizer>(Pattern::from_json(j.at("pattern")), j.at("content").get<std::string>());
  }
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(NormalForm::NFC);
  if (type == "NFD") return std::make_unique<UnicodeNormalizer>(NormalForm::NFD);
  if (type == "NFKC") return std::make_unique<UnicodeNormalizer>(NormalForm::NFKC);
  if (type == "NFKD") return std::make_unique<UnicodeNormalizer>(NormalForm::NFKD);
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "Strip") {
    return std::make_unique<StripNormalizer>(j.value("strip_left", true), j.value("strip_right", true));
  }
  if (type == "StripAccents") return std::make_unique<StripAccentsNormalizer>();
  if (type == "BertNormalizer") {
    bool lowercase = j.value("lowercase", true);
    bool strip = lowercase;
    if (j.contains("strip_accents") && j.at("strip_accents").is_boolean()) strip = j.at("strip_accents").get<bool>();
    return std::make_unique<BertNormalizer>(j.value("clean_text", true), j.value("handle_chinese_chars", true), strip,
                                            lowercase);
  }
  KILN_THROW("normalizer type '{}' is not supported", type);
}

}  // namespace kiln::tok
