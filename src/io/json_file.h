// Reading JSON files (config.json, tokenizer.json, ...) with errors that name the file.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace kiln::io {

// Parses a JSON file; throws kiln::Error "PATH: ..." when missing or malformed.
nlohmann::json read_json_file(const std::string& path);

}  // namespace kiln::io
