// PCRE2 regexes for pre-tokenizers, normalizers and decoders, with the Oniguruma/Rust-regex syntax
// of Hugging Face tokenizer files translated where PCRE2 reads it differently.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

namespace kiln::tok {

class Regex {
 public:
  // Compiles with UTF + UCP (+ multiline anchors, as Oniguruma's Ruby syntax has); throws
  // kiln::Error naming the pattern when it does not compile.
  explicit Regex(std::string_view pattern);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Calls fn(start, end) for each non-overlapping, non-empty match, left to right. text must be
  // valid UTF-8.
  void for_each_match(std::string_view text, const std::function<void(size_t, size_t)>& fn) const;
  const std::string& pattern() const { return pattern_; }

  // A pattern that matches s literally.
  static std::string escape(std::string_view s);
  // The PCRE2 spelling of an Oniguruma (Ruby syntax) pattern.
  static std::string translate(std::string_view pattern);

 private:
  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code_8
  bool jit_ = false;
};

}  // namespace kiln::tok
