// Small helpers shared by the io/ readers (internal to src/io).
#pragma once

#include <string>
#include <string_view>

namespace kiln::io::detail {

// Text taken from a file, made safe for a one-line error message: control and non-ASCII bytes are
// written as \xNN and anything past `max` bytes is cut to "...".
inline std::string printable(std::string_view s, size_t max = 96) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(s.size() < max ? s.size() : max);
  for (size_t i = 0; i < s.size(); ++i) {
    if (out.size() >= max) {
      out += "...";
      break;
    }
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

}  // namespace kiln::io::detail
