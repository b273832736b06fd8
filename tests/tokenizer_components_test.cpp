// Stage-level checks of the tokenizer against behaviour observed in HF `tokenizers` 0.22: split
// behaviours, regex dialect, decoders, added-token flags, plus speed on long words and thread safety.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "kiln/error.h"
#include "kiln/tokenizer.h"
#include "tokenizer/pipeline.h"
#include "tokenizer/regex.h"
#include "tokenizer/unicode.h"

namespace {

using kiln::tok::Piece;
using nlohmann::json;
namespace fs = std::filesystem;

std::vector<std::string> pre_tokenize(const json& config, const std::string& text) {
  auto pt = kiln::tok::make_pre_tokenizer(config);
  std::vector<Piece> pieces{{text, true}};
  pt->pre_tokenize(pieces);
  std::vector<std::string> out;
  for (auto& p : pieces) out.push_back(p.text);
  return out;
}

json split(const std::string& delim, const std::string& behavior, bool invert) {
  return {{"type", "Split"}, {"pattern", {{"String", delim}}}, {"behavior", behavior}, {"invert", invert}};
}

using V = std::vector<std::string>;

TEST(PreTokenizers, SplitBehaviours) {
  const std::string s = "a,,b, c;;d,";
  EXPECT_EQ(pre_tokenize(split(",", "Removed", false), s), (V{"a", "b", " c;;d"}));
  EXPECT_EQ(pre_tokenize(split(",", "Removed", true), s), (V{",", ",", ",", ","}));
  EXPECT_EQ(pre_tokenize(split(",", "Isolated", false), s), (V{"a", ",", ",", "b", ",", " c;;d", ","}));
  EXPECT_EQ(pre_tokenize(split(",", "MergedWithPrevious", false), s), (V{"a,", ",", "b,", " c;;d,"}));
  EXPECT_EQ(pre_tokenize(split(",", "MergedWithPrevious", true), s), (V{"a", ",", ",b", ", c;;d", ","}));
  EXPECT_EQ(pre_tokenize(split(",", "MergedWithNext", false), s), (V{"a", ",", ",b", ", c;;d", ","}));
  EXPECT_EQ(pre_tokenize(split(",", "MergedWithNext", true), s), (V{"a,", ",", "b,", " c;;d,"}));
  EXPECT_EQ(pre_tokenize(split(",", "Contiguous", false), s), (V{"a", ",,", "b", ",", " c;;d", ","}));
}

TEST(PreTokenizers, CharacterClassSplitters) {
  EXPECT_EQ(pre_tokenize({{"type", "Punctuation"}, {"behavior", "Contiguous"}}, "a,,b!?$+c"),
            (V{"a", ",,", "b", "!?$+", "c"}));
  EXPECT_EQ(pre_tokenize({{"type", "Digits"}, {"individual_digits", false}}, "a123b4\xC2\xB2" "5"),
            (V{"a", "123", "b", "4\xC2\xB2" "5"}));
  EXPECT_EQ(pre_tokenize({{"type", "Digits"}, {"individual_digits", true}}, "a12b"), (V{"a", "1", "2", "b"}));
  // Whitespace is Rust's \w+|[^\w\s]+: '²' is not a word character.
  EXPECT_EQ(pre_tokenize({{"type", "Whitespace"}}, "hello, wor_ld\xC2\xB2 x!!  y\xC2\xA0z"),
            (V{"hello", ",", "wor_ld", "\xC2\xB2", "x", "!!", "y", "z"}));
  EXPECT_EQ(pre_tokenize({{"type", "WhitespaceSplit"}}, " hello, world\xC2\xA0z\xE2\x80\x8Bq "),
            (V{"hello,", "world", "z\xE2\x80\x8Bq"}));
  EXPECT_EQ(pre_tokenize({{"type", "BertPreTokenizer"}}, " hello, world$x "), (V{"hello", ",", "world", "$", "x"}));
}

TEST(PreTokenizers, MetaspaceAndByteLevel) {
  const std::string sp = "\xE2\x96\x81";
  EXPECT_EQ(pre_tokenize({{"type", "Metaspace"}, {"replacement", sp}, {"prepend_scheme", "always"}, {"split", true}},
                         "hello  world "),
            (V{sp + "hello", sp, sp + "world", sp}));
  EXPECT_EQ(pre_tokenize({{"type", "Metaspace"}, {"replacement", sp}, {"prepend_scheme", "always"}, {"split", false}},
                         "hello  world "),
            (V{sp + "hello" + sp + sp + "world" + sp}));
  EXPECT_EQ(pre_tokenize({{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}}, "hello  world "),
            (V{"\xC4\xA0hello", "\xC4\xA0", "\xC4\xA0world", "\xC4\xA0"}));
  EXPECT_EQ(pre_tokenize({{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}, "hello  world "),
            (V{"hello\xC4\xA0\xC4\xA0world\xC4\xA0"}));
  // Empty regex matches are skipped.
  EXPECT_EQ(pre_tokenize({{"type", "Split"}, {"pattern", {{"Regex", "\\s*"}}}, {"behavior", "Isolated"}, {"invert", false}},
                         "a  b"),
            (V{"a", "  ", "b"}));
}

std::vector<std::pair<size_t, size_t>> matches(const std::string& re, const std::string& text) {
  std::vector<std::pair<size_t, size_t>> m;
  kiln::tok::Regex(re).for_each_match(text, [&](size_t b, size_t e) { m.emplace_back(b, e); });
  return m;
}

TEST(Regex, OnigurumaDialect) {
  using M = std::vector<std::pair<size_t, size_t>>;
  // \s is White_Space: NBSP, U+0085, U+2028, U+3000 yes; U+001C and U+180E no.
  EXPECT_EQ(matches("\\s", "\xC2\xA0|\xC2\x85|\xE2\x80\xA8|\xE3\x80\x80|\x1C|\xE1\xA0\x8E").size(), 4u);
  // $ and ^ are line anchors, as in Ruby syntax.
  EXPECT_EQ(matches("\\s+$", "a  \nb  \n  c  "), (M{{1, 3}, {5, 7}, {11, 13}}));
  EXPECT_EQ(matches("^a", "ab\nab"), (M{{0, 1}, {3, 4}}));
  // (?i:'s) also takes the long s.
  EXPECT_EQ(matches("(?i:'s|'t)", "it'\xC5\xBF x'T"), (M{{2, 5}, {7, 9}}));
  // \h is a hex digit in Oniguruma.
  EXPECT_EQ(matches("\\h+", "zz0fAg"), (M{{2, 5}}));
  EXPECT_THROW(kiln::tok::Regex("(unclosed"), kiln::Error);
}

std::string decode(const json& config, std::vector<std::string> tokens) {
  auto d = kiln::tok::make_decoder(config);
  d->decode_chain(tokens);
  std::string out;
  for (auto& t : tokens) out += t;
  return out;
}

TEST(Decoders, MatchHuggingFace) {
  // A run of byte tokens that is not valid UTF-8 gives one U+FFFD per byte; malformed ones pass through.
  const std::string r = "\xEF\xBF\xBD";
  EXPECT_EQ(decode({{"type", "ByteFallback"}},
                   {"<0xE2>", "<0x96>", "a", "<0xE2>", "<0x96>", "<0x81>", "<0xFF>", "<0x41>", "<0x4>", "<0xZZ>"}),
            r + r + "a" + r + r + r + r + r + "<0x4><0xZZ>");
  EXPECT_EQ(decode({{"type", "ByteFallback"}}, {"<0xE2>", "<0x96>", "<0x81>", "b"}), "\xE2\x96\x81" "b");
  EXPECT_EQ(decode({{"type", "Strip"}, {"content", "x"}, {"start", 2}, {"stop", 1}}, {"xxax", "xxbxx"}), "abx");
  const std::string sp = "\xE2\x96\x81";
  EXPECT_EQ(decode({{"type", "Metaspace"}, {"replacement", sp}, {"prepend_scheme", "always"}}, {sp + "a" + sp + "b", sp + "c"}),
            "ab c");
  EXPECT_EQ(decode({{"type", "Metaspace"}, {"replacement", sp}, {"prepend_scheme", "never"}}, {sp + "a", sp + "b"}),
            " a b");
  EXPECT_EQ(decode({{"type", "BPEDecoder"}, {"suffix", "</w>"}}, {"ab", "c</w>", "d</w>"}), "abc d");
  EXPECT_EQ(decode({{"type", "WordPiece"}, {"prefix", "##"}, {"cleanup", true}}, {"a", "##b", "c", ".", "do", "n't", "##x"}),
            "ab c. don'tx");
  EXPECT_EQ(decode({{"type", "ByteLevel"}}, {"\xC4\xA0" "a", "\xC3\x83", "ab c", "\xC4\xA0"}), " a\xEF\xBF\xBD" "ab c ");
  EXPECT_EQ(decode({{"type", "Replace"}, {"pattern", {{"Regex", "a+"}}}, {"content", "X"}}, {"aab", "ba"}), "XbbX");
  EXPECT_EQ(decode({{"type", "CTC"}, {"pad_token", "<pad>"}, {"word_delimiter_token", "|"}, {"cleanup", true}},
                   {"<pad>", "a", "a", "<pad>", "b", "|", "c"}),
            "ab c");
}

// A character-level tokenizer with one special and three plain added tokens, written to a temp file.
std::unique_ptr<kiln::Tokenizer> added_token_tokenizer(const json& flags) {
  json vocab = json::object();
  for (int c = 32; c < 127; ++c) vocab[std::string(1, static_cast<char>(c))] = c - 32;
  vocab["<unk>"] = 95;
  json added = json::array();
  json m = {{"id", 96}, {"content", "<m>"}, {"special", true}, {"normalized", false},
            {"lstrip", false}, {"rstrip", false}, {"single_word", false}};
  m.update(flags);
  added.push_back(m);
  int id = 97;
  for (const char* t : {"ab", "abc", "bcd"}) {
    added.push_back({{"id", id++}, {"content", t}, {"special", false}, {"normalized", true},
                     {"lstrip", false}, {"rstrip", false}, {"single_word", false}});
  }
  json tj = {{"version", "1.0"}, {"added_tokens", added}, {"normalizer", nullptr}, {"pre_tokenizer", nullptr},
             {"post_processor", nullptr}, {"decoder", nullptr},
             {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array()}, {"unk_token", "<unk>"}}}};
  const fs::path p = fs::temp_directory_path() / ("kiln_added_" + std::to_string(::getpid()) + ".json");
  std::ofstream(p) << tj.dump();
  auto tok = kiln::Tokenizer::from_path(p.string());
  fs::remove(p);
  return tok;
}

std::vector<std::string> tokens(const kiln::Tokenizer& tok, const std::string& s) {
  std::vector<std::string> out;
  for (int32_t id : tok.encode(s, false)) out.push_back(tok.id_to_token(id));
  return out;
}

TEST(AddedTokens, StripAndSingleWordFlags) {
  auto plain = added_token_tokenizer(json::object());
  EXPECT_EQ(tokens(*plain, "x <m> y"), (V{"x", " ", "<m>", " ", "y"}));
  EXPECT_EQ(tokens(*plain, "abcd"), (V{"abc", "d"}));  // leftmost-longest
  EXPECT_EQ(tokens(*plain, "abbcd"), (V{"ab", "bcd"}));
  // parse_special=false leaves special tokens as text, but non-special added tokens still match.
  std::vector<std::string> t;
  for (int32_t id : plain->encode("x<m>ab", false, false)) t.push_back(plain->id_to_token(id));
  EXPECT_EQ(t, (V{"x", "<", "m", ">", "ab"}));

  auto lstrip = added_token_tokenizer({{"lstrip", true}});
  EXPECT_EQ(lstrip->encode("x  \t<m>", false).size(), 2u);  // "x", then "  \t<m>" as one token
  EXPECT_EQ(lstrip->encode("<m> <m>", false), (std::vector<int32_t>{96, 96}));
  auto rstrip = added_token_tokenizer({{"rstrip", true}});
  EXPECT_EQ(tokens(*rstrip, "a<m> b"), (V{"a", "<m>", "b"}));
  auto single = added_token_tokenizer({{"single_word", true}});
  EXPECT_EQ(tokens(*single, "x<m>y"), (V{"x", "<", "m", ">", "y"}));
  EXPECT_EQ(tokens(*single, "_<m>"), (V{"_", "<", "m", ">"}));
  EXPECT_EQ(tokens(*single, "-<m>-"), (V{"-", "<m>", "-"}));
  EXPECT_EQ(tokens(*single, "x <m> y"), (V{"x", " ", "<m>", " ", "y"}));
}

const std::string kVocabDir = std::string(KILN_TEST_DATA_DIR) + "/llama.cpp-vocab/";

TEST(Performance, LongWordsAreNotQuadratic) {
  // One 200k-character "word" through score-based SentencePiece BPE (no pre-tokenizer splits it),
  // and a long CJK run through byte-level BPE.
  auto spm = kiln::Tokenizer::from_path(kVocabDir + "ggml-vocab-llama-spm.gguf");
  std::string cjk;
  const char* chars[] = {"\xE4\xB8\xAD", "\xE6\x96\x87", "\xE5\xAD\x97", "\xE7\xAC\xA6", "\xE4\xB8\xB2", "a", "b"};
  for (int i = 0; i < 200000; ++i) cjk += chars[(i * 7 + i / 3) % 7];
  auto t0 = std::chrono::steady_clock::now();
  auto ids = spm->encode(cjk, false);
  double s1 = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(spm->decode(ids), cjk);
  EXPECT_LT(s1, 2.0);

  auto bpe = kiln::Tokenizer::from_path(kVocabDir + "ggml-vocab-deepseek-llm.gguf");
  t0 = std::chrono::steady_clock::now();
  ids = bpe->encode(cjk, false);
  double s2 = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(bpe->decode(ids), cjk);
  EXPECT_LT(s2, 2.0);
  std::string spaces(100000, ' ');
  EXPECT_EQ(bpe->decode(bpe->encode(spaces, false)), spaces);
}

TEST(ThreadSafety, ConcurrentEncodeGivesTheSameIds) {
  auto tok = kiln::Tokenizer::from_path(kVocabDir + "ggml-vocab-gpt-2.gguf");
  std::vector<std::string> texts;
  for (int i = 0; i < 200; ++i) {
    texts.push_back("Sample " + std::to_string(i * 7919) + " with words like tokenizer" + std::to_string(i % 13) +
                    " and \xE4\xB8\x96\xE7\x95\x8C " + std::string(static_cast<size_t>(i % 5), ' ') + "end.");
  }
  std::vector<std::vector<int32_t>> want;
  for (const auto& t : texts) want.push_back(tok->encode(t, false));
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&, k] {
      for (int rep = 0; rep < 5; ++rep) {
        for (size_t i = 0; i < texts.size(); ++i) {
          size_t j = (i + static_cast<size_t>(k) * 31) % texts.size();
          if (tok->encode(texts[j], false) != want[j]) ++mismatches;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(Unicode, LossyUtf8AsRust) {
  using kiln::tok::to_valid_utf8;
  const std::string r = "\xEF\xBF\xBD";
  EXPECT_EQ(to_valid_utf8("a\xE2\x96" "b"), "a" + r + "b");  // truncated sequence: one U+FFFD
  EXPECT_EQ(to_valid_utf8("\xC0\x80"), r + r);                // never-valid lead bytes: one each
  EXPECT_EQ(to_valid_utf8("\xED\xA0\x80"), r + r + r);        // surrogates
  EXPECT_EQ(to_valid_utf8("\xF0\x9F\x98"), r);
  EXPECT_EQ(to_valid_utf8("ok \xF0\x9F\x98\x80"), "ok \xF0\x9F\x98\x80");
}

}  // namespace
