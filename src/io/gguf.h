// GGUF v2/v3 files: metadata, tensor table, and tensors dequantized to f32.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "core/mapped_file.h"
#include "kiln/tensor.h"

namespace kiln::io {

// ggml tensor types (the numbering of the GGUF format).
enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15, BF16 = 30,
};
const char* ggml_type_name(uint32_t type);  // "Q4_0", ...; "unknown" for numbers ggml does not define
// Values and bytes per block of a ggml type (1 and the element size for plain types); false when unknown.
bool ggml_type_block(uint32_t type, uint32_t* block_values, uint32_t* block_bytes);
// The kiln DType of a ggml type kiln reads (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K).
std::optional<DType> ggml_type_dtype(uint32_t type);

struct GgufValue;
using GgufArray = std::vector<GgufValue>;
// Integers of every width are widened to int64_t/uint64_t, floats to double.
struct GgufValue {
  std::variant<uint64_t, int64_t, double, bool, std::string, GgufArray> v;
};

struct GgufTensorInfo {
  std::string name;
  uint32_t type = 0;            // a GgmlType value
  std::vector<int64_t> ne;      // ggml order: ne[0] is the fastest-moving (row length)
  uint64_t offset = 0;          // from the start of the data section
  // The bytes in the mapped file. For a type number this reader does not know, both stay null/0
  // (the tensor is listed, but its size cannot be known).
  const uint8_t* data = nullptr;
  size_t nbytes = 0;
  // The shape in row-major (PyTorch) order: ne reversed.
  Shape shape() const;
  // Product of ne (1 for a 0-dimensional tensor).
  int64_t numel() const;
};

// Everything is validated at open (magic, version, counts, string lengths, types, tensor extents
// inside the file); problems throw kiln::Error naming the file and what is wrong.
class GgufFile {
 public:
  explicit GgufFile(const std::string& path);

  uint32_t version() const { return version_; }
  const std::string& path() const { return file_.path(); }
  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  bool has(const std::string& key) const { return metadata_.count(key) != 0; }
  // nullptr when absent.
  const GgufValue* find(const std::string& key) const;
  // general.alignment (default 32) and the byte offset of the data section in the file.
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }

  // Typed getters; throw kiln::Error naming the key when missing or of another type.
  std::string get_string(const std::string& key) const;
  int64_t get_int(const std::string& key) const;      // any integer type
  double get_float(const std::string& key) const;     // any float or integer type
  bool get_bool(const std::string& key) const;
  std::vector<std::string> get_string_array(const std::string& key) const;
  std::vector<int64_t> get_int_array(const std::string& key) const;
  std::vector<double> get_float_array(const std::string& key) const;
  const GgufArray& get_array(const std::string& key) const;  // any array, e.g. nested ones
  // With a default when the key is absent (still throw on a type mismatch).
  std::string get_string(const std::string& key, const std::string& def) const;
  int64_t get_int(const std::string& key, int64_t def) const;
  double get_float(const std::string& key, double def) const;
  bool get_bool(const std::string& key, bool def) const;

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(const std::string& name) const;

  // The kiln type of a tensor (F32, F16, BF16 or a block type), its data checked against its shape; other ggml
  // types throw kiln::Error naming the tensor and the type.
  DType tensor_dtype(const GgufTensorInfo& t) const;
  // Dequantizes a tensor to f32 in row-major order (numel = product of ne), for the types tensor_dtype knows.
  std::vector<float> dequantize(const GgufTensorInfo& t) const;

 private:
  const GgufValue& value(const std::string& key) const;

  MappedFile file_;
  uint32_t version_ = 0;
  std::map<std::string, GgufValue> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> tensor_index_;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
};

}  // namespace kiln::io
