// Corrupted inputs (every truncation, random byte flips and overwrites) must open or throw kiln::Error:
// never crash, hang, allocate without bound, or throw anything else. Meant to run under ASan+UBSan too.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>

#include "fixtures/io/io_writers.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "kiln/error.h"

namespace {

using kiln::io::GgmlType;
using kiln::io::GgufFile;
using kiln::io::SafetensorsCheckpoint;
using kiln::io::SafetensorsFile;
using namespace kiln_test;

constexpr uint32_t t(GgmlType g) { return static_cast<uint32_t>(g); }

// Tallies outcomes; anything but success or a kiln::Error whose message starts with `prefix` fails.
struct Tally {
  size_t ok = 0, errors = 0, bad = 0;

  template <typename Fn>
  bool run(const std::string& prefix, const std::string& label, Fn&& fn) {
    std::string problem;
    try {
      fn();
      ++ok;
      return true;
    } catch (const kiln::Error& e) {
      ++errors;
      const std::string msg = e.what();
      if (msg.rfind(prefix, 0) != 0) problem = "message does not start with the path: " + msg;
      if (msg.find('\n') != std::string::npos) problem = "multi-line message: " + msg;
    } catch (const std::exception& e) {
      problem = std::string("threw a non-kiln exception: ") + e.what();
    } catch (...) {
      problem = "threw something that is not a std::exception";
    }
    if (!problem.empty() && ++bad <= 10) ADD_FAILURE() << label << ": " << problem;
    return false;
  }
  void report(const char* what) const { std::printf("%s: %zu opened, %zu refused with kiln::Error\n", what, ok, errors); }
};

// Reads every byte of a span so that a bad pointer or length faults here.
uint64_t touch(const uint8_t* p, size_t n) {
  uint64_t sum = 0;
  for (size_t i = 0; i < n; ++i) sum += p[i];
  return sum;
}

// One random corruption of `bytes`: bit flips, byte flips or an overwrite with a pattern that often
// means trouble (huge counts, all ones, zeros). Positions fall in [0, hot) four times out of five.
std::string mutate(const std::string& bytes, size_t hot, Rng& rng, const std::vector<size_t>& targets = {}) {
  std::string m = bytes;
  const size_t n = m.size();
  auto pos = [&]() -> size_t {
    if (!targets.empty() && rng.below(2) == 0) return targets[rng.below(targets.size())];
    return rng.below(5) < 4 ? rng.below(std::min(hot, n)) : rng.below(n);
  };
  const uint64_t kind = rng.below(4);
  if (kind == 0) {  // 1-3 single-bit flips
    for (uint64_t k = 0, c = 1 + rng.below(3); k < c; ++k) m[pos()] ^= static_cast<char>(1u << rng.below(8));
  } else if (kind == 1) {  // 1-3 random byte values
    for (uint64_t k = 0, c = 1 + rng.below(3); k < c; ++k) m[pos()] = static_cast<char>(rng.next());
  } else {  // overwrite 1-8 bytes with a pattern
    const size_t p = pos();
    const size_t len = std::min<size_t>(1 + rng.below(8), n - p);
    uint64_t v;
    switch (rng.below(6)) {
      case 0: v = ~uint64_t{0}; break;
      case 1: v = 0; break;
      case 2: v = uint64_t{1} << (rng.below(64)); break;
      case 3: v = (uint64_t{1} << 63) - rng.below(16); break;
      case 4: v = rng.below(64); break;
      default: v = rng.next(); break;
    }
    for (size_t i = 0; i < len; ++i) m[p + i] = static_cast<char>(v >> (8 * (i % 8)));
  }
  return m;
}

std::string sample_safetensors() {
  std::vector<float> a(12);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(i) - 3.5f;
  std::vector<uint16_t> b = {0x3c00, 0xc000, 0x7bff, 0x0001};
  return make_safetensors({{"model.embed.weight", "F32", {3, 4}, bytes_of(a)},
                           {"layers.0.attn.q.weight", "F16", {2, 2}, bytes_of(b)},
                           {"layers.0.norm", "BF16", {4}, bytes_of(b)},
                           {"ids", "I64", {1}, bytes_of(std::vector<int64_t>{7})},
                           {"mask", "U8", {2, 1}, std::string("\x01\x00", 2)}},
                          {{"format", "pt"}});
}

void open_safetensors(const std::string& path) {
  SafetensorsFile f(path);
  for (const auto& e : f.tensors()) {
    ASSERT_EQ(static_cast<size_t>(kiln::shape_numel(e.shape)) * kiln::dtype_size(e.dtype), e.nbytes) << e.name;
    touch(e.data, e.nbytes);
  }
}

TEST(Corruption, SafetensorsFile) {
  TempDir dir("corrupt_st");
  const std::string path = dir.file("m.safetensors");
  const std::string good = sample_safetensors();
  write_file(path, good);
  open_safetensors(path);
  uint64_t header_len;
  std::memcpy(&header_len, good.data(), 8);

  Tally trunc;
  for (size_t len = 0; len < good.size(); ++len) {
    write_file(path, good.substr(0, len));
    trunc.run(path + ": ", "truncation " + std::to_string(len), [&] { open_safetensors(path); });
  }
  // The last tensor ends at the end of the file, so no truncation is a valid file.
  trunc.report("truncations");
  EXPECT_EQ(trunc.ok, 0u);
  EXPECT_EQ(trunc.bad, 0u);

  Rng rng(0x5afe);
  Tally mut;
  for (int i = 0; i < 3000; ++i) {
    write_file(path, mutate(good, 8 + header_len, rng));
    mut.run(path + ": ", "mutation " + std::to_string(i), [&] { open_safetensors(path); });
  }
  mut.report("mutations");
  EXPECT_EQ(mut.bad, 0u);
  EXPECT_GT(mut.ok, 0u);
  EXPECT_GT(mut.errors, 0u);
}

TEST(Corruption, ShardedCheckpoint) {
  TempDir dir("corrupt_ck");
  const std::string folder = dir.path().string();
  write_file(dir.file("s-1.safetensors"), sample_safetensors());
  const std::string shard2 = make_safetensors({{"lm_head", "F32", {2}, bytes_of(std::vector<float>{1, 2})}});
  write_file(dir.file("s-2.safetensors"), shard2);
  const std::string index = R"({"metadata": {"total_size": 84}, "weight_map": {)"
                            R"("model.embed.weight": "s-1.safetensors", "layers.0.attn.q.weight": "s-1.safetensors",)"
                            R"("layers.0.norm": "s-1.safetensors", "ids": "s-1.safetensors", "mask": "s-1.safetensors",)"
                            R"("lm_head": "s-2.safetensors"}})";
  const std::string index_path = dir.file("model.safetensors.index.json");
  write_file(index_path, index);
  auto open = [&] {
    SafetensorsCheckpoint ck(folder);
    for (const auto& name : ck.names()) touch(ck.get(name).data, ck.get(name).nbytes);
  };
  open();

  Tally tally;
  for (size_t len = 0; len < index.size(); ++len) {
    write_file(index_path, index.substr(0, len));
    tally.run(folder, "index truncation " + std::to_string(len), open);
  }
  EXPECT_EQ(tally.ok, 0u);  // every strict prefix of the index is invalid JSON
  Rng rng(0x1dec);
  for (int i = 0; i < 1500; ++i) {
    write_file(index_path, mutate(index, index.size(), rng));
    tally.run(folder, "index mutation " + std::to_string(i), open);
  }
  write_file(index_path, index);
  for (size_t len = 0; len < shard2.size(); ++len) {
    write_file(dir.file("s-2.safetensors"), shard2.substr(0, len));
    tally.run(folder, "shard truncation " + std::to_string(len), open);
  }
  tally.report("index truncations and mutations, shard truncations");
  EXPECT_EQ(tally.bad, 0u);
  EXPECT_GT(tally.ok, 0u);
  EXPECT_GT(tally.errors, 0u);
}

std::string sample_gguf() {
  Rng rng(77);
  std::vector<float> src(64);
  for (float& x : src) x = rng.uniform(-2, 2);
  GgufWriter w(3);
  w.kv("general.architecture", kString, gstr("llama"));
  w.kv("general.alignment", kU32, gval<uint32_t>(32));
  w.kv("llama.block_count", kU32, gval<uint32_t>(2));
  w.kv("llama.rope.freq_base", kF32, gval<float>(10000.0f));
  w.kv("flag", kBool, gval<uint8_t>(1));
  w.kv("i8", kI8, gval<int8_t>(-3));
  w.kv("u16", kU16, gval<uint16_t>(3));
  w.kv("i16", kI16, gval<int16_t>(-3));
  w.kv("i32", kI32, gval<int32_t>(-3));
  w.kv("u64", kU64, gval<uint64_t>(3));
  w.kv("i64", kI64, gval<int64_t>(-3));
  w.kv("f64", kF64, gval<double>(0.25));
  w.kv("u8", kU8, gval<uint8_t>(3));
  w.kv("tokenizer.ggml.tokens", kArray, garr(kString, {gstr("<s>"), gstr("a"), gstr("bc")}));
  w.kv("tokenizer.ggml.scores", kArray, garr(kF32, {gval<float>(0), gval<float>(-1), gval<float>(-2)}));
  w.kv("nested", kArray, garr(kArray, {garr(kI32, {gval<int32_t>(1)}), garr(kString, {gstr("z")})}));
  w.tensor("f32", {4, 2}, t(GgmlType::F32), bytes_of(std::vector<float>(src.begin(), src.begin() + 8)));
  std::vector<uint16_t> h(6, 0x3c00);
  w.tensor("f16", {6}, t(GgmlType::F16), bytes_of(h));
  w.tensor("bf16", {2, 3}, t(GgmlType::BF16), bytes_of(h));
  w.tensor("q8_0", {64}, t(GgmlType::Q8_0), quantize_q8_0(src).bytes);
  w.tensor("q4_0", {32, 2}, t(GgmlType::Q4_0), quantize_q4_0(src).bytes);
  w.tensor("q4_1", {64}, t(GgmlType::Q4_1), quantize_q4_1(src).bytes);
  w.tensor("q6_k", {256}, t(GgmlType::Q6_K), std::string(210, '\x5a'));
  return w.finish();
}

void open_gguf(const std::string& path) {
  GgufFile f(path);
  for (const auto& ti : f.tensors()) {
    touch(ti.data, ti.nbytes);
    try {
      const std::vector<float> v = f.dequantize(ti);
      ASSERT_EQ(static_cast<int64_t>(v.size()), ti.numel()) << ti.name;
    } catch (const kiln::Error&) {
      // Types dequantize does not support: fine, as long as it is a kiln::Error.
    }
  }
  f.get_string("general.architecture", "");
  f.get_int("llama.block_count", 0);
  f.get_float("llama.rope.freq_base", 0.0);
  if (f.has("tokenizer.ggml.tokens")) f.get_string_array("tokenizer.ggml.tokens");
}

// Offsets of bytes that are likely the low byte of a small little-endian count or length (followed
// by seven zero bytes), where corruption is most interesting.
std::vector<size_t> count_like_offsets(const std::string& b, size_t limit) {
  std::vector<size_t> out;
  for (size_t i = 0; i + 8 <= b.size() && out.size() < limit; ++i) {
    if (b[i] != 0 && std::memcmp(b.data() + i + 1, "\0\0\0\0\0\0\0", 7) == 0) out.push_back(i);
  }
  return out;
}

TEST(Corruption, GgufWithTensors) {
  TempDir dir("corrupt_gguf");
  const std::string path = dir.file("m.gguf");
  const std::string good = sample_gguf();
  write_file(path, good);
  open_gguf(path);
  {
    GgufFile f(path);
    ASSERT_EQ(f.tensors().size(), 7u);
  }

  Tally trunc;
  for (size_t len = 0; len < good.size(); ++len) {
    write_file(path, good.substr(0, len));
    trunc.run(path + ": ", "truncation " + std::to_string(len), [&] { open_gguf(path); });
  }
  EXPECT_EQ(trunc.ok, 0u);  // the last tensor ends at the end of the file
  EXPECT_EQ(trunc.bad, 0u);

  Rng rng(0x66756);
  const std::vector<size_t> targets = count_like_offsets(good, 1000);
  Tally mut;
  for (int i = 0; i < 4000; ++i) {
    write_file(path, mutate(good, good.size() - 7 * 32, rng, targets));
    mut.run(path + ": ", "mutation " + std::to_string(i), [&] { open_gguf(path); });
  }
  mut.report("mutations");
  EXPECT_EQ(mut.bad, 0u);
  EXPECT_GT(mut.ok, 0u);
  EXPECT_GT(mut.errors, 0u);
}

TEST(Corruption, LlamaCppVocabGguf) {
  const std::filesystem::path src =
      std::filesystem::path(KILN_TEST_DATA_DIR) / "llama.cpp-vocab" / "ggml-vocab-llama-spm.gguf";
  ASSERT_TRUE(std::filesystem::exists(src)) << src << " is missing (unpacked from tests/fixtures/llama.cpp-vocab)";
  const std::string good = read_file(src.string());
  ASSERT_GT(good.size(), 100000u);
  TempDir dir("corrupt_vocab");
  const std::string path = dir.file("v.gguf");
  write_file(path, good);
  open_gguf(path);

  // Truncations: every length in the first 2 KiB (header, small keys, the start of the token array),
  // then a dense even sample.
  Tally trunc;
  std::vector<size_t> lengths;
  for (size_t len = 0; len < 2048; ++len) lengths.push_back(len);
  for (size_t k = 0; k < 400; ++k) lengths.push_back(2048 + (good.size() - 2048) * k / 400);
  lengths.push_back(good.size() - 1);
  for (size_t len : lengths) {
    write_file(path, good.substr(0, len));
    trunc.run(path + ": ", "truncation " + std::to_string(len), [&] { open_gguf(path); });
  }
  trunc.report("truncations");
  EXPECT_EQ(trunc.bad, 0u);
  EXPECT_EQ(trunc.ok, 0u);  // the metadata runs to the end of this file (it has no tensors)

  Rng rng(0xb0ca);
  const std::vector<size_t> targets = count_like_offsets(good, 200000);
  ASSERT_GT(targets.size(), 1000u);  // the string lengths of the token array, among others
  Tally mut;
  for (int i = 0; i < 1500; ++i) {
    write_file(path, mutate(good, 4096, rng, targets));
    mut.run(path + ": ", "mutation " + std::to_string(i), [&] { open_gguf(path); });
  }
  mut.report("mutations");
  EXPECT_EQ(mut.bad, 0u);
  EXPECT_GT(mut.ok, 0u);
  EXPECT_GT(mut.errors, 0u);
}

}  // namespace
