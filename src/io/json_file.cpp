// read_json_file: a JSON file parsed with nlohmann::json, errors naming the file and the byte at fault.
#include "io/json_file.h"

#include <string>

#include "core/mapped_file.h"
#include "kiln/error.h"

namespace kiln::io {

namespace {

// nlohmann's messages start "[json.exception.parse_error.101] parse error at line 1, column 2: ";
// keep only what follows, on one line.
std::string short_parse_message(const char* what) {
  std::string m(what);
  const size_t tag = m.find("] ");
  if (tag != std::string::npos) m.erase(0, tag + 2);
  const size_t at = m.find("parse error");
  if (at != std::string::npos) {
    const size_t colon = m.find(": ", at);
    if (colon != std::string::npos) m.erase(0, colon + 2);
  }
  for (char& c : m) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return m;
}

}  // namespace

nlohmann::json read_json_file(const std::string& path) {
  MappedFile file(path);
  KILN_CHECK(file.size() > 0, "{}: invalid JSON at byte 0: the file is empty", path);
  try {
    return nlohmann::json::parse(file.data(), file.data() + file.size());
  } catch (const nlohmann::json::parse_error& e) {
    // nlohmann counts bytes from 1; report the 0-based offset of the byte at fault.
    KILN_THROW("{}: invalid JSON at byte {}: {}", path, e.byte > 0 ? e.byte - 1 : 0, short_parse_message(e.what()));
  } catch (const nlohmann::json::exception& e) {
    KILN_THROW("{}: invalid JSON: {}", path, short_parse_message(e.what()));
  }
}

}  // namespace kiln::io
