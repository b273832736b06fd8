// Pre-tokenizers (tokenizer.json "pre_tokenizer"): how a normalized text is cut into words.
#include <functional>

#include "kiln/error.h"
#include "tokenizer/pipeline.h"
#include "tokenizer/unicode.h"

namespace kiln::tok {

const char* const kGpt2Pattern = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

namespace {

using Ranges = std::vector<std::pair<size_t, size_t>>;

struct Segment {
  size_t begin, end;
  bool is_match;
};

// Cuts piece at the given delimiter matches according to behavior, appending the non-empty parts.
void split_piece(const Piece& piece, const Ranges& matches, SplitBehavior behavior, bool invert,
                 std::vector<Piece>& out) {
  const size_t n = piece.text.size();
  std::vector<Segment> segs;
  segs.reserve(matches.size() * 2 + 1);
  size_t prev = 0;
  for (auto [b, e] : matches) {
    if (b > prev) segs.push_back({prev, b, false});
    segs.push_back({b, e, true});
    prev = e;
  }
  if (prev < n) segs.push_back({prev, n, false});
  if (invert) {
    for (auto& s : segs) s.is_match = !s.is_match;
  }

  std::vector<std::pair<size_t, size_t>> parts;
  parts.reserve(segs.size());
  switch (behavior) {
    case SplitBehavior::Removed:
      for (const auto& s : segs) {
        if (!s.is_match) parts.emplace_back(s.begin, s.end);
      }
      break;
    case SplitBehavior::Isolated:
      for (const auto& s : segs) parts.emplace_back(s.begin, s.end);
      break;
    case SplitBehavior::MergedWithPrevious: {
      bool previous_match = false;
      for (const auto& s : segs) {
        if (s.is_match && !previous_match && !parts.empty()) {
          parts.back().second = s.end;
        } else {
          parts.emplace_back(s.begin, s.end);
        }
        previous_match = s.is_match;
      }
      break;
    }
    case SplitBehavior::MergedWithNext: {
      bool previous_match = false;
      for (size_t i = segs.size(); i-- > 0;) {
        const auto& s = segs[i];
        if (s.is_match && !previous_match && !parts.empty()) {
          parts.back().first = s.begin;
        } else {
          parts.emplace_back(s.begin, s.end);
        }
        previous_match = s.is_match;
      }
      std::reverse(parts.begin(), parts.end());
      break;
    }
    case SplitBehavior::Contiguous: {
      bool previous_match = false;
      for (const auto& s : segs) {
        if (s.is_match == previous_match && !parts.empty()) {
          parts.back().second = s.end;
        } else {
          parts.emplace_back(s.begin, s.end);
        }
        previous_match = s.is_match;
      }
      break;
    }
  }
  for (auto [b, e] : parts) {
    if (e > b) out.push_back({piece.text.substr(b, e - b), piece.at_origin && b == 0});
  }
}

// Every character for which pred holds is one delimiter match.
Ranges char_matches(std::string_view s, const std::function<bool(char32_t)>& pred) {
  Ranges m;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t start = pos;
    char32_t c = next_code_point(s, pos);
    if (pred(c)) m.emplace_back(start, pos);
  }
  return m;
}

void split_all(std::vector<Piece>& pieces, const std::function<void(const Piece&, Ranges&)>& find,
               SplitBehavior behavior, bool invert) {
  std::vector<Piece> out;
  out.reserve(pieces.size() * 2);
  Ranges m;
  for (const auto& p : pieces) {
    m.clear();
    find(p, m);
    if (m.empty() && !invert) {
      out.push_back(p);
      continue;
    }
    split_piece(p, m, behavior, invert, out);
  }
  pieces = std::move(out);
}

void split_by_char(std::vector<Piece>& pieces, const std::function<bool(char32_t)>& pred, SplitBehavior behavior) {
  split_all(
      pieces, [&](const Piece& p, Ranges& m) { m = char_matches(p.text, pred); }, behavior, false);
}

SplitBehavior parse_behavior(const nlohmann::json& j) {
  std::string b = j.get<std::string>();
  if (b == "Removed") return SplitBehavior::Removed;
  if (b == "Isolated") return SplitBehavior::Isolated;
  if (b == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::MergedWithNext;
  if (b == "Contiguous") return SplitBehavior::Contiguous;
  KILN_THROW("split behavior '{}' is not supported", b);
}

// Rust regex \w (Alphabetic, marks, decimal digits, connector punctuation, joiners).
constexpr const char* kRustWord = "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\x{200C}\\x{200D}";

class WhitespacePreTokenizer : public PreTokenizer {
 public:
  WhitespacePreTokenizer()
      : re_(std::string("[") + kRustWord + "]+|[^" + kRustWord + "\\p{White_Space}]+") {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_all(
        pieces, [&](const Piece& p, Ranges& m) { re_.for_each_match(p.text, [&](size_t b, size_t e) { m.emplace_back(b, e); }); },
        SplitBehavior::Removed, true);
  }

 private:
  Regex re_;
};

class WhitespaceSplitPreTokenizer : public PreTokenizer {
 public:
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_by_char(pieces, is_whitespace, SplitBehavior::Removed);
  }
};

class BertPreTokenizer : public PreTokenizer {
 public:
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_by_char(pieces, is_whitespace, SplitBehavior::Removed);
    split_by_char(pieces, is_punctuation, SplitBehavior::Isolated);
  }
};

class CharDelimiterPreTokenizer : public PreTokenizer {
 public:
  explicit CharDelimiterPreTokenizer(char32_t c) : c_(c) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_by_char(pieces, [&](char32_t c) { return c == c_; }, SplitBehavior::Removed);
  }

 private:
  char32_t c_;
};

char32_t single_char(const std::string& s, const char* what) {
  size_t pos = 0;
  KILN_CHECK(!s.empty(), "{} must be one character", what);
  char32_t c = next_code_point(s, pos);
  KILN_CHECK(pos == s.size(), "{} must be one character, got '{}'", what, s);
  return c;
}

}  // namespace

void SplitPreTokenizer::pre_tokenize(std::vector<Piece>& pieces) const {
  split_all(
      pieces, [&](const Piece& p, Ranges& m) { pattern_.find(p.text, m); }, behavior_, invert_);
}

ByteLevelPreTokenizer::ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex)
    : add_prefix_space_(add_prefix_space) {
  if (use_regex) regex_ = std::make_unique<Regex>(kGpt2Pattern);
}

void ByteLevelPreTokenizer::pre_tokenize(std::vector<Piece>& pieces) const {
  if (add_prefix_space_) {
    for (auto& p : pieces) {
      if (p.text.empty() || p.text[0] != ' ') p.text = " " + p.text;
    }
  }
  if (regex_) {
    split_all(
        pieces,
        [&](const Piece& p, Ranges& m) { regex_->for_each_match(p.text, [&](size_t b, size_t e) { m.emplace_back(b, e); }); },
        SplitBehavior::Isolated, false);
  }
  for (auto& p : pieces) p.text = byte_level_encode(p.text);
}

void MetaspacePreTokenizer::pre_tokenize(std::vector<Piece>& pieces) const {
  const Pattern space = Pattern::literal(" ");
  for (auto& p : pieces) {
    p.text = replace_all(p.text, space, replacement_);
    bool prepend = scheme_ == PrependScheme::Always || (scheme_ == PrependScheme::First && p.at_origin);
    if (prepend && p.text.compare(0, replacement_.size(), replacement_) != 0) p.text.insert(0, replacement_);
  }
  if (split_) {
    const Pattern rep = Pattern::literal(replacement_);
    split_all(
        pieces, [&](const Piece& p, Ranges& m) { rep.find(p.text, m); }, SplitBehavior::MergedWithNext, false);
  }
}

void DigitsPreTokenizer::pre_tokenize(std::vector<Piece>& pieces) const {
  split_by_char(pieces, is_numeric, individual_ ? SplitBehavior::Isolated : SplitBehavior::Contiguous);
}

void PunctuationPreTokenizer::pre_tokenize(std::vector<Piece>& pieces) const {
  split_by_char(pieces, is_punctuation, behavior_);
}

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& j) {
  if (j.is_null()) return nullptr;
  const std::string type = j.at("type").get<std::string>();
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PreTokenizer>> items;
    for (const auto& p : j.at("pretokenizers")) {
      if (auto q = make_pre_tokenizer(p)) items.push_back(std::move(q));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(items));
  }
  if (type == "ByteLevel") {
    return std::make_unique<ByteLevelPreTokenizer>(j.value("add_prefix_space", true), j.value("use_regex", true));
  }
  if (type == "Split") {
    return std::make_unique<SplitPreTokenizer>(Pattern::from_json(j.at("pattern")), parse_behavior(j.at("behavior")),
                                               j.value("invert", false));
  }
  if (type == "Metaspace") {
    std::string replacement = j.value("replacement", std::string("\xE2\x96\x81"));
    PrependScheme scheme = PrependScheme::Always;
    if (j.contains("prepend_scheme") && j.at("prepend_scheme").is_string()) {
      std::string s = j.at("prepend_scheme").get<std::string>();
      if (s == "always") {
        scheme = PrependScheme::Always;
      } else if (s == "first") {
        scheme = PrependScheme::First;
      } else if (s == "never") {
        scheme = PrependScheme::Never;
      } else {
        KILN_THROW("Metaspace prepend_scheme '{}' is not supported", s);
      }
    } else if (j.contains("add_prefix_space")) {
      scheme = j.at("add_prefix_space").get<bool>() ? PrependScheme::Always : PrependScheme::Never;
    }
    return std::make_unique<MetaspacePreTokenizer>(replacement, scheme, j.value("split", true));
  }
  if (type == "Digits") return std::make_unique<DigitsPreTokenizer>(j.value("individual_digits", false));
  if (type == "Punctuation") {
    SplitBehavior b = j.contains("behavior") ? parse_behavior(j.at("behavior")) : SplitBehavior::Isolated;
    return std::make_unique<PunctuationPreTokenizer>(b);
  }
  if (type == "Whitespace") return std::make_unique<WhitespacePreTokenizer>();
  if (type == "WhitespaceSplit") return std::make_unique<WhitespaceSplitPreTokenizer>();
  if (type == "BertPreTokenizer") return std::make_unique<BertPreTokenizer>();
  if (type == "CharDelimiterSplit") {
    return std::make_unique<CharDelimiterPreTokenizer>(
        single_char(j.at("delimiter").get<std::string>(), "CharDelimiterSplit delimiter"));
  }
  KILN_THROW("pre_tokenizer type '{}' is not supported", type);
}

}  // namespace kiln::tok
