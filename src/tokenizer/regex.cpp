// PCRE2 wrapper (JIT when available) and the Oniguruma -> PCRE2 pattern translation.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer/regex.h"

#include <pcre2.h>

#include "kiln/error.h"

namespace kiln::tok {

namespace {

// Oniguruma's \s is the White_Space property; PCRE2's UCP \s also takes U+180E.
constexpr std::string_view kSpace = "\\p{White_Space}";
constexpr std::string_view kNotSpace = "\\P{White_Space}";
// Oniguruma's Unicode \w: letters, marks, decimal digits, connector punctuation.
constexpr std::string_view kWordInner = "\\p{L}\\p{M}\\p{Nd}\\p{Pc}";

std::string pcre2_error(int code) {
  PCRE2_UCHAR buf[256];
  pcre2_get_error_message(code, buf, sizeof(buf));
  return reinterpret_cast<const char*>(buf);
}

// Per-thread match state: a JIT stack larger than the default for long whitespace runs.
struct MatchState {
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* jit_stack = nullptr;
  MatchState() {
    context = pcre2_match_context_create(nullptr);
    jit_stack = pcre2_jit_stack_create(64 * 1024, 8 * 1024 * 1024, nullptr);
    if (context && jit_stack) pcre2_jit_stack_assign(context, nullptr, jit_stack);
  }
  ~MatchState() {
    if (jit_stack) pcre2_jit_stack_free(jit_stack);
    if (context) pcre2_match_context_free(context);
  }
};

MatchState& match_state() {
  thread_local MatchState state;
  return state;
}

bool is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

}  // namespace

std::string Regex::translate(std::string_view p) {
  std::string out;
  out.reserve(p.size() + 16);
  int class_depth = 0;  // inside [...] (Oniguruma allows nested classes)
  size_t i = 0;
  while (i < p.size()) {
    char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      char e = p[i + 1];
      switch (e) {
        case 's':
          out += kSpace;
          i += 2;
          continue;
        case 'S':
          out += kNotSpace;
          i += 2;
          continue;
        case 'w':
          if (class_depth > 0) {
            out += kWordInner;
          } else {
            out += "[";
            out += kWordInner;
            out += "]";
          }
          i += 2;
          continue;
        case 'W':
          if (class_depth == 0) {
            out += "[^";
            out += kWordInner;
            out += "]";
            i += 2;
            continue;
          }
          break;
        case 'h':  // Oniguruma: hexadecimal digit
          out += class_depth > 0 ? "0-9a-fA-F" : "[0-9a-fA-F]";
          i += 2;
          continue;
        case 'H':
          if (class_depth == 0) {
            out += "[^0-9a-fA-F]";
            i += 2;
            continue;
          }
          break;
        case 'u':
          if (i + 5 < p.size() + 0 && i + 6 <= p.size() && is_hex(p[i + 2]) && is_hex(p[i + 3]) && is_hex(p[i + 4]) &&
              is_hex(p[i + 5])) {
            out += "\\x{";
            out += p.substr(i + 2, 4);
            out += "}";
            i += 6;
            continue;
          }
          break;
        case 'p':
        case 'P':
          if (i + 2 < p.size() && p[i + 2] == '{') {
            size_t close = p.find('}', i + 3);
            if (close != std::string_view::npos) {
              out += p.substr(i, close + 1 - i);
              i = close + 1;
              continue;
            }
          }
          break;
        default:
          break;
      }
      out += c;
      out += e;
      i += 2;
      continue;
    }
    if (c == '[') {
      // A '[' inside a class starts a nested class only in Oniguruma; PCRE2 reads it literally
      // except for POSIX [:name:] forms, which both share.
      if (class_depth > 0 && i + 1 < p.size() && p[i + 1] == ':') {
        size_t close = p.find(":]", i + 2);
        if (close != std::string_view::npos) {
          out += p.substr(i, close + 2 - i);
          i = close + 2;
          continue;
        }
      }
      if (class_depth > 0) {
        out += "\\[";
        ++i;
        continue;
      }
      class_depth = 1;
      out += c;
      ++i;
      // A ']' right after '[' or '[^' is a literal member.
      if (i < p.size() && p[i] == '^') {
        out += '^';
        ++i;
      }
      if (i < p.size() && p[i] == ']') {
        out += "\\]";
        ++i;
      }
      continue;
    }
    if (c == ']' && class_depth > 0) {
      class_depth = 0;
      out += c;
      ++i;
      continue;
    }
    if (c == '(' && class_depth == 0 && i + 1 < p.size() && p[i + 1] == '?') {
      // Inline options: Ruby's (?m) is PCRE2's (?s) (dot matches newline).
      size_t j = i + 2;
      std::string opts;
      while (j < p.size() && (p[j] == 'i' || p[j] == 'm' || p[j] == 'x' || p[j] == '-')) {
        opts += p[j] == 'm' ? 's' : p[j];
        ++j;
      }
      if (!opts.empty() && j < p.size() && (p[j] == ')' || p[j] == ':')) {
        out += "(?";
        out += opts;
        i = j;
        continue;
      }
    }
    out += c;
    ++i;
  }
  return out;
}

std::string Regex::escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (std::string_view("\\^$.|?*+()[]{}-/#&~ \t\n\r\f\v").find(c) != std::string_view::npos) {
      if (c == '\n') {
        out += "\\n";
      } else if (c == '\t') {
        out += "\\t";
      } else if (c == '\r') {
        out += "\\r";
      } else if (c == '\f') {
        out += "\\f";
      } else if (c == '\v') {
        out += "\\x{0B}";
      } else if (c == ' ') {
        out += "\\x{20}";
      } else {
        out += '\\';
        out += c;
      }
    } else {
      out += c;
    }
  }
  return out;
}

Regex::Regex(std::string_view pattern) : pattern_(pattern) {
  std::string translated = translate(pattern);
  int err = 0;
  PCRE2_SIZE offset = 0;
  pcre2_compile_context* cctx = pcre2_compile_context_create(nullptr);
  pcre2_set_newline(cctx, PCRE2_NEWLINE_LF);
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE | PCRE2_NO_UTF_CHECK, &err, &offset, cctx);
  pcre2_compile_context_free(cctx);
  KILN_CHECK(code != nullptr, "tokenizer: cannot compile regex '{}' (as '{}'): {} at offset {}", pattern_, translated,
             pcre2_error(err), offset);
  code_ = code;
  jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
}

Regex::~Regex() {
  if (code_) pcre2_code_free(static_cast<pcre2_code*>(code_));
}

void Regex::for_each_match(std::string_view text, const std::function<void(size_t, size_t)>& fn) const {
  auto* code = static_cast<pcre2_code*>(code_);
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code, nullptr);
  KILN_CHECK(md != nullptr, "tokenizer: out of memory matching a regex");
  MatchState& state = match_state();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  const size_t n = text.size();
  while (pos <= n) {
    int rc = pcre2_match(code, subject, n, pos, PCRE2_NO_UTF_CHECK, md, state.context);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      pcre2_match_data_free(md);
      KILN_THROW("tokenizer: regex '{}' failed on a {}-byte text: {}", pattern_, n, pcre2_error(rc));
    }
    PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    size_t start = ov[0], end = ov[1];
    if (end > start) {
      fn(start, end);
      pos = end;
    } else {
      // Empty match: step over one character.
      if (start >= n) break;
      pos = start + 1;
      while (pos < n && (static_cast<unsigned char>(text[pos]) & 0xC0) == 0x80) ++pos;
    }
  }
  pcre2_match_data_free(md);
}

}  // namespace kiln::tok
