// Tokenizer::from_path (which loader a path needs) and the streaming IncrementalDetokenizer.
#include "kiln/tokenizer.h"

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "kiln/error.h"
#include "tokenizer/pipeline_tokenizer.h"

namespace kiln {

namespace {

namespace fs = std::filesystem;

bool ends_with(const std::string& s, const char* suffix) {
  size_t n = std::strlen(suffix);
  if (s.size() < n) return false;
  for (size_t i = 0; i < n; ++i) {
    if (std::tolower(static_cast<unsigned char>(s[s.size() - n + i])) != suffix[i]) return false;
  }
  return true;
}

bool has_gguf_magic(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  return in.read(magic, 4) && std::memcmp(magic, "GGUF", 4) == 0;
}

// Errors from the loaders name the path; make sure every one does, on one line.
[[noreturn]] void rethrow_naming(const std::string& path, const std::exception& e) {
  std::string msg = e.what();
  for (char& c : msg) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  if (msg.find(path) == std::string::npos) msg = path + ": " + msg;
  throw Error(msg);
}

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::from_path(const std::string& path) {
  std::error_code ec;
  auto status = fs::status(path, ec);
  KILN_CHECK(!ec && fs::exists(status), "{}: no such file or folder", path);
  try {
    if (fs::is_directory(status)) {
      fs::path dir(path);
      if (fs::exists(dir / "tokenizer.json")) return tok::load_hf_tokenizer((dir / "tokenizer.json").string(), path);
      if (fs::exists(dir / "tokenizer.model")) {
        KILN_THROW("{}: no tokenizer.json in this folder (a SentencePiece tokenizer.model alone is not supported)",
                   path);
      }
      KILN_THROW("{}: no tokenizer.json in this folder", path);
    }
    if (ends_with(path, ".json")) return tok::load_hf_tokenizer(path, "");
    if (ends_with(path, ".gguf") || has_gguf_magic(path)) return tok::load_gguf_tokenizer(path);
    if (ends_with(path, ".bin")) return tok::load_llama2c_tokenizer(path);
  } catch (const Error& e) {
    rethrow_naming(path, e);
  } catch (const std::exception& e) {
    rethrow_naming(path, e);
  }
  KILN_THROW("{}: not a tokenizer (expected a folder with tokenizer.json, a .json, .gguf or llama2.c .bin file)",
             path);
}

// ---------------- IncrementalDetokenizer ----------------
//
// The text is decoded over a window ids_[prefix_offset_..]. Everything from ids_[read_offset_..]
// on is "pending": base_ starts as decode(ids_[prefix_offset_..read_offset_]) and grows with what is
// shown from the pending ids, so of decode(window) only what follows base_ is new. New text is shown up to (not including) a trailing
// run of U+FFFD, which may still become a character when more bytes arrive. Once the window decodes
// with no such tail, the window moves up so that decoding stays cheap, keeping one shown token
// before it as context (so SentencePiece's leading-space strip applies to that token, not to new text).

namespace {
constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

size_t without_replacement_tail(const std::string& s) {
  size_t n = s.size();
  while (n >= 3 && std::string_view(s).substr(n - 3, 3) == kReplacement) n -= 3;
  return n;
}
}  // namespace

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer, std::span<const int32_t> prefix,
                                               bool skip_special)
    : tokenizer_(tokenizer), skip_special_(skip_special), ids_(prefix.begin(), prefix.end()) {
  for (size_t i = ids_.size(); i-- > 0;) {
    if (!(skip_special_ && tokenizer_.is_special(ids_[i]))) {
      last_shown_ = i;
      break;
    }
  }
  read_offset_ = ids_.size();
  prefix_offset_ = context_start(read_offset_, 6);
  base_ = decode_range(prefix_offset_, read_offset_);
}

namespace {
// True for a <0xNN> token whose byte continues a UTF-8 sequence (10xxxxxx).
bool is_continuation_byte_token(const Tokenizer& tok, int32_t id) {
  std::string t = tok.id_to_token(id);
  if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return false;
  const std::string hex = t.substr(3, 2);  // kept alive: `end` points into it
  char* end = nullptr;
  long v = std::strtol(hex.c_str(), &end, 16);
  return end != nullptr && *end == '\0' && (v & 0xC0) == 0x80;
}
}  // namespace

size_t IncrementalDetokenizer::context_start(size_t end, size_t want) const {
  // Go back over `want` ids, and further to the last id that is shown text (skipped special ids
  // are not context: the leading-space strip would fall on the first new token).
  size_t start = end >= want ? end - want : 0;
  if (last_shown_ < start) start = last_shown_;
  // Never start inside a character spelled by <0xNN> tokens: ByteFallback decodes a run of them as
  // a whole, and a run cut mid-character decodes as U+FFFDs.
  for (int k = 0; k < 3 && start > 0 && start < end && is_continuation_byte_token(tokenizer_, ids_[start]); ++k) --start;
  return start;
}

std::string IncrementalDetokenizer::decode_range(size_t begin, size_t end) const {
  return tokenizer_.decode(std::span<const int32_t>(ids_.data() + begin, end - begin), skip_special_);
}

std::string IncrementalDetokenizer::push(int32_t id) {
  if (!(skip_special_ && tokenizer_.is_special(id))) last_shown_ = ids_.size();
  ids_.push_back(id);
  std::string text = decode_range(prefix_offset_, ids_.size());
  // base_ holds everything shown from this window; a decode that no longer starts with it (a byte
  // run that is invalid so far) waits for more ids.
  if (text.compare(0, base_.size(), base_) != 0) return {};
  size_t stable = without_replacement_tail(text);
  std::string out;
  if (stable > base_.size()) {
    out = text.substr(base_.size(), stable - base_.size());
    base_ += out;
  }
  if (stable == text.size()) {
    // Complete: everything up to here is shown; restart the window near the end.
    read_offset_ = ids_.size();
    prefix_offset_ = context_start(read_offset_, 1);
    base_ = decode_range(prefix_offset_, read_offset_);
  }
  return out;
}

std::string IncrementalDetokenizer::flush() {
  std::string text = decode_range(prefix_offset_, ids_.size());
  std::string out;
  if (text.size() > base_.size() && text.compare(0, base_.size(), base_) == 0) out = text.substr(base_.size());
  read_offset_ = ids_.size();
  prefix_offset_ = context_start(read_offset_, 1);
  base_ = decode_range(prefix_offset_, read_offset_);
  return out;
}

}  // namespace kiln
