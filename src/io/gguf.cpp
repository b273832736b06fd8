// GGUF v2/v3 reader: bounds-checked parsing of metadata and the tensor table, and block dequantization.
#include "io/gguf.h"

#include <bit>
#include <cstring>
#include <limits>
#include <optional>
#include <string_view>

#include "io/io_util.h"
#include "kiln/dtype.h"
#include "kiln/error.h"

namespace kiln::io {

using detail::printable;

namespace {

struct TypeTraits {
  const char* name;
  uint32_t block;  // values per block
  uint32_t size;   // bytes per block
};

// Indexed by ggml type number; name == nullptr marks numbers that are unused or retired.
constexpr TypeTraits kTypes[] = {
    {"F32", 1, 4},         {"F16", 1, 2},        {"Q4_0", 32, 18},     {"Q4_1", 32, 20},     {nullptr, 0, 0},
    {nullptr, 0, 0},       {"Q5_0", 32, 22},     {"Q5_1", 32, 24},     {"Q8_0", 32, 34},     {"Q8_1", 32, 36},
    {"Q2_K", 256, 84},     {"Q3_K", 256, 110},   {"Q4_K", 256, 144},   {"Q5_K", 256, 176},   {"Q6_K", 256, 210},
    {"Q8_K", 256, 292},    {"IQ2_XXS", 256, 66}, {"IQ2_XS", 256, 74},  {"IQ3_XXS", 256, 98}, {"IQ1_S", 256, 50},
    {"IQ4_NL", 32, 18},    {"IQ3_S", 256, 110},  {"IQ2_S", 256, 82},   {"IQ4_XS", 256, 136}, {"I8", 1, 1},
    {"I16", 1, 2},         {"I32", 1, 4},        {"I64", 1, 8},        {"F64", 1, 8},        {"IQ1_M", 256, 56},
    {"BF16", 1, 2},        {nullptr, 0, 0},      {nullptr, 0, 0},      {nullptr, 0, 0},      {"TQ1_0", 256, 54},
    {"TQ2_0", 256, 66},    {nullptr, 0, 0},      {nullptr, 0, 0},      {nullptr, 0, 0},      {"MXFP4", 32, 17},
};

const TypeTraits* type_traits(uint32_t type) {
  if (type >= std::size(kTypes) || kTypes[type].name == nullptr) return nullptr;
  return &kTypes[type];
}

// GGUF metadata value types.
enum : uint32_t {
  kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7,
  kString = 8, kArray = 9, kU64 = 10, kI64 = 11, kF64 = 12, kNumValueTypes = 13,
};

// The fewest bytes one value of each type takes in the file (an array: its type and count).
constexpr uint64_t kMinValueBytes[kNumValueTypes] = {1, 1, 2, 2, 4, 4, 4, 1, 8, 12, 8, 8, 8};

// Nested arrays are allowed, but not deep enough to exhaust the stack.
constexpr int kMaxArrayDepth = 8;

// Every array element becomes a GgufValue (tens of bytes), so a corrupt count over a large file could
// ask for many times the file's size in memory. Real files hold a few million elements at most
// (tokens, scores, types and merges of a 256k vocabulary).
constexpr uint64_t kMaxArrayElements = uint64_t{1} << 24;

uint16_t load_u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t load_u32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}
uint64_t load_u64(const uint8_t* p) { return static_cast<uint64_t>(load_u32(p)) | (static_cast<uint64_t>(load_u32(p + 4)) << 32); }

// A cursor over the mapped file. Every read checks the bytes remaining; failures name the file and
// the part being read ("metadata entry 3 ('general.name')", "tensor info 12").
class Reader {
 public:
  Reader(const std::string& path, const uint8_t* data, size_t size) : path_(path), data_(data), size_(size) {}

  size_t pos() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }

  void context(const char* what, uint64_t index = kNoIndex) {
    what_ = what;
    index_ = index;
    key_ = nullptr;
  }
  void context_key(const std::string* key) { key_ = key; }

  std::string where() const {
    std::string w = index_ == kNoIndex ? std::string(what_) : fmt::format("{} {}", what_, index_);
    if (key_ != nullptr) w += fmt::format(" ('{}')", printable(*key_));
    return w;
  }
  [[noreturn]] void truncated() const { KILN_THROW("{}: truncated: {} extends past end of file", path_, where()); }
  template <typename... Args>
  [[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) const {
    KILN_THROW("{}: {}: {}", path_, where(), fmt::format(f, std::forward<Args>(args)...));
  }

  // Counts array elements across the whole file against kMaxArrayElements.
  uint64_t array_elements = 0;

  const uint8_t* take(uint64_t n) {
    if (n > remaining()) truncated();
    const uint8_t* p = data_ + pos_;
    pos_ += static_cast<size_t>(n);
    return p;
  }
  uint8_t u8() { return *take(1); }
  uint16_t u16() { return load_u16(take(2)); }
  uint32_t u32() { return load_u32(take(4)); }
  uint64_t u64() { return load_u64(take(8)); }
  std::string str() {
    const uint64_t n = u64();
    const uint8_t* p = take(n);
    return std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
  }

 private:
  static constexpr uint64_t kNoIndex = std::numeric_limits<uint64_t>::max();
  const std::string& path_;
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  const char* what_ = "header";
  uint64_t index_ = kNoIndex;
  const std::string* key_ = nullptr;
};

GgufValue read_value(Reader& r, uint32_t type, int depth) {
  switch (type) {
    case kU8: return {uint64_t{r.u8()}};
    case kI8: return {int64_t{static_cast<int8_t>(r.u8())}};
    case kU16: return {uint64_t{r.u16()}};
    case kI16: return {int64_t{static_cast<int16_t>(r.u16())}};
    case kU32: return {uint64_t{r.u32()}};
    case kI32: return {int64_t{static_cast<int32_t>(r.u32())}};
    case kF32: return {double{std::bit_cast<float>(r.u32())}};
    case kBool: {
      const uint8_t b = r.u8();
      if (b > 1) r.fail("bool value {} is neither 0 nor 1", b);
      return {b == 1};
    }
    case kString: return {r.str()};
    case kArray: {
      const uint32_t elem = r.u32();
      const uint64_t count = r.u64();
      if (elem >= kNumValueTypes) r.fail("unknown array element type {}", elem);
      if (elem == kArray && depth + 1 >= kMaxArrayDepth) r.fail("arrays nested more than {} deep", kMaxArrayDepth);
      // Check the limits and the bytes remaining before reserving, so a corrupt count cannot allocate.
      if (count > kMaxArrayElements - r.array_elements) {
        r.fail("array of {} elements: metadata arrays may hold {} elements in all", count, kMaxArrayElements);
      }
      if (count > r.remaining() / kMinValueBytes[elem]) r.truncated();
      r.array_elements += count;
      GgufArray a;
      a.reserve(static_cast<size_t>(count));
      for (uint64_t i = 0; i < count; ++i) a.push_back(read_value(r, elem, depth + 1));
      return {std::move(a)};
    }
    case kU64: return {r.u64()};
    case kI64: return {static_cast<int64_t>(r.u64())};
    case kF64: return {std::bit_cast<double>(r.u64())};
    default: r.fail("unknown value type {}", type);
  }
}

const char* value_kind(const GgufValue& v) {
  switch (v.v.index()) {
    case 0: return "an unsigned integer";
    case 1: return "a signed integer";
    case 2: return "a float";
    case 3: return "a bool";
    case 4: return "a string";
    default: return "an array";
  }
}

bool as_int(const GgufValue& v, int64_t* out) {
  if (const auto* u = std::get_if<uint64_t>(&v.v)) {
    if (*u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
    *out = static_cast<int64_t>(*u);
    return true;
  }
  if (const auto* i = std::get_if<int64_t>(&v.v)) {
    *out = *i;
    return true;
  }
  return false;
}

bool as_float(const GgufValue& v, double* out) {
  if (const auto* d = std::get_if<double>(&v.v)) {
    *out = *d;
    return true;
  }
  if (const auto* u = std::get_if<uint64_t>(&v.v)) {
    *out = static_cast<double>(*u);
    return true;
  }
  if (const auto* i = std::get_if<int64_t>(&v.v)) {
    *out = static_cast<double>(*i);
    return true;
  }
  return false;
}

}  // namespace

const char* ggml_type_name(uint32_t type) {
  const TypeTraits* t = type_traits(type);
  return t == nullptr ? "unknown" : t->name;
}

bool ggml_type_block(uint32_t type, uint32_t* block_values, uint32_t* block_bytes) {
  const TypeTraits* t = type_traits(type);
  if (t == nullptr) return false;
  *block_values = t->block;
  *block_bytes = t->size;
  return true;
}

Shape GgufTensorInfo::shape() const { return Shape(ne.rbegin(), ne.rend()); }

int64_t GgufTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;  // validated at open not to overflow
  return n;
}

GgufFile::GgufFile(const std::string& path) : file_(path) {
  const uint8_t* data = file_.data();
  const size_t size = file_.size();
  KILN_CHECK(size >= 4 && std::memcmp(data, "GGUF", 4) == 0, "{}: not a GGUF file (bad magic)", path);
  Reader r(path, data, size);
  r.take(4);
  version_ = r.u32();
  KILN_CHECK(version_ != 1, "{}: GGUF version 1 is not supported (only versions 2 and 3)", path);
  KILN_CHECK(!((version_ & 0xffffu) == 0 && version_ != 0), "{}: big-endian GGUF files are not supported", path);
  KILN_CHECK(version_ == 2 || version_ == 3, "{}: unsupported GGUF version {} (only versions 2 and 3)", path, version_);
  const uint64_t tensor_count = r.u64();
  const uint64_t kv_count = r.u64();
  // A key/value pair takes at least 13 bytes and a tensor info 24: refuse counts the file cannot hold
  // before reserving anything.
  KILN_CHECK(kv_count <= r.remaining() / 13, "{}: truncated: {} metadata entries cannot fit in the {} bytes left",
             path, kv_count, r.remaining());
  KILN_CHECK(tensor_count <= r.remaining() / 24 && kv_count * 13 + tensor_count * 24 <= r.remaining(),
             "{}: truncated: {} tensor infos cannot fit in the {} bytes left", path, tensor_count, r.remaining());

  // Some published files repeat a key with the same value (ggml-vocab-dbrx.gguf: general.file_type);
  // that is accepted, a repeat with another value is not. Values are compared as raw bytes.
  std::map<std::string, std::pair<size_t, size_t>> raw_values;
  for (uint64_t i = 0; i < kv_count; ++i) {
    r.context("metadata entry", i);
    std::string key = r.str();
    r.context_key(&key);
    const size_t begin = r.pos();
    const uint32_t type = r.u32();
    GgufValue value = read_value(r, type, 0);
    const size_t len = r.pos() - begin;
    const auto [it, inserted] = raw_values.emplace(key, std::make_pair(begin, len));
    if (!inserted) {
      if (it->second.second != len || std::memcmp(data + it->second.first, data + begin, len) != 0) {
        r.fail("duplicate key with a different value");
      }
      continue;
    }
    metadata_.emplace(std::move(key), std::move(value));
  }

  alignment_ = 32;
  if (const auto it = metadata_.find("general.alignment"); it != metadata_.end()) {
    int64_t a = 0;
    KILN_CHECK(as_int(it->second, &a), "{}: general.alignment is {}, expected an integer", path,
               value_kind(it->second));
    KILN_CHECK(a > 0 && a <= (int64_t{1} << 30) && (a & (a - 1)) == 0,
               "{}: general.alignment {} is not a power of two in [1, 2^30]", path, a);
    alignment_ = static_cast<uint64_t>(a);
  }

  tensors_.reserve(static_cast<size_t>(tensor_count));
  for (uint64_t i = 0; i < tensor_count; ++i) {
    r.context("tensor info", i);
    GgufTensorInfo t;
    t.name = r.str();
    r.context_key(&t.name);
    const uint32_t n_dims = r.u32();
    if (n_dims > 4) r.fail("{} dimensions (at most 4)", n_dims);
    // The product of the dimensions (zeros counted as 1, so strides never overflow) must fit in int64.
    uint64_t bound = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t n = r.u64();
      const uint64_t nz = n == 0 ? 1 : n;
      if (nz > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / bound) {
        r.fail("dimensions overflow (ne[{}] = {})", d, n);
      }
      bound *= nz;
      t.ne.push_back(static_cast<int64_t>(n));
    }
    t.type = r.u32();
    t.offset = r.u64();
    if (tensor_index_.count(t.name) != 0) r.fail("duplicate tensor name");
    tensor_index_.emplace(t.name, tensors_.size());
    tensors_.push_back(std::move(t));
  }

  const uint64_t end_of_infos = r.pos();
  data_offset_ = end_of_infos + (alignment_ - end_of_infos % alignment_) % alignment_;
  if (tensors_.empty()) return;
  KILN_CHECK(data_offset_ <= size, "{}: truncated: the data section (at byte {}) starts past end of file", path,
             data_offset_);
  const uint64_t avail = size - data_offset_;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    GgufTensorInfo& t = tensors_[i];
    const std::string name = printable(t.name);
    KILN_CHECK(t.offset % alignment_ == 0, "{}: tensor {} ('{}'): offset {} is not a multiple of the alignment {}",
               path, i, name, t.offset, alignment_);
    KILN_CHECK(t.offset <= avail, "{}: truncated: tensor {} ('{}') data at offset {} starts past end of file", path, i,
               name, t.offset);
    const TypeTraits* tt = type_traits(t.type);
    if (tt == nullptr) continue;  // listed, but its size is unknown: data stays null
    const int64_t row = t.ne.empty() ? 1 : t.ne[0];
    KILN_CHECK(row % tt->block == 0,
               "{}: tensor {} ('{}'): row length {} is not a multiple of the {}-value blocks of type {}", path, i, name,
               row, tt->block, tt->name);
    const uint64_t blocks = static_cast<uint64_t>(t.numel()) / tt->block;
    KILN_CHECK(blocks <= (avail - t.offset) / tt->size,
               "{}: truncated: tensor {} ('{}') data ({} blocks of {} at offset {}) extends past end of file", path, i,
               name, blocks, tt->name, t.offset);
    t.nbytes = static_cast<size_t>(blocks * tt->size);
    t.data = data + data_offset_ + t.offset;
  }
}

const GgufValue* GgufFile::find(const std::string& key) const {
  const auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

const GgufValue& GgufFile::value(const std::string& key) const {
  const GgufValue* v = find(key);
  KILN_CHECK(v != nullptr, "{}: metadata key '{}' is missing", path(), printable(key));
  return *v;
}

std::string GgufFile::get_string(const std::string& key) const {
  const GgufValue& v = value(key);
  const auto* s = std::get_if<std::string>(&v.v);
  KILN_CHECK(s != nullptr, "{}: metadata key '{}' is {}, expected a string", path(), printable(key), value_kind(v));
  return *s;
}

int64_t GgufFile::get_int(const std::string& key) const {
  const GgufValue& v = value(key);
  int64_t out = 0;
  KILN_CHECK(as_int(v, &out), "{}: metadata key '{}' is {}, expected an integer that fits int64", path(),
             printable(key), value_kind(v));
  return out;
}

double GgufFile::get_float(const std::string& key) const {
  const GgufValue& v = value(key);
  double out = 0;
  KILN_CHECK(as_float(v, &out), "{}: metadata key '{}' is {}, expected a number", path(), printable(key),
             value_kind(v));
  return out;
}

bool GgufFile::get_bool(const std::string& key) const {
  const GgufValue& v = value(key);
  const auto* b = std::get_if<bool>(&v.v);
  KILN_CHECK(b != nullptr, "{}: metadata key '{}' is {}, expected a bool", path(), printable(key), value_kind(v));
  return *b;
}

const GgufArray& GgufFile::get_array(const std::string& key) const {
  const GgufValue& v = value(key);
  const auto* a = std::get_if<GgufArray>(&v.v);
  KILN_CHECK(a != nullptr, "{}: metadata key '{}' is {}, expected an array", path(), printable(key), value_kind(v));
  return *a;
}

std::vector<std::string> GgufFile::get_string_array(const std::string& key) const {
  const GgufArray& a = get_array(key);
  std::vector<std::string> out;
  out.reserve(a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    const auto* s = std::get_if<std::string>(&a[i].v);
    KILN_CHECK(s != nullptr, "{}: metadata key '{}': element {} is {}, expected a string", path(), printable(key), i,
               value_kind(a[i]));
    out.push_back(*s);
  }
  return out;
}

std::vector<int64_t> GgufFile::get_int_array(const std::string& key) const {
  const GgufArray& a = get_array(key);
  std::vector<int64_t> out(a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    KILN_CHECK(as_int(a[i], &out[i]), "{}: metadata key '{}': element {} is {}, expected an integer", path(),
               printable(key), i, value_kind(a[i]));
  }
  return out;
}

std::vector<double> GgufFile::get_float_array(const std::string& key) const {
  const GgufArray& a = get_array(key);
  std::vector<double> out(a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    KILN_CHECK(as_float(a[i], &out[i]), "{}: metadata key '{}': element {} is {}, expected a number", path(),
               printable(key), i, value_kind(a[i]));
  }
  return out;
}

std::string GgufFile::get_string(const std::string& key, const std::string& def) const {
  return has(key) ? get_string(key) : def;
}
int64_t GgufFile::get_int(const std::string& key, int64_t def) const { return has(key) ? get_int(key) : def; }
double GgufFile::get_float(const std::string& key, double def) const { return has(key) ? get_float(key) : def; }
bool GgufFile::get_bool(const std::string& key, bool def) const { return has(key) ? get_bool(key) : def; }

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  const auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

std::optional<DType> ggml_type_dtype(uint32_t type) {
  switch (static_cast<GgmlType>(type)) {
    case GgmlType::F32: return DType::F32;
    case GgmlType::F16: return DType::F16;
    case GgmlType::BF16: return DType::BF16;
    case GgmlType::Q8_0: return DType::Q8_0;
    case GgmlType::Q4_0: return DType::Q4_0;
    case GgmlType::Q4_1: return DType::Q4_1;
    case GgmlType::Q5_0: return DType::Q5_0;
    case GgmlType::Q5_1: return DType::Q5_1;
    case GgmlType::Q4_K: return DType::Q4_K;
    case GgmlType::Q5_K: return DType::Q5_K;
    case GgmlType::Q6_K: return DType::Q6_K;
    default: return std::nullopt;
  }
}

DType GgufFile::tensor_dtype(const GgufTensorInfo& t) const {
  const std::optional<DType> d = ggml_type_dtype(t.type);
  KILN_CHECK(d.has_value(), "{}: tensor '{}' has type {} ({}), which kiln does not support (F32, F16, BF16, Q8_0, "
             "Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K)", path(), printable(t.name), ggml_type_name(t.type), t.type);
  // Guard against a GgufTensorInfo that did not come from this (validated) file.
  int64_t numel = 1;
  for (int64_t dim : t.ne) {
    KILN_CHECK(dim >= 0 && (dim == 0 || numel <= std::numeric_limits<int64_t>::max() / dim),
               "{}: tensor '{}': bad shape", path(), printable(t.name));
    numel *= dim;
  }
  const DTypeBlock b = dtype_block(*d);
  KILN_CHECK(numel % b.values == 0 && (numel == 0 || t.data != nullptr) &&
                 t.nbytes == static_cast<size_t>(numel / b.values * b.bytes),
             "{}: tensor '{}': data does not match its shape and type", path(), printable(t.name));
  return *d;
}

std::vector<float> GgufFile::dequantize(const GgufTensorInfo& t) const {
  const DType d = tensor_dtype(t);
  std::vector<float> out(static_cast<size_t>(t.numel()));
  if (!out.empty()) convert_to_f32(d, t.data, out.data(), out.size());
  return out;
}

}  // namespace kiln::io
