// UTF-8 and Unicode helpers for the tokenizer: code point iteration, character classes as Rust's
// `char` methods define them, normalization forms (utf8proc) and GPT-2's byte-to-character map.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace kiln::tok {

// Decodes the code point at s[pos] and advances pos. Invalid or truncated sequences yield
// U+FFFD and advance by the length of their maximal invalid subpart (as Rust's from_utf8_lossy).
char32_t next_code_point(std::string_view s, size_t& pos);
void append_utf8(std::string& out, char32_t cp);
// Byte length of the UTF-8 sequence that starts with lead byte b (1 for invalid lead bytes).
inline size_t utf8_len(unsigned char b) {
  if (b < 0x80) return 1;
  if ((b >> 5) == 0x6) return 2;
  if ((b >> 4) == 0xE) return 3;
  if ((b >> 3) == 0x1E) return 4;
  return 1;
}
bool is_valid_utf8(std::string_view s);
// Replaces every maximal invalid subpart with U+FFFD, as String::from_utf8_lossy does.
std::string to_valid_utf8(std::string_view s);
// Length in bytes of the longest prefix of s that ends on a complete UTF-8 sequence.
size_t complete_utf8_prefix(std::string_view s);

// Character classes, matching Rust's `char` methods.
bool is_whitespace(char32_t c);    // White_Space property
bool is_numeric(char32_t c);       // general category N*
bool is_alphabetic(char32_t c);    // approximated as L*, Nl, Mn, Mc
bool is_alphanumeric(char32_t c);  // is_alphabetic || is_numeric
bool is_punctuation(char32_t c);   // general category P* or ASCII punctuation
bool is_control(char32_t c);       // general category Cc, Cf, Co, Cn (as BERT's cleanup)
bool is_mark_nonspacing(char32_t c);  // Mn
bool is_cjk_ideograph(char32_t c);    // the CJK blocks BERT pads with spaces

enum class NormalForm { NFC, NFD, NFKC, NFKD };
std::string normalize(std::string_view s, NormalForm form);
// Rust's char::to_lowercase applied to every character (İ becomes "i̇").
std::string to_lower(std::string_view s);

// GPT-2's reversible byte <-> printable character map used by byte-level BPE.
struct ByteLevelTable {
  std::array<char32_t, 256> byte_to_char;
  std::array<int16_t, 324> char_to_byte;  // indexed by code point (< 324), -1 when none
  ByteLevelTable();
};
const ByteLevelTable& byte_level_table();
// Maps every byte of s to its byte-level character.
std::string byte_level_encode(std::string_view s);

}  // namespace kiln::tok
