// safetensors reader: header validation, dtype mapping, and sharded checkpoints (index.json).
#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <string_view>

#include "io/io_util.h"
#include "io/json_file.h"
#include "kiln/error.h"

namespace kiln::io {

namespace fs = std::filesystem;
using detail::printable;

namespace {

bool safetensors_dtype(std::string_view s, DType* out) {
  static constexpr struct {
    std::string_view name;
    DType dtype;
  } kMap[] = {{"F32", DType::F32}, {"F16", DType::F16}, {"BF16", DType::BF16}, {"I32", DType::I32},
              {"I64", DType::I64}, {"I8", DType::I8},   {"U8", DType::U8}};
  for (const auto& m : kMap) {
    if (m.name == s) {
      *out = m.dtype;
      return true;
    }
  }
  return false;
}

// Short, one-line rendering of a JSON value for error messages (never the whole of a big value).
std::string json_brief(const nlohmann::json& j) {
  // ensure_ascii and `replace` keep it one line and free of exceptions.
  std::string s = j.dump(-1, ' ', true, nlohmann::json::error_handler_t::replace);
  if (s.size() > 60) {
    s.resize(57);
    s.append("...");
  }
  return s;
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

SafetensorsFile::SafetensorsFile(const std::string& path) : file_(path) {
  const size_t size = file_.size();
  KILN_CHECK(size >= 8, "{}: truncated: {} bytes, too short for a safetensors header length", path, size);
  const uint64_t header_len = read_u64_le(file_.data());
  KILN_CHECK(header_len <= size - 8, "{}: truncated: header length {} exceeds the {} bytes after it", path, header_len,
             size - 8);
  KILN_CHECK(header_len >= 2, "{}: header length {} is too small for a JSON object", path, header_len);
  const uint8_t* header = file_.data() + 8;
  const uint8_t* data = header + header_len;
  const uint64_t data_size = size - 8 - header_len;

  nlohmann::json j;
  try {
    j = nlohmann::json::parse(header, header + header_len);
  } catch (const nlohmann::json::parse_error& e) {
    KILN_THROW("{}: invalid JSON header at byte {} of the header", path, e.byte > 0 ? e.byte - 1 : 0);
  } catch (const nlohmann::json::exception& e) {
    KILN_THROW("{}: invalid JSON header", path);
  }
  KILN_CHECK(j.is_object(), "{}: the header is not a JSON object", path);

  struct Pending {
    TensorEntry entry;
    uint64_t begin;
  };
  std::vector<Pending> pending;
  pending.reserve(j.size());
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& v = it.value();
    if (name == "__metadata__") {
      KILN_CHECK(v.is_object(), "{}: __metadata__ is not a JSON object", path);
      for (auto m = v.begin(); m != v.end(); ++m) {
        KILN_CHECK(m.value().is_string(), "{}: __metadata__ entry '{}' is not a string", path, printable(m.key()));
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    KILN_CHECK(v.is_object(), "{}: tensor '{}': header entry is not a JSON object", path, printable(name));
    const auto dt = v.find("dtype");
    KILN_CHECK(dt != v.end() && dt->is_string(), "{}: tensor '{}': missing or non-string dtype", path, printable(name));
    const std::string& dtype_str = dt->get_ref<const std::string&>();
    TensorEntry e;
    e.name = name;
    e.file = path;
    KILN_CHECK(safetensors_dtype(dtype_str, &e.dtype),
               "{}: tensor '{}' has dtype {}, which kiln does not support (supported: F32, F16, BF16, I32, I64, I8, U8)",
               path, printable(name), printable(dtype_str));

    const auto sh = v.find("shape");
    KILN_CHECK(sh != v.end() && sh->is_array(), "{}: tensor '{}': missing or non-array shape", path, printable(name));
    // Overflow-safe: the product of the dimensions (zeros counted as 1, so that strides computed from
    // the shape never overflow either) must fit in int64 and the byte count in size_t.
    uint64_t numel = 1;
    uint64_t stride_bound = 1;
    const uint64_t limit = static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / dtype_size(e.dtype);
    for (const auto& d : *sh) {
      KILN_CHECK(d.is_number_integer(), "{}: tensor '{}': shape entry {} is not an integer", path, printable(name),
                 json_brief(d));
      KILN_CHECK(d.is_number_unsigned(), "{}: tensor '{}': negative dimension {} in shape", path, printable(name),
                 json_brief(d));
      const uint64_t dim = d.get<uint64_t>();
      const uint64_t nz = dim == 0 ? 1 : dim;
      KILN_CHECK(nz <= limit / stride_bound, "{}: tensor '{}': shape {} overflows", path, printable(name), json_brief(*sh));
      stride_bound *= nz;
      numel *= dim;
      e.shape.push_back(static_cast<int64_t>(dim));
    }

    const auto off = v.find("data_offsets");
    KILN_CHECK(off != v.end() && off->is_array() && off->size() == 2,
               "{}: tensor '{}': data_offsets must be an array of two integers", path, printable(name));
    KILN_CHECK((*off)[0].is_number_unsigned() && (*off)[1].is_number_unsigned(),
               "{}: tensor '{}': data_offsets {} are not non-negative integers", path, printable(name), json_brief(*off));
    const uint64_t begin = (*off)[0].get<uint64_t>();
    const uint64_t end = (*off)[1].get<uint64_t>();
    KILN_CHECK(begin <= end, "{}: tensor '{}': data_offsets begin {} > end {}", path, printable(name), begin, end);
    KILN_CHECK(end <= data_size, "{}: truncated: tensor '{}' data [{}, {}) extends past the {}-byte data section",
               path, printable(name), begin, end, data_size);
    const uint64_t nbytes = numel * dtype_size(e.dtype);
    KILN_CHECK(end - begin == nbytes, "{}: tensor '{}': {} bytes in data_offsets, but {} {} needs {}", path, printable(name),
               end - begin, dtype_str, shape_str(e.shape), nbytes);
    e.data = data + begin;
    e.nbytes = static_cast<size_t>(nbytes);
    pending.push_back({std::move(e), begin});
  }
  // File order, which is how the bytes are laid out (and stable for a given file).
  std::stable_sort(pending.begin(), pending.end(), [](const Pending& a, const Pending& b) { return a.begin < b.begin; });
  tensors_.reserve(pending.size());
  for (auto& p : pending) tensors_.push_back(std::move(p.entry));
}

SafetensorsCheckpoint::SafetensorsCheckpoint(const std::string& path) : path_(path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  KILN_CHECK(!ec && fs::exists(st), "{}: no such file or folder", path);

  auto add_file = [&](const std::string& file) -> SafetensorsFile& {
    files_.push_back(std::make_unique<SafetensorsFile>(file));
    SafetensorsFile& f = *files_.back();
    for (const TensorEntry& t : f.tensors()) {
      const auto [it, inserted] = index_.emplace(t.name, &t);
      KILN_CHECK(inserted, "{}: tensor '{}' appears in both {} and {}", path, printable(t.name), it->second->file, file);
    }
    return f;
  };

  auto load_index = [&](const std::string& index_path) {
    const fs::path folder = fs::path(index_path).parent_path();
    const nlohmann::json j = read_json_file(index_path);
    KILN_CHECK(j.is_object(), "{}: not a JSON object", index_path);
    const auto wm = j.find("weight_map");
    KILN_CHECK(wm != j.end() && wm->is_object(), "{}: missing or non-object weight_map", index_path);
    // Shards in first-seen order of their names (sorted for determinism: weight_map is sorted by key).
    std::vector<std::string> shards;
    std::set<std::string> seen;
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      KILN_CHECK(it.value().is_string(), "{}: weight_map entry '{}' is not a string", index_path, printable(it.key()));
      const std::string& shard = it.value().get_ref<const std::string&>();
      KILN_CHECK(!shard.empty() && fs::path(shard).is_relative(),
                 "{}: weight_map entry '{}' names shard '{}', which is not a relative file name", index_path,
                 printable(it.key()), printable(shard));
      if (seen.insert(shard).second) shards.push_back(shard);
    }
    KILN_CHECK(!shards.empty(), "{}: weight_map names no tensors", index_path);
    std::sort(shards.begin(), shards.end());
    for (const std::string& shard : shards) add_file((folder / shard).string());
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      const std::string shard_path = (folder / it.value().get_ref<const std::string&>()).string();
      const auto found = index_.find(it.key());
      KILN_CHECK(found != index_.end(), "{}: weight_map names tensor '{}' in {}, but no shard holds it", index_path,
                 printable(it.key()), shard_path);
      KILN_CHECK(found->second->file == shard_path, "{}: weight_map names tensor '{}' in {}, but it is in {}",
                 index_path, printable(it.key()), shard_path, found->second->file);
    }
  };

  if (fs::is_directory(st)) {
    const fs::path dir(path);
    const fs::path index = dir / "model.safetensors.index.json";
    const fs::path single = dir / "model.safetensors";
    if (fs::exists(index, ec)) {
      load_index(index.string());
    } else if (fs::exists(single, ec)) {
      add_file(single.string());
    } else {
      KILN_THROW("{}: no model.safetensors or model.safetensors.index.json in this folder", path);
    }
  } else {
    const std::string_view p(path);
    if (p.size() >= 5 && p.substr(p.size() - 5) == ".json") {
      load_index(path);
    } else {
      add_file(path);
    }
  }
}

const TensorEntry* SafetensorsCheckpoint::find(const std::string& name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second;
}

const TensorEntry& SafetensorsCheckpoint::get(const std::string& name) const {
  const TensorEntry* t = find(name);
  KILN_CHECK(t != nullptr, "{}: tensor '{}' not found in the checkpoint ({} tensors)", path_, printable(name),
             index_.size());
  return *t;
}

std::vector<std::string> SafetensorsCheckpoint::names() const {
  std::vector<std::string> out;
  out.reserve(index_.size());
  for (const auto& kv : index_) out.push_back(kv.first);
  return out;
}

}  // namespace kiln::io
