// llama2.c tokenizers (tok512 with byte tokens, tok105 without) and the IncrementalDetokenizer on
// byte-fallback and byte-level vocabularies.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "kiln/error.h"
#include "kiln/tokenizer.h"

namespace {

namespace fs = std::filesystem;

const std::string kTok512 = std::string(KILN_SOURCE_DIR) + "/tests/fixtures/llama2c/stories260K/tok512.bin";
const std::string kTok105 = std::string(KILN_SOURCE_DIR) + "/tests/fixtures/llama2c/babyllama-tok105/tok105.bin";
const std::string kGpt2 = std::string(KILN_TEST_DATA_DIR) + "/llama.cpp-vocab/ggml-vocab-gpt-2.gguf";
const std::string kLlamaSpm = std::string(KILN_TEST_DATA_DIR) + "/llama.cpp-vocab/ggml-vocab-llama-spm.gguf";

bool valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

TEST(Llama2cTokenizer, Tok512EncodesOnceUponATime) {
  auto tok = kiln::Tokenizer::from_path(kTok512);
  EXPECT_EQ(tok->vocab_size(), 512);
  auto ids = tok->encode("Once upon a time", /*add_special=*/true);
  // BOS, then " Once" " upon" " a" " time" (ids documented with the stories260K golden vector).
  EXPECT_EQ(ids, (std::vector<int32_t>{1, 403, 407, 261, 378}));
  EXPECT_EQ(tok->decode(std::span(ids).subspan(1)), "Once upon a time");
  EXPECT_EQ(tok->decode(ids, /*skip_special=*/true), "Once upon a time");
  EXPECT_EQ(tok->encode("Once upon a time", /*add_special=*/false), (std::vector<int32_t>{403, 407, 261, 378}));
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_ids(), std::vector<int32_t>{2});
  EXPECT_TRUE(tok->is_special(1));
  EXPECT_TRUE(tok->is_special(2));
  EXPECT_FALSE(tok->is_special(403));
  EXPECT_EQ(tok->id_to_token(403), " Once");
  EXPECT_EQ(tok->token_to_id(" Once"), 403);
  EXPECT_EQ(tok->id_to_token(3), "<0x00>");
  EXPECT_TRUE(tok->encode("", true) == std::vector<int32_t>{1});
  EXPECT_TRUE(tok->encode("", false).empty());
}

TEST(Llama2cTokenizer, Tok512DecodesTheGoldenGreedyIds) {
  auto tok = kiln::Tokenizer::from_path(kTok512);
  std::vector<int32_t> ids = {1,   403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338,
                              401, 396, 267, 337, 410, 408, 419, 292, 411, 322, 265, 282, 295, 433, 426, 385};
  std::string text = tok->decode(ids, /*skip_special=*/true);
  const std::string expected_start = "Once upon a time, there was a little girl named Lily. She loved to play outside";
  EXPECT_EQ(text.substr(0, expected_start.size()), expected_start) << text;
  // Re-encoding that text gives the ids back.
  auto again = tok->encode(text, /*add_special=*/true);
  EXPECT_EQ(again, ids);
}

TEST(Llama2cTokenizer, Tok512ByteFallbackAndRoundTrip) {
  auto tok = kiln::Tokenizer::from_path(kTok512);
  // U+1F600 is not a piece: its four UTF-8 bytes become <0xF0><0x9F><0x98><0x80> (ids 3 + byte).
  auto ids = tok->encode("\xF0\x9F\x98\x80", false);
  ASSERT_GE(ids.size(), 4u);
  std::vector<int32_t> tail(ids.end() - 4, ids.end());
  EXPECT_EQ(tail, (std::vector<int32_t>{3 + 0xF0, 3 + 0x9F, 3 + 0x98, 3 + 0x80}));
  for (const std::string s : {"Lily's mom said, \"Don't worry!\"", "emoji \xF0\x9F\x98\x80 and \xE4\xB8\x96\xE7\x95\x8C",
                              "tabs\tand\nnewlines\n\n", "  two leading spaces", "trailing ", "caf\xC3\xA9 \xE2\x82\xAC" "5"}) {
    auto e = tok->encode(s, false);
    EXPECT_EQ(tok->decode(e), s) << s;
    auto b = tok->encode(s, true);
    ASSERT_FALSE(b.empty());
    EXPECT_EQ(b[0], 1);
    EXPECT_EQ(tok->decode(b, true), s) << s;
  }
}

TEST(Llama2cTokenizer, Tok105WithoutByteTokens) {
  auto tok = kiln::Tokenizer::from_path(kTok105);
  EXPECT_EQ(tok->vocab_size(), 105);
  // The documented greedy ids decode to the start of the BabyLlama story and encode back.
  std::vector<int32_t> ids = {1, 3, 34, 9, 22, 4, 3, 18, 20, 7, 9, 3, 5, 3, 6, 10, 16, 4, 25, 3, 6, 8, 4, 13, 4};
  std::string text = tok->decode(ids, true);
  EXPECT_EQ(text, "Once upon a time, there");
  EXPECT_EQ(tok->encode(text, true), ids);
  const std::string s = "Lily saw a big box on the ground. She wanted to play with it!";
  EXPECT_EQ(tok->decode(tok->encode(s, false)), s);
  // No byte tokens: a character outside the vocabulary becomes <unk> (id 0).
  auto unk = tok->encode("a\xC3\x9F" "a", false);  // "aßa"
  EXPECT_NE(std::find(unk.begin(), unk.end(), 0), unk.end());
}

TEST(Llama2cTokenizer, FromPathErrorsNameThePath) {
  const fs::path dir = fs::temp_directory_path() / "kiln_tok_llama2c_test";
  fs::create_directories(dir);
  const std::string bad = (dir / "bad.bin").string();
  {
    std::ofstream out(bad, std::ios::binary);
    int32_t max_len = 7, len = 100;
    float score = 0;
    out.write(reinterpret_cast<const char*>(&max_len), 4);
    out.write(reinterpret_cast<const char*>(&score), 4);
    out.write(reinterpret_cast<const char*>(&len), 4);
  }
  for (const std::string& p : {bad, (dir / "missing.bin").string(), dir.string(), (dir / "x.json").string()}) {
    try {
      kiln::Tokenizer::from_path(p);
      ADD_FAILURE() << p << " loaded";
    } catch (const kiln::Error& e) {
      std::string m = e.what();
      EXPECT_NE(m.find(p), std::string::npos) << m;
      EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    }
  }
  fs::remove_all(dir);
}

// Streams ids one at a time and checks the detokenizer's contract: every piece is complete UTF-8
// and all pieces plus flush() equal decode(prefix + generated) minus decode(prefix).
std::vector<std::string> stream(const kiln::Tokenizer& tok, const std::vector<int32_t>& prefix,
                                const std::vector<int32_t>& generated, bool skip_special = true) {
  kiln::IncrementalDetokenizer detok(tok, prefix, skip_special);
  std::vector<std::string> pieces;
  for (int32_t id : generated) pieces.push_back(detok.push(id));
  pieces.push_back(detok.flush());
  std::vector<int32_t> all = prefix;
  all.insert(all.end(), generated.begin(), generated.end());
  std::string full = tok.decode(all, skip_special);
  std::string head = tok.decode(prefix, skip_special);
  std::string joined;
  for (const auto& p : pieces) {
    EXPECT_TRUE(valid_utf8(p));
    EXPECT_EQ(p.find("\xEF\xBF\xBD"), std::string::npos) << "U+FFFD in a streamed piece";
    joined += p;
  }
  EXPECT_EQ(full.compare(0, head.size(), head), 0);
  EXPECT_EQ(joined, full.substr(head.size()));
  return pieces;
}

TEST(IncrementalDetokenizer, ByteLevelEmojiAndCjkSplitAcrossTokens) {
  auto tok = kiln::Tokenizer::from_path(kGpt2);
  const std::string text =
      "Hello \xF0\x9F\x98\x80 \xE4\xB8\x96\xE7\x95\x8C! \xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9 caf\xC3\xA9";
  auto ids = tok->encode(text, false);
  // The emoji and the CJK characters are split over several byte-level tokens.
  size_t partial = 0;
  for (int32_t id : ids) partial += tok->decode(std::vector<int32_t>{id}).find("\xEF\xBF\xBD") != std::string::npos;
  EXPECT_GE(partial, 2u);
  auto pieces = stream(*tok, {}, ids);
  std::string joined;
  for (const auto& p : pieces) joined += p;
  EXPECT_EQ(joined, text);
  // Never more text than is complete: a piece never ends inside a character.
  std::vector<int32_t> prompt = tok->encode("Say:", false);
  stream(*tok, prompt, ids);
}

TEST(IncrementalDetokenizer, ByteFallbackTokensAndLeadingSpace) {
  auto tok = kiln::Tokenizer::from_path(kTok512);
  auto ids = tok->encode("Once upon a time \xF0\x9F\x98\x80 \xE4\xB8\x96 end", false);
  // Without a prompt the first piece loses its leading space, as decode does.
  auto pieces = stream(*tok, {1}, ids);
  std::string joined;
  for (const auto& p : pieces) joined += p;
  EXPECT_EQ(joined, "Once upon a time \xF0\x9F\x98\x80 \xE4\xB8\x96 end");
  // After a prompt the first generated token keeps its space.
  auto prompt = tok->encode("Lily said", true);
  auto gen = tok->encode("Once upon", false);
  auto p2 = stream(*tok, prompt, gen);
  EXPECT_EQ(p2[0], " Once");
}

TEST(IncrementalDetokenizer, SentencePieceGgufKeepsSpacesAfterPrompt) {
  auto tok = kiln::Tokenizer::from_path(kLlamaSpm);
  auto prompt = tok->encode("The answer is", true);
  auto gen = tok->encode("the emoji \xF0\x9F\xA6\x80 and \xE6\x97\xA5\xE6\x9C\xAC", false);
  auto pieces = stream(*tok, prompt, gen);
  std::string joined;
  for (const auto& p : pieces) joined += p;
  EXPECT_EQ(joined, " the emoji \xF0\x9F\xA6\x80 and \xE6\x97\xA5\xE6\x9C\xAC");
  // Special tokens in the stream: skipped, or shown when asked.
  std::vector<int32_t> with_eos = gen;
  with_eos.push_back(2);
  stream(*tok, prompt, with_eos, true);
  stream(*tok, prompt, with_eos, false);
  // An empty prefix.
  stream(*tok, {}, gen);
}

// Every corpus string of the goldens, cut at random points into prompt and generated ids, streams
// to exactly decode(all) minus decode(prompt), with and without skipping special tokens.
TEST(IncrementalDetokenizer, CorpusStreamsExactly) {
  const fs::path fixtures = fs::path(KILN_SOURCE_DIR) / "tests" / "fixtures" / "tokenizers";
  std::ifstream in(fixtures / "corpus.jsonl");
  ASSERT_TRUE(in) << fixtures / "corpus.jsonl";
  std::vector<std::string> texts;
  std::string line;
  while (std::getline(in, line)) texts.push_back(nlohmann::json::parse(line).at("text").get<std::string>());
  ASSERT_GT(texts.size(), 100u);
  std::mt19937 rng(42);
  for (const std::string& path : {kTok512, kGpt2, (fixtures / "spm-llama2").string(), (fixtures / "spm-metaspace").string()}) {
    auto tok = kiln::Tokenizer::from_path(path);
    size_t bad = 0;
    for (const auto& text : texts) {
      auto ids = tok->encode(text, true);
      for (bool skip : {true, false}) {
        size_t cut = rng() % (ids.size() + 1);
        std::vector<int32_t> prefix(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(cut));
        kiln::IncrementalDetokenizer detok(*tok, prefix, skip);
        std::string got;
        for (size_t k = cut; k < ids.size(); ++k) {
          std::string piece = detok.push(ids[k]);
          EXPECT_TRUE(valid_utf8(piece));
          got += piece;
        }
        got += detok.flush();
        std::string full = tok->decode(ids, skip), head = tok->decode(prefix, skip);
        // A prompt cut inside a character decodes with a U+FFFD tail: "minus" is not defined.
        if (full.compare(0, head.size(), head) != 0) continue;
        if (got != full.substr(head.size()) && bad++ < 5) {
          ADD_FAILURE() << path << " cut " << cut << " skip " << skip << " text " << nlohmann::json(text).dump()
                        << "\n  got  " << nlohmann::json(got).dump() << "\n  want "
                        << nlohmann::json(full.substr(head.size())).dump();
        }
      }
    }
    EXPECT_EQ(bad, 0u) << path;
  }
}

}  // namespace
