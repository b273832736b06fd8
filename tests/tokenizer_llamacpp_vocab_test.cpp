// Conformance of the GGUF vocabularies against llama.cpp's test pairs (ids made by HF `tokenizers`
// with add_special_tokens=False): every pair of every vocab must match exactly.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "kiln/tokenizer.h"

namespace {

namespace fs = std::filesystem;

const fs::path kVocabDir = fs::path(KILN_TEST_DATA_DIR) / "llama.cpp-vocab";

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// .inp: each test is followed by "\n__ggml_vocab_test__\n" (the file ends with one).
std::vector<std::string> read_inputs(const fs::path& p) {
  const std::string text = read_file(p);
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find(sep, pos);
    if (end == std::string::npos) {
      ADD_FAILURE() << p << ": text after the last separator";
      break;
    }
    out.push_back(text.substr(pos, end - pos));
    pos = end + sep.size();
  }
  return out;
}

// .out: one line per test, ids each preceded by a space.
std::vector<std::vector<int32_t>> read_outputs(const fs::path& p) {
  std::ifstream in(p);
  std::vector<std::vector<int32_t>> out;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::vector<int32_t> ids;
    int32_t id;
    while (ls >> id) ids.push_back(id);
    out.push_back(std::move(ids));
  }
  return out;
}

std::string ids_str(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += " " + std::to_string(id);
  return s;
}

std::string escaped(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\r') {
      out += "\\r";
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

// Runs while the tests are listed, so a missing folder must not throw: it gives no names, and
// AllExpectedVocabsArePresent fails naming it.
std::vector<std::string> vocab_names() {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(kVocabDir, ec)) {
    std::string f = e.path().filename().string();
    if (e.path().extension() != ".gguf" || f.rfind("ggml-vocab-", 0) != 0) continue;
    std::string name = f.substr(11, f.size() - 11 - 5);
    if (name == "bert-bge") continue;  // WordPiece: refused, see below
    names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

class LlamaCppVocab : public ::testing::TestWithParam<std::string> {};

TEST_P(LlamaCppVocab, EncodesEveryTestPairExactly) {
  const std::string name = GetParam();
  const fs::path gguf = kVocabDir / ("ggml-vocab-" + name + ".gguf");
  auto t0 = std::chrono::steady_clock::now();
  auto tok = kiln::Tokenizer::from_path(gguf.string());
  double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // Load time is a figure, not a check: CI shares two cores with other jobs.
  RecordProperty("load_seconds", std::to_string(load_s));

  auto inputs = read_inputs(fs::path(gguf.string() + ".inp"));
  auto outputs = read_outputs(fs::path(gguf.string() + ".out"));
  ASSERT_EQ(inputs.size(), outputs.size()) << name;
  ASSERT_GE(inputs.size(), 40u) << name;
  size_t pass = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    auto ids = tok->encode(inputs[i], /*add_special=*/false, /*parse_special=*/false);
    if (ids == outputs[i]) {
      ++pass;
    } else {
      ADD_FAILURE() << name << " test " << i << " '" << escaped(inputs[i]) << "'\n  expected" << ids_str(outputs[i])
                    << "\n  got     " << ids_str(ids);
    }
  }
  EXPECT_EQ(pass, inputs.size()) << name << ": " << pass << "/" << inputs.size() << " pairs pass";
}

// Byte-level BPE is lossless, so decode(encode(s)) == s for every input (HF gives the same).
TEST_P(LlamaCppVocab, ByteLevelRoundTrips) {
  const std::string name = GetParam();
  const fs::path gguf = kVocabDir / ("ggml-vocab-" + name + ".gguf");
  if (name == "llama-spm" || name == "phi-3") {
    // SentencePiece: also lossless here except the leading space that decode strips (HF does too).
    auto tok = kiln::Tokenizer::from_path(gguf.string());
    for (const auto& s : read_inputs(fs::path(gguf.string() + ".inp"))) {
      std::string d = tok->decode(tok->encode(s, false, false));
      EXPECT_EQ(d, s) << name << " '" << escaped(s) << "'";
    }
    return;
  }
  auto tok = kiln::Tokenizer::from_path(gguf.string());
  for (const auto& s : read_inputs(fs::path(gguf.string() + ".inp"))) {
    std::string d = tok->decode(tok->encode(s, false, false));
    EXPECT_EQ(d, s) << name << " '" << escaped(s) << "'";
  }
}

INSTANTIATE_TEST_SUITE_P(Vocabs, LlamaCppVocab, ::testing::ValuesIn(vocab_names()),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n) {
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           }
                           return n;
                         });

GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(LlamaCppVocab);

TEST(LlamaCppVocabSet, AllExpectedVocabsArePresent) {
  ASSERT_TRUE(fs::is_directory(kVocabDir)) << kVocabDir << " is missing (unpacked from tests/fixtures/llama.cpp-vocab)";
  auto names = vocab_names();
  for (const char* n : {"deepseek-coder", "deepseek-llm", "dbrx", "falcon", "gpt-2", "llama-spm", "mpt", "phi-3",
                        "refact", "starcoder"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
  }
}

TEST(LlamaCppVocabSet, BertIsRefusedWithAClearError) {
  const std::string path = (kVocabDir / "ggml-vocab-bert-bge.gguf").string();
  ASSERT_TRUE(fs::exists(path)) << path << " is missing";  // a missing file's error would name it too
  try {
    kiln::Tokenizer::from_path(path);
    FAIL() << "bert vocab loaded";
  } catch (const std::exception& e) {
    std::string m = e.what();
    EXPECT_NE(m.find(path), std::string::npos) << m;
    EXPECT_NE(m.find("bert"), std::string::npos) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  }
}

}  // namespace
