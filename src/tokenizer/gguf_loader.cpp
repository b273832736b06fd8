// Builds a PipelineTokenizer from GGUF tokenizer.ggml.* metadata: "gpt2" (byte-level BPE, with the
// pre-tokenizer of the HF tokenizer it was converted from, chosen by tokenizer.ggml.pre) and
// "llama" (SentencePiece BPE by score with byte fallback).
#include <algorithm>

#include "io/gguf.h"
#include "kiln/error.h"
#include "tokenizer/pipeline_tokenizer.h"
#include "tokenizer/unicode.h"

namespace kiln::tok {

namespace {

// tokenizer.ggml.token_type values.
enum TokenType : int64_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

const char* const kLlama3Pattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+";
const char* const kQwen2Pattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+";
const char* const kO200kPattern =
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char* const kTekkenPattern =
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+|"
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*|"
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
// CJK ideographs, the blocks before them, Hangul syllables (DeepSeek's splits).
const char* const kDeepSeekCjk = "[\\x{4E00}-\\x{9FA5}\\x{0800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+";

std::unique_ptr<PreTokenizer> split(const char* pattern) {
  return std::make_unique<SplitPreTokenizer>(Pattern::regex(pattern), SplitBehavior::Isolated, false);
}

std::unique_ptr<PreTokenizer> sequence(std::vector<std::unique_ptr<PreTokenizer>> items) {
  return std::make_unique<SequencePreTokenizer>(std::move(items));
}

template <typename... T>
std::vector<std::unique_ptr<PreTokenizer>> list(T&&... items) {
  std::vector<std::unique_ptr<PreTokenizer>> v;
  (v.push_back(std::forward<T>(items)), ...);
  return v;
}

std::unique_ptr<PreTokenizer> byte_level(bool use_regex) {
  return std::make_unique<ByteLevelPreTokenizer>(false, use_regex);
}

struct BpeLayout {
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  bool ignore_merges = false;
};

// The normalizer and pre-tokenizer of the HF tokenizer.json each `pre` name stands for.
BpeLayout bpe_layout(const std::string& pre) {
  BpeLayout l;
  if (pre == "default" || pre == "gpt-2" || pre == "gpt2" || pre == "phi-2" || pre == "jina-es" ||
      pre == "jina-de" || pre == "jina-v2-es" || pre == "jina-v2-de" || pre == "roberta-bpe") {
    l.pre_tokenizer = byte_level(true);
  } else if (pre == "mpt" || pre == "olmo" || pre == "gpt-neox" || pre == "pythia") {
    l.normalizer = std::make_unique<UnicodeNormalizer>(NormalForm::NFC);
    l.pre_tokenizer = byte_level(true);
  } else if (pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3" || pre == "smaug-bpe" ||
             pre == "dbrx" || pre == "falcon3" || pre == "pixtral") {
    l.pre_tokenizer = sequence(list(split(kLlama3Pattern), byte_level(false)));
    l.ignore_merges = pre != "dbrx";
  } else if (pre == "qwen2" || pre == "deepseek-r1-qwen" || pre == "stablelm2" || pre == "megrez") {
    l.normalizer = std::make_unique<UnicodeNormalizer>(NormalForm::NFC);
    l.pre_tokenizer = sequence(list(split(kQwen2Pattern), byte_level(false)));
  } else if (pre == "gpt-4o" || pre == "o200k") {
    l.pre_tokenizer = sequence(list(split(kO200kPattern), byte_level(false)));
  } else if (pre == "tekken") {
    l.pre_tokenizer = sequence(list(split(kTekkenPattern), byte_level(false)));
  } else if (pre == "falcon") {
    l.pre_tokenizer = sequence(list(std::make_unique<PunctuationPreTokenizer>(SplitBehavior::Contiguous),
                                    byte_level(true), std::make_unique<DigitsPreTokenizer>(false),
                                    split("[0-9][0-9][0-9]")));
  } else if (pre == "starcoder" || pre == "refact" || pre == "smollm" || pre == "command-r" ||
             pre == "codeshell" || pre == "exaone" || pre == "minerva-7b") {
    l.pre_tokenizer = sequence(list(std::make_unique<DigitsPreTokenizer>(true), byte_level(true)));
  } else if (pre == "deepseek-coder") {
    l.pre_tokenizer = sequence(list(split("[\\r\\n]"), split("\\s?\\p{L}+"), split("\\s?\\p{P}+"),
                                    split(kDeepSeekCjk), std::make_unique<DigitsPreTokenizer>(true),
                                    byte_level(false)));
  } else if (pre == "deepseek-llm") {
    l.pre_tokenizer = sequence(list(
        split("[\\r\\n]"), split("\\s?\\p{L&}+"),
        split("\\s?[!-/:-~\\x{FF01}-\\x{FF0F}\\x{FF1A}-\\x{FF5E}\\x{2018}-\\x{201F}\\x{3000}-\\x{3002}]+"),
        split("\\s+$"), split(kDeepSeekCjk), std::make_unique<DigitsPreTokenizer>(true), byte_level(false)));
  } else {
    KILN_THROW("tokenizer.ggml.pre '{}' is not supported", pre);
  }
  return l;
}

}  // namespace

std::unique_ptr<Tokenizer> load_gguf_tokenizer(const std::string& path) {
  io::GgufFile f(path);
  KILN_CHECK(f.has("tokenizer.ggml.model"), "{}: no tokenizer.ggml.model in the metadata", path);
  const std::string kind = f.get_string("tokenizer.ggml.model");
  if (kind == "bert") KILN_THROW("{}: WordPiece (tokenizer.ggml.model 'bert') vocabularies are not supported", path);
  KILN_CHECK(kind == "gpt2" || kind == "llama", "{}: tokenizer.ggml.model '{}' is not supported (gpt2 and llama are)",
             path, kind);
  std::vector<std::string> tokens = f.get_string_array("tokenizer.ggml.tokens");
  const auto n = static_cast<int32_t>(tokens.size());
  KILN_CHECK(n > 0, "{}: tokenizer.ggml.tokens is empty", path);
  std::vector<int64_t> types(tokens.size(), kNormal);
  if (f.has("tokenizer.ggml.token_type")) {
    types = f.get_int_array("tokenizer.ggml.token_type");
    KILN_CHECK(types.size() == tokens.size(), "{}: tokenizer.ggml.token_type has {} entries for {} tokens", path,
               types.size(), tokens.size());
  }
  auto opt_id = [&](const char* key) -> std::optional<int32_t> {
    if (!f.has(key)) return std::nullopt;
    int64_t v = f.get_int(key);
    if (v < 0 || v >= n) return std::nullopt;
    return static_cast<int32_t>(v);
  };

  TokenizerParts parts;
  const bool spm = kind == "llama";
  const std::string spm_space = "\xE2\x96\x81";
  // Control and user-defined tokens are cut out of the text before the model runs. Their GGUF
  // strings are the text they stand for; decode() gets them in the model's spelling.
  for (int32_t id = 0; id < n; ++id) {
    int64_t t = types[id];
    if (t != kControl && t != kUserDefined && !(spm && t == kUnknown)) continue;
    if (tokens[id].empty()) continue;
    AddedToken a;
    a.id = id;
    a.content = tokens[id];
    a.special = t != kUserDefined;
    parts.added_tokens.push_back(a);
    if (t == kUserDefined) {
      if (spm) {
        std::string s;
        for (char c : tokens[id]) {
          if (c == ' ') {
            s += spm_space;
          } else {
            s += c;
          }
        }
        parts.decode_strings.emplace(id, std::move(s));
      } else {
        parts.decode_strings.emplace(id, byte_level_encode(tokens[id]));
      }
    } else if (!spm) {
      parts.decode_strings.emplace(id, byte_level_encode(tokens[id]));
    }
  }

  try {
    if (spm) {
      std::vector<float> scores(tokens.size(), 0.0f);
      if (f.has("tokenizer.ggml.scores")) {
        auto s = f.get_float_array("tokenizer.ggml.scores");
        KILN_CHECK(s.size() == tokens.size(), "tokenizer.ggml.scores has {} entries for {} tokens", s.size(),
                   tokens.size());
        for (size_t i = 0; i < s.size(); ++i) scores[i] = static_cast<float>(s[i]);
      }
      std::vector<bool> mergeable(tokens.size());
      for (size_t i = 0; i < tokens.size(); ++i) mergeable[i] = types[i] == kNormal;
      int32_t unk = opt_id("tokenizer.ggml.unknown_token_id").value_or(-1);
      parts.model = std::make_unique<SpmModel>(Vocab(tokens), std::move(scores), std::move(mergeable), unk);
      const bool add_space_prefix = f.get_bool("tokenizer.ggml.add_space_prefix", true);
      std::vector<std::unique_ptr<Normalizer>> norms;
      if (add_space_prefix) norms.push_back(std::make_unique<PrependNormalizer>(spm_space));
      norms.push_back(std::make_unique<ReplaceNormalizer>(Pattern::literal(" "), spm_space));
      parts.normalizer = std::make_unique<SequenceNormalizer>(std::move(norms));
      std::vector<std::unique_ptr<Decoder>> decs;
      decs.push_back(std::make_unique<ReplaceDecoder>(Pattern::literal(spm_space), " "));
      decs.push_back(std::make_unique<ByteFallbackDecoder>());
      decs.push_back(std::make_unique<FuseDecoder>());
      if (add_space_prefix) decs.push_back(std::make_unique<StripDecoder>(U' ', 1, 0));
      parts.decoder = std::make_unique<SequenceDecoder>(std::move(decs));
    } else {
      std::vector<std::string> merge_strings = f.get_string_array("tokenizer.ggml.merges");
      std::vector<std::pair<std::string, std::string>> merges;
      merges.reserve(merge_strings.size());
      for (auto& m : merge_strings) {
        size_t sp = m.find(' ', 1);
        KILN_CHECK(sp != std::string::npos, "tokenizer.ggml.merges entry '{}' has no space", m);
        merges.emplace_back(m.substr(0, sp), m.substr(sp + 1));
      }
      BpeLayout layout = bpe_layout(f.get_string("tokenizer.ggml.pre", "default"));
      BpeOptions opt;
      opt.ignore_merges = layout.ignore_merges;
      parts.model = std::make_unique<BpeModel>(Vocab(tokens), merges, opt);
      parts.normalizer = std::move(layout.normalizer);
      parts.pre_tokenizer = std::move(layout.pre_tokenizer);
      parts.decoder = std::make_unique<ByteLevelDecoder>();
    }
  } catch (const Error& e) {
    KILN_THROW("{}: {}", path, e.what());
  }

  parts.bos_id = opt_id("tokenizer.ggml.bos_token_id");
  auto eos = opt_id("tokenizer.ggml.eos_token_id");
  for (const char* key : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"}) {
    if (auto id = opt_id(key)) {
      if (std::find(parts.eos_ids.begin(), parts.eos_ids.end(), *id) == parts.eos_ids.end()) parts.eos_ids.push_back(*id);
    }
  }
  const bool add_bos = f.get_bool("tokenizer.ggml.add_bos_token", spm);
  const bool add_eos = f.get_bool("tokenizer.ggml.add_eos_token", false);
  std::vector<int32_t> before, after;
  if (add_bos && parts.bos_id) before.push_back(*parts.bos_id);
  if (add_eos && eos) after.push_back(*eos);
  parts.post_processor = std::make_unique<TemplatePostProcessor>(std::move(before), std::move(after));
  if (f.has("tokenizer.chat_template")) parts.chat_template = f.get_string("tokenizer.chat_template");
  return std::make_unique<PipelineTokenizer>(std::move(parts));
}

}  // namespace kiln::tok
