// Every tokenizer under tests/fixtures/tokenizers/ must reproduce HF `tokenizers` exactly: ids with
// and without special tokens, and both decodes, for every case in its cases.jsonl.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "kiln/tokenizer.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

const fs::path kFixtures = fs::path(KILN_SOURCE_DIR) / "tests" / "fixtures" / "tokenizers";

std::vector<std::string> tokenizer_folders() {
  std::vector<std::string> out;
  if (!fs::is_directory(kFixtures)) return out;
  for (const auto& e : fs::directory_iterator(kFixtures)) {
    if (e.is_directory()) out.push_back(e.path().filename().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string show(const std::string& s) {
  return json(s).dump();  // quoted, escaped
}

std::string show(const std::vector<int32_t>& ids) { return json(ids).dump(); }

TEST(TokenizerGoldens, FixturesExist) {
  ASSERT_TRUE(fs::is_directory(kFixtures)) << kFixtures << " is missing";
  auto folders = tokenizer_folders();
  EXPECT_GE(folders.size(), 1u) << "no tokenizer folders under " << kFixtures;
  for (const auto& f : folders) {
    EXPECT_TRUE(fs::exists(kFixtures / f / "tokenizer.json")) << f;
    EXPECT_TRUE(fs::exists(kFixtures / f / "cases.jsonl")) << f;
  }
}

class Golden : public ::testing::TestWithParam<std::string> {};

TEST_P(Golden, MatchesHuggingFace) {
  const fs::path dir = kFixtures / GetParam();
  std::unique_ptr<kiln::Tokenizer> tok;
  ASSERT_NO_THROW(tok = kiln::Tokenizer::from_path(dir.string()));
  std::ifstream in(dir / "cases.jsonl");
  ASSERT_TRUE(in) << dir / "cases.jsonl";
  std::string line;
  size_t n = 0, failed = 0, roundtrips = 0;
  constexpr size_t kMaxReports = 12;
  auto report = [&](size_t i, const std::string& what, const std::string& text, const std::string& want,
                    const std::string& got) {
    if (failed++ < kMaxReports) {
      ADD_FAILURE() << GetParam() << " case " << i << " " << what << "\n  text " << show(text) << "\n  want " << want
                    << "\n  got  " << got;
    }
  };
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    json c = json::parse(line);
    const std::string text = c.at("text").get<std::string>();
    const auto want_ids = c.at("ids").get<std::vector<int32_t>>();
    const auto want_special = c.at("ids_special").get<std::vector<int32_t>>();
    const std::string want_decoded = c.at("decoded").get<std::string>();
    size_t i = n++;
    bool ok = true;

    auto ids = tok->encode(text, /*add_special=*/false, /*parse_special=*/true);
    if (ids != want_ids) {
      report(i, "ids", text, show(want_ids), show(ids));
      ok = false;
    }
    auto ids_special = tok->encode(text, /*add_special=*/true, /*parse_special=*/true);
    if (ids_special != want_special) {
      report(i, "ids_special", text, show(want_special), show(ids_special));
      ok = false;
    }
    std::string decoded = tok->decode(want_ids, /*skip_special=*/false);
    if (decoded != want_decoded) {
      report(i, "decoded", text, show(want_decoded), show(decoded));
      ok = false;
    }
    if (c.contains("decoded_skip_special")) {
      const std::string want_skip = c.at("decoded_skip_special").get<std::string>();
      std::string skip = tok->decode(want_special, /*skip_special=*/true);
      if (skip != want_skip) {
        report(i, "decoded_skip_special", text, show(want_skip), show(skip));
        ok = false;
      }
    }
    if (want_decoded == text) {
      std::string rt = tok->decode(ids, false);
      if (rt != text) {
        report(i, "roundtrip", text, show(text), show(rt));
        ok = false;
      }
      ++roundtrips;
    }
    (void)ok;
  }
  EXPECT_GE(n, 1u) << dir / "cases.jsonl" << " has no cases";
  EXPECT_EQ(failed, 0u) << GetParam() << ": " << failed << " mismatches over " << n << " cases (" << roundtrips
                        << " roundtrip cases)";
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Golden, ::testing::ValuesIn(tokenizer_folders()), [](const auto& info) {
  std::string n = info.param;
  for (char& c : n) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return n;
});
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(Golden);

}  // namespace
