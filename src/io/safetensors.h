// safetensors checkpoints: one file or a sharded set (model.safetensors.index.json), memory-mapped.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/mapped_file.h"
#include "kiln/dtype.h"
#include "kiln/tensor.h"

namespace kiln::io {

// One tensor of a checkpoint: its bytes stay in the mapped file.
struct TensorEntry {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  const uint8_t* data = nullptr;
  size_t nbytes = 0;
  std::string file;  // the file it lives in, for error messages
};

// One .safetensors file. The header is validated completely at open (JSON, dtypes, shapes, offsets
// inside the file, sizes matching shapes); any problem throws kiln::Error naming the file.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  const std::vector<TensorEntry>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return file_.path(); }

 private:
  MappedFile file_;
  std::vector<TensorEntry> tensors_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a checkpoint folder (model.safetensors, or the shards an index names), or of a
// single .safetensors file path.
class SafetensorsCheckpoint {
 public:
  explicit SafetensorsCheckpoint(const std::string& path);
  // nullptr when absent.
  const TensorEntry* find(const std::string& name) const;
  // Throws kiln::Error naming the tensor and checkpoint when absent.
  const TensorEntry& get(const std::string& name) const;
  std::vector<std::string> names() const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorEntry*> index_;
};

}  // namespace kiln::io
