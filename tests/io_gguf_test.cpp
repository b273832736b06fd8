// Tests of the GGUF reader: every metadata value type, F32/F16/BF16/Q8_0/Q4_0/Q4_1 dequantization,
// validation errors, and the llama.cpp vocab files (tests/fixtures/llama.cpp-vocab).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>

#include "fixtures/io/io_writers.h"
#include "io/gguf.h"
#include "kiln/error.h"

namespace {

using kiln::io::GgmlType;
using kiln::io::GgufArray;
using kiln::io::GgufFile;
using kiln::io::GgufTensorInfo;
using namespace kiln_test;

constexpr uint32_t t(GgmlType g) { return static_cast<uint32_t>(g); }

template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const kiln::Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "multi-line message: " << msg;
    return msg;
  }
  return "(no error)";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::vector<float> random_values(Rng& rng, size_t n, float lo, float hi) {
  std::vector<float> v(n);
  for (float& x : v) x = rng.uniform(lo, hi);
  return v;
}

TEST(Gguf, MetadataOfEveryValueType) {
  TempDir dir("gguf_meta");
  GgufWriter w(3);
  w.kv("u8", kU8, gval<uint8_t>(250));
  w.kv("i8", kI8, gval<int8_t>(-100));
  w.kv("u16", kU16, gval<uint16_t>(65000));
  w.kv("i16", kI16, gval<int16_t>(-30000));
  w.kv("u32", kU32, gval<uint32_t>(4000000000u));
  w.kv("i32", kI32, gval<int32_t>(-2000000000));
  w.kv("f32", kF32, gval<float>(0.15625f));
  w.kv("bool.t", kBool, gval<uint8_t>(1));
  w.kv("bool.f", kBool, gval<uint8_t>(0));
  w.kv("str", kString, gstr("héllo"));
  w.kv("u64", kU64, gval<uint64_t>(std::numeric_limits<uint64_t>::max()));
  w.kv("u64.small", kU64, gval<uint64_t>(123456789012345ull));
  w.kv("i64", kI64, gval<int64_t>(std::numeric_limits<int64_t>::min()));
  w.kv("f64", kF64, gval<double>(-2.5e300));
  w.kv("arr.str", kArray, garr(kString, {gstr("a"), gstr(""), gstr("ccc")}));
  w.kv("arr.i32", kArray, garr(kI32, {gval<int32_t>(-1), gval<int32_t>(2), gval<int32_t>(3)}));
  w.kv("arr.u8", kArray, garr(kU8, {gval<uint8_t>(7), gval<uint8_t>(255)}));
  w.kv("arr.f32", kArray, garr(kF32, {gval<float>(0.5f), gval<float>(-1.25f)}));
  w.kv("arr.empty", kArray, garr(kU64, {}));
  w.kv("arr.nested", kArray,
       garr(kArray, {garr(kI16, {gval<int16_t>(1), gval<int16_t>(-2)}), garr(kString, {gstr("x")}), garr(kBool, {})}));
  const std::string path = dir.file("meta.gguf");
  write_file(path, w.finish());

  GgufFile f(path);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.path(), path);
  EXPECT_EQ(f.metadata().size(), 20u);
  EXPECT_TRUE(f.tensors().empty());
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.get_int("u8"), 250);
  EXPECT_EQ(f.get_int("i8"), -100);
  EXPECT_EQ(f.get_int("u16"), 65000);
  EXPECT_EQ(f.get_int("i16"), -30000);
  EXPECT_EQ(f.get_int("u32"), 4000000000ll);
  EXPECT_EQ(f.get_int("i32"), -2000000000);
  EXPECT_EQ(f.get_float("f32"), 0.15625);
  EXPECT_TRUE(f.get_bool("bool.t"));
  EXPECT_FALSE(f.get_bool("bool.f"));
  EXPECT_EQ(f.get_string("str"), "héllo");
  EXPECT_EQ(std::get<uint64_t>(f.metadata().at("u64").v), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(f.get_int("u64.small"), 123456789012345ll);
  EXPECT_EQ(f.get_int("i64"), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(f.get_float("f64"), -2.5e300);
  EXPECT_EQ(f.get_float("i32"), -2000000000.0);  // integers read as floats too
  EXPECT_EQ(f.get_string_array("arr.str"), (std::vector<std::string>{"a", "", "ccc"}));
  EXPECT_EQ(f.get_int_array("arr.i32"), (std::vector<int64_t>{-1, 2, 3}));
  EXPECT_EQ(f.get_int_array("arr.u8"), (std::vector<int64_t>{7, 255}));
  EXPECT_EQ(f.get_float_array("arr.f32"), (std::vector<double>{0.5, -1.25}));
  EXPECT_TRUE(f.get_int_array("arr.empty").empty());
  const GgufArray& nested = f.get_array("arr.nested");
  ASSERT_EQ(nested.size(), 3u);
  const auto& n0 = std::get<GgufArray>(nested[0].v);
  ASSERT_EQ(n0.size(), 2u);
  EXPECT_EQ(std::get<int64_t>(n0[0].v), 1);
  EXPECT_EQ(std::get<int64_t>(n0[1].v), -2);
  EXPECT_EQ(std::get<std::string>(std::get<GgufArray>(nested[1].v).at(0).v), "x");
  EXPECT_TRUE(std::get<GgufArray>(nested[2].v).empty());

  // Defaults apply only when the key is absent.
  EXPECT_EQ(f.get_int("absent", 9), 9);
  EXPECT_EQ(f.get_int("u8", 9), 250);
  EXPECT_EQ(f.get_string("absent", "d"), "d");
  EXPECT_EQ(f.get_float("absent", 1.5), 1.5);
  EXPECT_TRUE(f.get_bool("absent", true));
  EXPECT_TRUE(f.has("str"));
  EXPECT_FALSE(f.has("absent"));
  EXPECT_EQ(f.find("absent"), nullptr);

  // Errors name the file and the key.
  std::string e = error_of([&] { f.get_int("absent"); });
  EXPECT_TRUE(contains(e, path) && contains(e, "'absent'") && contains(e, "missing")) << e;
  e = error_of([&] { f.get_int("str"); });
  EXPECT_TRUE(contains(e, path) && contains(e, "'str'") && contains(e, "string")) << e;
  e = error_of([&] { f.get_int("u64"); });  // does not fit int64
  EXPECT_TRUE(contains(e, "'u64'")) << e;
  e = error_of([&] { f.get_string("u8", "x"); });  // a default does not hide a type mismatch
  EXPECT_TRUE(contains(e, "'u8'")) << e;
  e = error_of([&] { f.get_bool("u8"); });
  EXPECT_TRUE(contains(e, "'u8'") && contains(e, "bool")) << e;
  e = error_of([&] { f.get_string_array("arr.i32"); });
  EXPECT_TRUE(contains(e, "'arr.i32'") && contains(e, "element 0")) << e;
  e = error_of([&] { f.get_float_array("str"); });
  EXPECT_TRUE(contains(e, "'str'") && contains(e, "array")) << e;
}

TEST(Gguf, DequantizesEveryBlockType) {
  TempDir dir("gguf_tensors");
  Rng rng(1234);
  GgufWriter w(3);
  w.kv("general.architecture", kString, gstr("llama"));

  const std::vector<float> f32 = {1.0f, -2.5f, 3.0e-39f, 1e30f, 0.0f, -0.0f};
  w.tensor("t.f32", {3, 2}, t(GgmlType::F32), bytes_of(f32));
  std::vector<float> f16 = random_values(rng, 40, -4, 4);
  for (float& x : f16) x = kiln::f16_to_f32(kiln::f32_to_f16(x));
  std::vector<uint16_t> f16_bits;
  for (float x : f16) f16_bits.push_back(kiln::f32_to_f16(x));
  w.tensor("t.f16", {5, 8}, t(GgmlType::F16), bytes_of(f16_bits));
  std::vector<float> bf16 = random_values(rng, 7, -100, 100);
  std::vector<uint16_t> bf16_bits;
  for (float& x : bf16) {
    bf16_bits.push_back(kiln::f32_to_bf16(x));
    x = kiln::bf16_to_f32(bf16_bits.back());
  }
  w.tensor("t.bf16", {7}, t(GgmlType::BF16), bytes_of(bf16_bits));

  const std::vector<float> src = random_values(rng, 64 * 3, -3, 3);
  const Quantized q8 = quantize_q8_0(src);
  const Quantized q40 = quantize_q4_0(src);
  const Quantized q41 = quantize_q4_1(src);
  w.tensor("t.q8_0", {64, 3}, t(GgmlType::Q8_0), q8.bytes);
  w.tensor("t.q4_0", {64, 3}, t(GgmlType::Q4_0), q40.bytes);
  w.tensor("t.q4_1", {64, 1, 3}, t(GgmlType::Q4_1), q41.bytes);

  // One Q4_0 block built by hand to pin the nibble order: byte j holds element j (low nibble) and
  // element j + 16 (high nibble). d = 0.5.
  std::string block;
  put_f16(block, 0.5f);
  for (int j = 0; j < 16; ++j) block += static_cast<char>(j | ((15 - j) << 4));
  w.tensor("t.q4_0.order", {32}, t(GgmlType::Q4_0), block);
  // Q4_1 block by hand: d = 0.25, m = -1; element j = j, element j + 16 = 15 - j.
  std::string block1;
  put_f16(block1, 0.25f);
  put_f16(block1, -1.0f);
  for (int j = 0; j < 16; ++j) block1 += static_cast<char>(j | ((15 - j) << 4));
  w.tensor("t.q4_1.order", {32}, t(GgmlType::Q4_1), block1);
  // Q8_0 block by hand: d = 2, q = j - 16.
  std::string block8;
  put_f16(block8, 2.0f);
  for (int j = 0; j < 32; ++j) block8 += static_cast<char>(static_cast<int8_t>(j - 16));
  w.tensor("t.q8_0.order", {32}, t(GgmlType::Q8_0), block8);
  // K-quant types (dequantized; their values are checked against gguf-py in core_block_formats_test), a type
  // that parses (size known) but is not read, and one this reader does not know.
  w.tensor("t.q4_k", {256, 2}, t(GgmlType::Q4_K), std::string(2 * 144, '\x11'));
  w.tensor("t.q2_k", {256}, t(GgmlType::Q2_K), std::string(84, '\x11'));
  w.tensor("t.q6_k", {512}, t(GgmlType::Q6_K), std::string(2 * 210, '\x22'));
  w.tensor("t.unknown", {4}, 31, std::string(16, '\0'));

  const std::string path = dir.file("tensors.gguf");
  write_file(path, w.finish());
  GgufFile f(path);
  ASSERT_EQ(f.tensors().size(), 13u);
  EXPECT_EQ(f.data_offset() % 32, 0u);

  const GgufTensorInfo* tf = f.find_tensor("t.f32");
  ASSERT_NE(tf, nullptr);
  EXPECT_EQ(tf->ne, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(tf->shape(), (kiln::Shape{2, 3}));
  EXPECT_EQ(tf->numel(), 6);
  EXPECT_EQ(tf->nbytes, 24u);
  EXPECT_EQ(tf->type, t(GgmlType::F32));
  EXPECT_EQ(f.dequantize(*tf), f32);

  EXPECT_EQ(f.dequantize(*f.find_tensor("t.f16")), f16);
  EXPECT_EQ(f.find_tensor("t.f16")->shape(), (kiln::Shape{8, 5}));
  EXPECT_EQ(f.dequantize(*f.find_tensor("t.bf16")), bf16);

  const GgufTensorInfo* t8 = f.find_tensor("t.q8_0");
  EXPECT_EQ(t8->nbytes, 6u * 34u);
  EXPECT_EQ(t8->shape(), (kiln::Shape{3, 64}));
  const std::vector<float> d8 = f.dequantize(*t8);
  EXPECT_EQ(d8, q8.expected);
  const std::vector<float> d40 = f.dequantize(*f.find_tensor("t.q4_0"));
  EXPECT_EQ(d40, q40.expected);
  EXPECT_EQ(f.find_tensor("t.q4_0")->nbytes, 6u * 18u);
  const std::vector<float> d41 = f.dequantize(*f.find_tensor("t.q4_1"));
  EXPECT_EQ(f.find_tensor("t.q4_1")->nbytes, 6u * 20u);
  EXPECT_EQ(f.find_tensor("t.q4_1")->shape(), (kiln::Shape{3, 1, 64}));
  ASSERT_EQ(d41.size(), q41.expected.size());
  for (size_t i = 0; i < d41.size(); ++i) EXPECT_FLOAT_EQ(d41[i], q41.expected[i]) << i;
  // And the quantized values are close to what was quantized (half a step at most).
  for (size_t i = 0; i < src.size(); ++i) {
    EXPECT_NEAR(d8[i], src[i], 3.0f / 127 * 0.51f + 1e-3f) << i;
    EXPECT_NEAR(d40[i], src[i], 3.0f / 7 * 0.51f + 1e-2f) << i;
    EXPECT_NEAR(d41[i], src[i], 6.0f / 15 * 0.51f + 1e-2f) << i;
  }

  const std::vector<float> order = f.dequantize(*f.find_tensor("t.q4_0.order"));
  const std::vector<float> order1 = f.dequantize(*f.find_tensor("t.q4_1.order"));
  const std::vector<float> order8 = f.dequantize(*f.find_tensor("t.q8_0.order"));
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(order[j], 0.5f * static_cast<float>(j - 8)) << j;
    EXPECT_EQ(order[j + 16], 0.5f * static_cast<float>(7 - j)) << j;
    EXPECT_EQ(order1[j], 0.25f * static_cast<float>(j) - 1.0f) << j;
    EXPECT_EQ(order1[j + 16], 0.25f * static_cast<float>(15 - j) - 1.0f) << j;
  }
  for (int j = 0; j < 32; ++j) EXPECT_EQ(order8[j], 2.0f * static_cast<float>(j - 16)) << j;

  const GgufTensorInfo* k4 = f.find_tensor("t.q4_k");
  EXPECT_EQ(k4->nbytes, 2u * 144u);
  EXPECT_EQ(f.find_tensor("t.q6_k")->nbytes, 2u * 210u);
  EXPECT_EQ(f.dequantize(*k4).size(), 512u);
  EXPECT_EQ(f.tensor_dtype(*k4), kiln::DType::Q4_K);
  std::string e = error_of([&] { f.dequantize(*f.find_tensor("t.q2_k")); });
  EXPECT_TRUE(contains(e, path) && contains(e, "'t.q2_k'") && contains(e, "Q2_K")) << e;
  const GgufTensorInfo* unk = f.find_tensor("t.unknown");
  EXPECT_EQ(unk->data, nullptr);
  EXPECT_EQ(unk->nbytes, 0u);
  EXPECT_STREQ(kiln::io::ggml_type_name(31), "unknown");
  e = error_of([&] { f.dequantize(*unk); });
  EXPECT_TRUE(contains(e, "'t.unknown'") && contains(e, "31")) << e;
  EXPECT_EQ(f.find_tensor("absent"), nullptr);
}

TEST(Gguf, BlockSizesOfKnownTypes) {
  struct Expect {
    GgmlType type;
    uint32_t values, bytes;
  } const expected[] = {{GgmlType::F32, 1, 4},      {GgmlType::F16, 1, 2},      {GgmlType::BF16, 1, 2},
                        {GgmlType::Q4_0, 32, 18},   {GgmlType::Q4_1, 32, 20},   {GgmlType::Q5_0, 32, 22},
                        {GgmlType::Q5_1, 32, 24},   {GgmlType::Q8_0, 32, 34},   {GgmlType::Q8_1, 32, 36},
                        {GgmlType::Q2_K, 256, 84},  {GgmlType::Q3_K, 256, 110}, {GgmlType::Q4_K, 256, 144},
                        {GgmlType::Q5_K, 256, 176}, {GgmlType::Q6_K, 256, 210}, {GgmlType::Q8_K, 256, 292}};
  for (const auto& x : expected) {
    uint32_t values = 0, bytes = 0;
    ASSERT_TRUE(kiln::io::ggml_type_block(t(x.type), &values, &bytes)) << kiln::io::ggml_type_name(t(x.type));
    EXPECT_EQ(values, x.values) << kiln::io::ggml_type_name(t(x.type));
    EXPECT_EQ(bytes, x.bytes) << kiln::io::ggml_type_name(t(x.type));
  }
  uint32_t values = 0, bytes = 0;
  EXPECT_FALSE(kiln::io::ggml_type_block(4, &values, &bytes));  // retired Q4_2
  EXPECT_FALSE(kiln::io::ggml_type_block(1000, &values, &bytes));
  EXPECT_STREQ(kiln::io::ggml_type_name(t(GgmlType::Q6_K)), "Q6_K");
}

TEST(Gguf, VersionTwoAndCustomAlignment) {
  TempDir dir("gguf_v2");
  GgufWriter w(2, 64);
  w.kv("general.alignment", kU32, gval<uint32_t>(64));
  w.kv("pad", kString, gstr("x"));
  w.tensor("a", {3}, t(GgmlType::F32), bytes_of(std::vector<float>{1, 2, 3}));
  w.tensor("b", {2}, t(GgmlType::F32), bytes_of(std::vector<float>{4, 5}));
  const std::string path = dir.file("v2.gguf");
  write_file(path, w.finish());
  GgufFile f(path);
  EXPECT_EQ(f.version(), 2u);
  EXPECT_EQ(f.alignment(), 64u);
  EXPECT_EQ(f.data_offset() % 64, 0u);
  EXPECT_EQ(f.find_tensor("b")->offset, 64u);
  EXPECT_EQ(f.dequantize(*f.find_tensor("b")), (std::vector<float>{4, 5}));
}

// Errors: one line, starting with the file path, saying what is wrong.
TEST(Gguf, ValidationErrors) {
  TempDir dir("gguf_errors");
  const std::string p = dir.file("bad.gguf");
  auto open_error = [&](const std::string& bytes) {
    write_file(p, bytes);
    const std::string e = error_of([&] { GgufFile f(p); });
    EXPECT_EQ(e.rfind(p + ": ", 0), 0u) << e;
    return e;
  };
  auto header = [](uint32_t version, uint64_t tensors, uint64_t kvs) {
    std::string s = "GGUF";
    put_le<uint32_t>(s, version);
    put_le<uint64_t>(s, tensors);
    put_le<uint64_t>(s, kvs);
    return s;
  };
  EXPECT_TRUE(contains(open_error(""), "not a GGUF file (bad magic)"));
  EXPECT_TRUE(contains(open_error("GGML\3\0\0\0"), "not a GGUF file (bad magic)"));
  EXPECT_TRUE(contains(open_error("GGUF\3\0"), "truncated"));
  std::string v1 = "GGUF";
  put_le<uint32_t>(v1, 1);
  EXPECT_TRUE(contains(open_error(v1 + std::string(16, '\0')), "version 1 is not supported"));
  EXPECT_TRUE(contains(open_error(header(4, 0, 0)), "unsupported GGUF version 4"));
  EXPECT_TRUE(contains(open_error(header(0x03000000, 0, 0)), "big-endian"));
  // Counts the file cannot hold are refused before anything is allocated.
  std::string e = open_error(header(3, 0, uint64_t{1} << 60));
  EXPECT_TRUE(contains(e, "truncated") && contains(e, "metadata")) << e;
  e = open_error(header(3, uint64_t{1} << 60, 0));
  EXPECT_TRUE(contains(e, "truncated") && contains(e, "tensor")) << e;
  // A string length past the end.
  std::string s = header(3, 0, 1);
  put_le<uint64_t>(s, uint64_t{1} << 62);
  e = open_error(s + std::string(16, 'a'));
  EXPECT_TRUE(contains(e, "truncated: metadata entry 0 extends past end of file")) << e;
  // An array count past the end.
  s = header(3, 0, 1) + gstr("k");
  put_le<uint32_t>(s, kArray);
  put_le<uint32_t>(s, kU32);
  const std::string array_u32 = s;
  put_le<uint64_t>(s, uint64_t{1} << 20);
  e = open_error(s + std::string(16, '\0'));
  EXPECT_TRUE(contains(e, "truncated: metadata entry 0 ('k')")) << e;
  s = array_u32;  // a count past the limit on array elements is refused before the file is read further
  put_le<uint64_t>(s, uint64_t{1} << 60);
  e = open_error(s + std::string(16, '\0'));
  EXPECT_TRUE(contains(e, "metadata entry 0 ('k'): array of 1152921504606846976 elements")) << e;
  // Unknown value types, in a value and in an array.
  s = header(3, 0, 1) + gstr("k");
  put_le<uint32_t>(s, 13);
  e = open_error(s + std::string(16, '\0'));
  EXPECT_TRUE(contains(e, "metadata entry 0 ('k'): unknown value type 13")) << e;
  s = header(3, 0, 1) + gstr("k");
  put_le<uint32_t>(s, kArray);
  e = open_error(s + garr(99, {}));
  EXPECT_TRUE(contains(e, "unknown array element type 99")) << e;
  // Arrays nested too deep for the stack to be at risk.
  std::string deep = garr(kU8, {});
  for (int i = 0; i < 50; ++i) deep = garr(kArray, {deep});
  s = header(3, 0, 1) + gstr("k");
  put_le<uint32_t>(s, kArray);
  e = open_error(s + deep);
  EXPECT_TRUE(contains(e, "nested")) << e;
  // A bool that is neither 0 nor 1; a conflicting duplicate key.
  GgufWriter wb;
  wb.kv("b", kBool, gval<uint8_t>(2));
  EXPECT_TRUE(contains(open_error(wb.finish()), "bool"));
  GgufWriter wd;
  wd.kv("k", kU32, gval<uint32_t>(1));
  wd.kv("k", kU32, gval<uint32_t>(2));
  EXPECT_TRUE(contains(open_error(wd.finish()), "duplicate key"));
  GgufWriter ws;  // the same key twice with the same value is accepted (ggml-vocab-dbrx.gguf has one)
  ws.kv("k", kU32, gval<uint32_t>(1));
  ws.kv("k", kU32, gval<uint32_t>(1));
  write_file(p, ws.finish());
  EXPECT_EQ(GgufFile(p).get_int("k"), 1);
  // Bad alignment values.
  GgufWriter wa;
  wa.kv("general.alignment", kU32, gval<uint32_t>(48));
  EXPECT_TRUE(contains(open_error(wa.finish()), "general.alignment 48"));
  GgufWriter wa0;
  wa0.kv("general.alignment", kString, gstr("32"));
  EXPECT_TRUE(contains(open_error(wa0.finish()), "general.alignment"));
  // Tensor infos: too many dimensions, overflowing dimensions, a bad row length, duplicates.
  GgufWriter w5;
  w5.tensor("t5", {1, 1, 1, 1, 1}, t(GgmlType::F32), std::string(4, '\0'));
  e = open_error(w5.finish());
  EXPECT_TRUE(contains(e, "tensor info 0 ('t5'): 5 dimensions")) << e;
  GgufWriter wo;
  wo.tensor("big", {uint64_t{1} << 40, uint64_t{1} << 40}, t(GgmlType::F32), "");
  e = open_error(wo.finish());
  EXPECT_TRUE(contains(e, "'big'") && contains(e, "overflow")) << e;
  GgufWriter wz;  // a zero dimension does not hide an overflow of the others
  wz.tensor("z", {0, uint64_t{1} << 40, uint64_t{1} << 40}, t(GgmlType::F32), "");
  EXPECT_TRUE(contains(open_error(wz.finish()), "overflow"));
  GgufWriter wr;
  wr.tensor("q", {48}, t(GgmlType::Q8_0), std::string(68, '\0'));
  e = open_error(wr.finish());
  EXPECT_TRUE(contains(e, "'q'") && contains(e, "row length 48")) << e;
  GgufWriter wdup;
  wdup.tensor("same", {1}, t(GgmlType::F32), std::string(4, '\0'));
  wdup.tensor("same", {1}, t(GgmlType::F32), std::string(4, '\0'));
  EXPECT_TRUE(contains(open_error(wdup.finish()), "duplicate tensor name"));
  // Tensor data past the end of the file, and a misaligned offset.
  GgufWriter wt;
  wt.tensor("w", {64}, t(GgmlType::F32), std::string(256, '\0'));
  std::string full = wt.finish();
  e = open_error(full.substr(0, full.size() - 1));
  EXPECT_TRUE(contains(e, "truncated: tensor 0 ('w')") && contains(e, "past end of file")) << e;
  std::string mis = full;
  const size_t off_pos = mis.find("w") + 1 + 4 + 8 + 4;  // name, n_dims, ne[0], type
  mis[off_pos] = 4;
  e = open_error(mis);
  EXPECT_TRUE(contains(e, "'w'") && contains(e, "not a multiple of the alignment")) << e;
  // Truncated in the middle of a tensor info.
  e = open_error(full.substr(0, 24 + 8 + 1 + 4 + 8 + 4 + 3));  // inside the offset field
  EXPECT_TRUE(contains(e, "truncated: tensor info 0 ('w') extends past end of file")) << e;
  // A key with control characters stays one line.
  GgufWriter wc;
  wc.kv("a\nb", kBool, gval<uint8_t>(9));
  EXPECT_TRUE(contains(open_error(wc.finish()), "a\\x0ab"));
}

// The llama.cpp vocab files: metadata only, 0 tensors.
TEST(Gguf, LlamaCppVocabFiles) {
  const std::filesystem::path dir = std::filesystem::path(KILN_TEST_DATA_DIR) / "llama.cpp-vocab";
  ASSERT_TRUE(std::filesystem::is_directory(dir))
      << dir << " is missing (unpacked from tests/fixtures/llama.cpp-vocab)";
  const std::map<std::string, std::pair<std::string, size_t>> known = {
      {"ggml-vocab-bert-bge.gguf", {"bert", 30522}},      {"ggml-vocab-dbrx.gguf", {"gpt2", 100352}},
      {"ggml-vocab-deepseek-coder.gguf", {"gpt2", 32256}}, {"ggml-vocab-deepseek-llm.gguf", {"gpt2", 102400}},
      {"ggml-vocab-falcon.gguf", {"gpt2", 65024}},        {"ggml-vocab-gpt-2.gguf", {"gpt2", 50257}},
      {"ggml-vocab-llama-spm.gguf", {"llama", 32000}},    {"ggml-vocab-mpt.gguf", {"gpt2", 50432}},
      {"ggml-vocab-phi-3.gguf", {"llama", 32064}},        {"ggml-vocab-refact.gguf", {"gpt2", 49216}},
      {"ggml-vocab-starcoder.gguf", {"gpt2", 49152}},
  };
  size_t opened = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".gguf") continue;
    const std::string name = entry.path().filename().string();
    SCOPED_TRACE(name);
    GgufFile f(entry.path().string());
    ++opened;
    EXPECT_TRUE(f.version() == 2 || f.version() == 3);
    EXPECT_TRUE(f.tensors().empty());
    const std::string model = f.get_string("tokenizer.ggml.model");
    const std::vector<std::string> tokens = f.get_string_array("tokenizer.ggml.tokens");
    EXPECT_FALSE(tokens.empty());
    if (const auto it = known.find(name); it != known.end()) {
      EXPECT_EQ(model, it->second.first);
      EXPECT_EQ(tokens.size(), it->second.second);
    }
    // Per-token arrays, where present, have one entry per token.
    if (f.has("tokenizer.ggml.token_type")) EXPECT_EQ(f.get_int_array("tokenizer.ggml.token_type").size(), tokens.size());
    if (f.has("tokenizer.ggml.scores")) EXPECT_EQ(f.get_float_array("tokenizer.ggml.scores").size(), tokens.size());
    if (f.has("tokenizer.ggml.merges")) EXPECT_FALSE(f.get_string_array("tokenizer.ggml.merges").empty());
    if (f.has("tokenizer.ggml.bos_token_id")) {
      const int64_t bos = f.get_int("tokenizer.ggml.bos_token_id");
      EXPECT_TRUE(bos >= 0 && bos < static_cast<int64_t>(tokens.size())) << bos;
    }
  }
  EXPECT_EQ(opened, known.size());
  // Spot checks of token text.
  GgufFile gpt2((dir / "ggml-vocab-gpt-2.gguf").string());
  const auto tokens = gpt2.get_string_array("tokenizer.ggml.tokens");
  EXPECT_EQ(tokens[0], "!");
  EXPECT_EQ(tokens[50256], "<|endoftext|>");
  GgufFile spm((dir / "ggml-vocab-llama-spm.gguf").string());
  EXPECT_EQ(spm.get_string_array("tokenizer.ggml.tokens")[1], "<s>");
}

}  // namespace
