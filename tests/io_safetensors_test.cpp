// Tests of the safetensors reader: values read back exactly, sharded checkpoints, and clear errors.
#include <gtest/gtest.h>

#include <cstring>
#include <limits>

#include "fixtures/io/io_writers.h"
#include "io/safetensors.h"
#include "kiln/error.h"

namespace {

using kiln::DType;
using kiln::io::SafetensorsCheckpoint;
using kiln::io::SafetensorsFile;
using kiln::io::TensorEntry;
using namespace kiln_test;

// Expects `fn` to throw kiln::Error whose message contains every one of `parts`.
template <typename Fn>
void expect_error(Fn&& fn, std::initializer_list<std::string> parts) {
  try {
    fn();
    ADD_FAILURE() << "no kiln::Error thrown";
  } catch (const kiln::Error& e) {
    const std::string msg = e.what();
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "multi-line message: " << msg;
  }
}

std::vector<uint16_t> to_f16(const std::vector<float>& v) {
  std::vector<uint16_t> out;
  for (float f : v) out.push_back(kiln::f32_to_f16(f));
  return out;
}
std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> out;
  for (float f : v) out.push_back(kiln::f32_to_bf16(f));
  return out;
}

template <typename T>
std::vector<T> read_back(const TensorEntry& t) {
  std::vector<T> out(t.nbytes / sizeof(T));
  std::memcpy(out.data(), t.data, t.nbytes);
  return out;
}

TEST(Safetensors, ReadsF32F16Bf16Exactly) {
  TempDir dir("st_values");
  // Values exactly representable in each type, including negatives, zero, subnormal f16 and extremes.
  const std::vector<float> f32 = {1.5f, -2.25f, 0.0f, 3.0e38f, -1.0e-40f, 0.1f};
  const std::vector<float> f16v = {1.0f, -0.5f, 65504.0f, 0x1p-24f, -0x1p-14f, 0.0f, 3.140625f, -2.0f};
  const std::vector<float> bf16v = {1.0f, -3.0f, 0x1p100f, -0x1p-100f};
  const std::string path = dir.file("m.safetensors");
  write_file(path, make_safetensors({{"a.f32", "F32", {2, 3}, bytes_of(f32)},
                                     {"b.f16", "F16", {8}, bytes_of(to_f16(f16v))},
                                     {"c.bf16", "BF16", {2, 1, 2}, bytes_of(to_bf16(bf16v))}},
                                    {{"format", "pt"}, {"note", "hello"}}));
  SafetensorsFile f(path);
  EXPECT_EQ(f.path(), path);
  ASSERT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.metadata().at("note"), "hello");

  const TensorEntry& a = f.tensors()[0];
  EXPECT_EQ(a.name, "a.f32");
  EXPECT_EQ(a.dtype, DType::F32);
  EXPECT_EQ(a.shape, (kiln::Shape{2, 3}));
  EXPECT_EQ(a.nbytes, 24u);
  EXPECT_EQ(a.file, path);
  EXPECT_EQ(read_back<float>(a), f32);

  const TensorEntry& b = f.tensors()[1];
  EXPECT_EQ(b.dtype, DType::F16);
  EXPECT_EQ(b.shape, (kiln::Shape{8}));
  std::vector<float> got(8);
  kiln::convert_to_f32(DType::F16, read_back<uint16_t>(b).data(), got.data(), 8);
  EXPECT_EQ(got, f16v);

  const TensorEntry& c = f.tensors()[2];
  EXPECT_EQ(c.dtype, DType::BF16);
  EXPECT_EQ(c.shape, (kiln::Shape{2, 1, 2}));
  got.resize(4);
  kiln::convert_to_f32(DType::BF16, read_back<uint16_t>(c).data(), got.data(), 4);
  EXPECT_EQ(got, bf16v);

  // The tensor bytes are the mapped file's bytes (no copy), right after the header.
  const std::string raw = read_file(path);
  uint64_t header_len;
  std::memcpy(&header_len, raw.data(), 8);
  EXPECT_EQ(std::memcmp(a.data, raw.data() + 8 + header_len, 24), 0);
}

TEST(Safetensors, IntegerDtypesAndEmptyTensors) {
  TempDir dir("st_ints");
  const std::vector<int32_t> i32 = {-7, 0, std::numeric_limits<int32_t>::max()};
  const std::vector<int64_t> i64 = {std::numeric_limits<int64_t>::min(), 42};
  const std::vector<int8_t> i8 = {-128, 127, 0, 1};
  const std::vector<uint8_t> u8 = {255, 0};
  const std::string path = dir.file("ints.safetensors");
  write_file(path, make_safetensors({{"i32", "I32", {3}, bytes_of(i32)},
                                     {"i64", "I64", {2}, bytes_of(i64)},
                                     {"i8", "I8", {2, 2}, bytes_of(i8)},
                                     {"u8", "U8", {2}, bytes_of(u8)},
                                     {"empty", "F32", {0, 5}, ""},
                                     {"scalar", "F32", {}, bytes_of(std::vector<float>{7.0f})}}));
  SafetensorsCheckpoint ck(path);
  EXPECT_EQ(ck.get("i32").dtype, DType::I32);
  EXPECT_EQ(read_back<int32_t>(ck.get("i32")), i32);
  EXPECT_EQ(ck.get("i64").dtype, DType::I64);
  EXPECT_EQ(read_back<int64_t>(ck.get("i64")), i64);
  EXPECT_EQ(ck.get("i8").dtype, DType::I8);
  EXPECT_EQ(read_back<int8_t>(ck.get("i8")), i8);
  EXPECT_EQ(ck.get("u8").dtype, DType::U8);
  EXPECT_EQ(read_back<uint8_t>(ck.get("u8")), u8);
  EXPECT_EQ(ck.get("empty").nbytes, 0u);
  EXPECT_EQ(ck.get("empty").shape, (kiln::Shape{0, 5}));
  EXPECT_TRUE(ck.get("scalar").shape.empty());
  EXPECT_EQ(read_back<float>(ck.get("scalar")), std::vector<float>{7.0f});
  EXPECT_EQ(ck.names(), (std::vector<std::string>{"empty", "i32", "i64", "i8", "scalar", "u8"}));
}

TEST(Safetensors, FolderWithSingleFile) {
  TempDir dir("st_folder");
  write_file(dir.file("model.safetensors"),
             make_safetensors({{"w", "F32", {2}, bytes_of(std::vector<float>{1, 2})}}));
  SafetensorsCheckpoint ck(dir.path().string());
  EXPECT_EQ(ck.path(), dir.path().string());
  ASSERT_NE(ck.find("w"), nullptr);
  EXPECT_EQ(read_back<float>(*ck.find("w")), (std::vector<float>{1, 2}));
  EXPECT_EQ(ck.find("nope"), nullptr);
}

void write_sharded(const TempDir& dir) {
  write_file(dir.file("model-00001-of-00002.safetensors"),
             make_safetensors({{"layers.0.w", "F32", {2, 2}, bytes_of(std::vector<float>{1, 2, 3, 4})},
                               {"embed", "BF16", {3}, bytes_of(to_bf16({0.5f, -1.0f, 8.0f}))}}));
  write_file(dir.file("model-00002-of-00002.safetensors"),
             make_safetensors({{"layers.1.w", "F16", {2}, bytes_of(to_f16({-1.5f, 2.5f}))}}));
  write_file(dir.file("model.safetensors.index.json"), R"({
    "metadata": {"total_size": 30},
    "weight_map": {
      "layers.0.w": "model-00001-of-00002.safetensors",
      "embed": "model-00001-of-00002.safetensors",
      "layers.1.w": "model-00002-of-00002.safetensors"
    }
  })");
}

TEST(Safetensors, ShardedIndexFolder) {
  TempDir dir("st_sharded");
  write_sharded(dir);
  SafetensorsCheckpoint ck(dir.path().string());
  EXPECT_EQ(ck.names(), (std::vector<std::string>{"embed", "layers.0.w", "layers.1.w"}));
  EXPECT_EQ(read_back<float>(ck.get("layers.0.w")), (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(ck.get("layers.0.w").file, dir.file("model-00001-of-00002.safetensors"));
  const TensorEntry& l1 = ck.get("layers.1.w");
  EXPECT_EQ(l1.file, dir.file("model-00002-of-00002.safetensors"));
  EXPECT_EQ(l1.dtype, DType::F16);
  std::vector<float> got(2);
  kiln::convert_to_f32(DType::F16, read_back<uint16_t>(l1).data(), got.data(), 2);
  EXPECT_EQ(got, (std::vector<float>{-1.5f, 2.5f}));
  // The index file itself may be given as the path.
  SafetensorsCheckpoint by_index(dir.file("model.safetensors.index.json"));
  EXPECT_EQ(by_index.names().size(), 3u);
}

TEST(Safetensors, MissingTensorErrorNamesTensorAndCheckpoint) {
  TempDir dir("st_missing");
  write_sharded(dir);
  SafetensorsCheckpoint ck(dir.path().string());
  expect_error([&] { ck.get("lm_head.weight"); }, {dir.path().string(), "'lm_head.weight'", "not found"});
}

TEST(Safetensors, RefusesUnsupportedDtypes) {
  TempDir dir("st_dtype");
  for (const char* dt : {"F64", "I16", "BOOL", "F8_E4M3", "U64"}) {
    const std::string path = dir.file(std::string(dt) + ".safetensors");
    write_file(path, make_safetensors({{"ok", "F32", {1}, bytes_of(std::vector<float>{1})},
                                       {"bad.weight", dt, {1}, std::string(8, '\0')}}));
    expect_error([&] { SafetensorsFile f(path); }, {path, "'bad.weight'", dt, "not support"});
  }
}

TEST(Safetensors, MissingFilesAreClearErrors) {
  TempDir dir("st_files");
  expect_error([&] { SafetensorsCheckpoint ck(dir.file("absent")); }, {dir.file("absent"), "no such file"});
  expect_error([&] { SafetensorsCheckpoint ck(dir.path().string()); },
               {dir.path().string(), "model.safetensors.index.json"});
  // An index naming a shard that is not there.
  write_file(dir.file("model.safetensors.index.json"), R"({"weight_map": {"w": "shard-1.safetensors"}})");
  expect_error([&] { SafetensorsCheckpoint ck(dir.path().string()); }, {dir.file("shard-1.safetensors"), "cannot open"});
  // An index naming a tensor that its shard lacks.
  write_file(dir.file("shard-1.safetensors"), make_safetensors({{"v", "F32", {1}, bytes_of(std::vector<float>{1})}}));
  expect_error([&] { SafetensorsCheckpoint ck(dir.path().string()); }, {"model.safetensors.index.json", "'w'"});
  // Malformed index JSON.
  write_file(dir.file("model.safetensors.index.json"), R"({"weight_map": {"w": )");
  expect_error([&] { SafetensorsCheckpoint ck(dir.path().string()); },
               {"model.safetensors.index.json", "invalid JSON at byte"});
}

TEST(Safetensors, DuplicateTensorAcrossShardsIsAnError) {
  TempDir dir("st_dup");
  write_file(dir.file("a.safetensors"), make_safetensors({{"w", "F32", {1}, bytes_of(std::vector<float>{1})}}));
  write_file(dir.file("b.safetensors"), make_safetensors({{"w", "F32", {1}, bytes_of(std::vector<float>{2})},
                                                          {"v", "F32", {1}, bytes_of(std::vector<float>{3})}}));
  write_file(dir.file("model.safetensors.index.json"),
             R"({"weight_map": {"w": "a.safetensors", "v": "b.safetensors"}})");
  expect_error([&] { SafetensorsCheckpoint ck(dir.path().string()); }, {"'w'", "a.safetensors", "b.safetensors"});
}

// A file with a hand-written header; the data section is `data_bytes` zero bytes.
std::string raw_file(const std::string& header, size_t data_bytes) {
  std::string out;
  put_le<uint64_t>(out, header.size());
  return out + header + std::string(data_bytes, '\0');
}

TEST(Safetensors, HeaderValidation) {
  TempDir dir("st_header");
  const std::string p = dir.file("x.safetensors");
  auto check = [&](const std::string& bytes, std::initializer_list<std::string> parts) {
    write_file(p, bytes);
    std::vector<std::string> all{p};
    all.insert(all.end(), parts.begin(), parts.end());
    try {
      SafetensorsFile f(p);
      ADD_FAILURE() << "accepted: " << bytes.substr(8);
    } catch (const kiln::Error& e) {
      for (const auto& s : all) EXPECT_NE(std::string(e.what()).find(s), std::string::npos) << e.what();
    }
  };
  check("", {"truncated"});
  check(std::string("\x10\0\0\0\0\0\0\0{}", 10), {"truncated", "header length 16"});
  check(std::string("\xff\xff\xff\xff\xff\xff\xff\xff{}", 10), {"truncated"});
  check(raw_file("{not json}", 0), {"invalid JSON header"});
  check(raw_file("[1,2]", 0), {"not a JSON object"});
  check(raw_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4), {"'w'", "extends past"});
  check(raw_file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8), {"'w'", "needs 12"});
  check(raw_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8), {"'w'", "begin 8 > end 0"});
  check(raw_file(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8), {"'w'", "negative"});
  check(raw_file(R"({"w":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", 8), {"'w'", "not an integer"});
  check(raw_file(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", 8),
        {"'w'", "overflows"});
  check(raw_file(R"({"w":{"dtype":"F32","shape":[0,4294967296,4294967296],"data_offsets":[0,0]}})", 8),
        {"'w'", "overflows"});
  check(raw_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", 8), {"'w'", "data_offsets"});
  check(raw_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,-8]}})", 8), {"'w'", "data_offsets"});
  check(raw_file(R"({"w":{"shape":[2],"data_offsets":[0,8]}})", 8), {"'w'", "dtype"});
  check(raw_file(R"({"w":{"dtype":"F32","data_offsets":[0,8]}})", 8), {"'w'", "shape"});
  check(raw_file(R"({"w":7})", 8), {"'w'", "not a JSON object"});
  check(raw_file(R"({"__metadata__":{"a":1}})", 0), {"__metadata__", "'a'"});
  // A name with a newline is escaped so the message stays one line.
  check(raw_file("{\"a\\nb\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8), {"a\\x0ab", "F64"});
}

}  // namespace
