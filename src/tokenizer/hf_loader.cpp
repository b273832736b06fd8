// Loads an HF tokenizer.json (+ tokenizer_config.json, generation_config.json, chat_template.jinja
// beside it) into a PipelineTokenizer.
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "io/json_file.h"
#include "kiln/error.h"
#include "tokenizer/pipeline_tokenizer.h"

namespace kiln::tok {

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// tokenizer.json "vocab": {"token": id, ...} -> a Vocab indexed by id.
Vocab vocab_from_object(const json& v) {
  KILN_CHECK(v.is_object(), "model.vocab must be an object of token -> id");
  int32_t max_id = -1;
  for (auto it = v.begin(); it != v.end(); ++it) {
    KILN_CHECK(it.value().is_number_integer(), "model.vocab['{}'] is not an integer id", it.key());
    int64_t id = it.value().get<int64_t>();
    KILN_CHECK(id >= 0 && id < (1 << 30), "model.vocab['{}'] has id {} out of range", it.key(), id);
    max_id = std::max(max_id, static_cast<int32_t>(id));
  }
  std::vector<std::string> tokens(static_cast<size_t>(max_id + 1));
  std::vector<bool> present(tokens.size(), false);
  size_t count = 0;
  for (auto it = v.begin(); it != v.end(); ++it) {
    auto id = static_cast<size_t>(it.value().get<int64_t>());
    if (present[id]) continue;
    tokens[id] = it.key();
    present[id] = true;
    ++count;
  }
  if (count == tokens.size()) present.clear();
  return Vocab(std::move(tokens), std::move(present));
}

std::optional<std::string> optional_string(const json& j, const char* key) {
  if (!j.contains(key) || j.at(key).is_null()) return std::nullopt;
  return j.at(key).get<std::string>();
}

// The value HF's serde_json (without float_roundtrip) reads for the number this file spells as x.
// It takes the decimal digits as an integer and scales by a power of ten in floating point, which is
// not always correctly rounded; Unigram ties depend on those last bits. The file's spelling is taken
// to be the shortest one that round-trips (what serde_json and Python's json write).
double serde_json_double(double x) {
  if (!std::isfinite(x) || x == 0) return x;
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), x);
  std::string_view s(buf, static_cast<size_t>(res.ptr - buf));
  bool negative = false;
  size_t i = 0;
  if (s[i] == '-') {
    negative = true;
    ++i;
  }
  uint64_t significand = 0;
  int exponent = 0;
  bool fraction = false;
  for (; i < s.size() && s[i] != 'e'; ++i) {
    if (s[i] == '.') {
      fraction = true;
      continue;
    }
    significand = significand * 10 + static_cast<uint64_t>(s[i] - '0');
    if (fraction) --exponent;
  }
  if (i < s.size()) exponent += std::atoi(std::string(s.substr(i + 1)).c_str());
  double f = static_cast<double>(significand);
  while (true) {
    int e = exponent < 0 ? -exponent : exponent;
    if (e <= 308) {
      double pow = std::pow(10.0, e);  // exact-rounded for every e <= 308, as serde's table
      f = exponent >= 0 ? f * pow : f / pow;
      break;
    }
    if (exponent >= 0) return x;
    f /= 1e308;
    exponent += 308;
  }
  return negative ? -f : f;
}

std::unique_ptr<Model> make_model(const json& m) {
  std::string type;
  if (m.contains("type")) {
    type = m.at("type").get<std::string>();
  } else if (m.contains("merges")) {
    type = "BPE";
  } else if (m.contains("vocab") && m.at("vocab").is_array()) {
    type = "Unigram";
  } else if (m.contains("max_input_chars_per_word")) {
    type = "WordPiece";
  } else {
    type = "WordLevel";
  }
  if (type == "BPE") {
    Vocab vocab = vocab_from_object(m.at("vocab"));
    std::vector<std::pair<std::string, std::string>> merges;
    if (m.contains("merges")) {
      const json& ms = m.at("merges");
      merges.reserve(ms.size());
      for (const auto& e : ms) {
        if (e.is_array()) {
          KILN_CHECK(e.size() == 2, "model.merges entry {} is not a pair", e.dump());
          merges.emplace_back(e.at(0).get<std::string>(), e.at(1).get<std::string>());
          continue;
        }
        const std::string& s = e.get_ref<const std::string&>();
        // "a b": split at the space that leaves two known tokens (the first one, normally).
        size_t sp = s.find(' ');
        KILN_CHECK(sp != std::string::npos, "model.merges entry '{}' has no space", s);
        size_t chosen = sp;
        for (size_t q = sp; q != std::string::npos; q = s.find(' ', q + 1)) {
          if (vocab.find(std::string_view(s).substr(0, q)) && vocab.find(std::string_view(s).substr(q + 1))) {
            chosen = q;
            break;
          }
        }
        merges.emplace_back(s.substr(0, chosen), s.substr(chosen + 1));
      }
    }
    BpeOptions opt;
    opt.unk_token = optional_string(m, "unk_token");
    opt.continuing_subword_prefix = optional_string(m, "continuing_subword_prefix").value_or("");
    opt.end_of_word_suffix = optional_string(m, "end_of_word_suffix").value_or("");
    opt.fuse_unk = m.value("fuse_unk", false);
    opt.byte_fallback = m.value("byte_fallback", false);
    opt.ignore_merges = m.value("ignore_merges", false);
    return std::make_unique<BpeModel>(std::move(vocab), merges, std::move(opt));
  }
  if (type == "WordPiece") {
    return std::make_unique<WordPieceModel>(
        vocab_from_object(m.at("vocab")), optional_string(m, "unk_token").value_or("[UNK]"),
        optional_string(m, "continuing_subword_prefix").value_or("##"), m.value("max_input_chars_per_word", size_t{100}));
  }
  if (type == "WordLevel") {
    return std::make_unique<WordLevelModel>(vocab_from_object(m.at("vocab")),
                                            optional_string(m, "unk_token").value_or(""));
  }
  if (type == "Unigram") {
    const json& v = m.at("vocab");
    KILN_CHECK(v.is_array(), "model.vocab of a Unigram model must be a list of [piece, score]");
    std::vector<std::string> pieces;
    std::vector<double> scores;
    pieces.reserve(v.size());
    scores.reserve(v.size());
    for (const auto& e : v) {
      KILN_CHECK(e.is_array() && e.size() == 2, "Unigram vocab entry {} is not [piece, score]", e.dump());
      pieces.push_back(e.at(0).get<std::string>());
      scores.push_back(serde_json_double(e.at(1).get<double>()));
    }
    int32_t unk = -1;
    if (m.contains("unk_id") && m.at("unk_id").is_number_integer()) unk = m.at("unk_id").get<int32_t>();
    return std::make_unique<UnigramModel>(Vocab(std::move(pieces)), std::move(scores), unk,
                                          m.value("byte_fallback", false));
  }
  KILN_THROW("model type '{}' is not supported (BPE, Unigram, WordPiece and WordLevel are)", type);
}

// bos_token / eos_token in tokenizer_config.json: a string or {"content": ...}.
std::optional<std::string> token_text(const json& cfg, const char* key) {
  if (!cfg.contains(key)) return std::nullopt;
  const json& v = cfg.at(key);
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v.at("content").is_string()) return v.at("content").get<std::string>();
  return std::nullopt;
}

std::optional<std::string> read_text_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::optional<std::string> chat_template_from(const json& cfg) {
  if (!cfg.contains("chat_template")) return std::nullopt;
  const json& t = cfg.at("chat_template");
  if (t.is_string()) return t.get<std::string>();
  if (t.is_array()) {
    std::optional<std::string> first;
    for (const auto& e : t) {
      if (!e.is_object() || !e.contains("template") || !e.at("template").is_string()) continue;
      std::string tmpl = e.at("template").get<std::string>();
      if (e.value("name", std::string()) == "default") return tmpl;
      if (!first) first = tmpl;
    }
    return first;
  }
  return std::nullopt;
}

bool is_llama_style(const json& cfg) {
  std::string cls = cfg.value("tokenizer_class", std::string());
  if (cls.size() > 4 && cls.compare(cls.size() - 4, 4, "Fast") == 0) cls.resize(cls.size() - 4);
  return cls == "LlamaTokenizer" || cls == "CodeLlamaTokenizer" || cls == "GemmaTokenizer";
}

}  // namespace

std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::string& tokenizer_json, const std::string& folder) {
  json j = io::read_json_file(tokenizer_json);
  json cfg = json::object();
  const fs::path dir = folder.empty() ? fs::path(tokenizer_json).parent_path() : fs::path(folder);
  const fs::path cfg_path = dir / "tokenizer_config.json";
  if (fs::exists(cfg_path)) cfg = io::read_json_file(cfg_path.string());
  KILN_CHECK(cfg.is_object(), "{}: the top level must be an object", cfg_path.string());
  TokenizerParts parts;
  try {
    KILN_CHECK(j.is_object() && j.contains("model"), "no \"model\" object");
    parts.model = make_model(j.at("model"));
    if (j.contains("added_tokens") && j.at("added_tokens").is_array()) {
      for (const auto& a : j.at("added_tokens")) {
        AddedToken t;
        t.id = a.at("id").get<int32_t>();
        t.content = a.at("content").get<std::string>();
        t.special = a.value("special", false);
        t.lstrip = a.value("lstrip", false);
        t.rstrip = a.value("rstrip", false);
        t.single_word = a.value("single_word", false);
        t.normalized = a.value("normalized", !t.special);
        parts.added_tokens.push_back(std::move(t));
      }
    }
    parts.normalizer = make_normalizer(j.value("normalizer", json()));
    parts.pre_tokenizer = make_pre_tokenizer(j.value("pre_tokenizer", json()));
    parts.post_processor = make_post_processor(j.value("post_processor", json()));
    parts.decoder = make_decoder(j.value("decoder", json()));
  } catch (const nlohmann::json::exception& e) {
    KILN_THROW("{}: malformed tokenizer: {}", tokenizer_json, e.what());
  } catch (const Error& e) {
    KILN_THROW("{}: {}", tokenizer_json, e.what());
  }

  // Resolve names to ids: added tokens first, then the model vocabulary (as HF's token_to_id).
  auto find_id = [&](const std::string& s) -> std::optional<int32_t> {
    for (const auto& t : parts.added_tokens) {
      if (t.content == s) return t.id;
    }
    return parts.model->vocab().find(s);
  };
  std::optional<int32_t> bos, eos;
  if (auto s = token_text(cfg, "bos_token")) bos = find_id(*s);
  if (auto s = token_text(cfg, "eos_token")) eos = find_id(*s);

  // transformers rebuilds the post-processor of Llama-style tokenizers from add_bos/add_eos.
  if (is_llama_style(cfg) && (cfg.contains("add_bos_token") || cfg.contains("add_eos_token"))) {
    bool add_bos = cfg.value("add_bos_token", true);
    bool add_eos = cfg.value("add_eos_token", false);
    std::vector<int32_t> before, after;
    if (add_bos && bos) before.push_back(*bos);
    if (add_eos && eos) after.push_back(*eos);
    parts.post_processor = std::make_unique<TemplatePostProcessor>(std::move(before), std::move(after));
  }

  if (!bos && parts.post_processor) {
    auto lead = parts.post_processor->leading_ids();
    if (lead.size() == 1) bos = lead[0];
  }
  parts.bos_id = bos;
  auto add_eos_id = [&](int32_t id) {
    if (std::find(parts.eos_ids.begin(), parts.eos_ids.end(), id) == parts.eos_ids.end()) parts.eos_ids.push_back(id);
  };
  if (eos) add_eos_id(*eos);
  const fs::path gen_path = dir / "generation_config.json";
  if (fs::exists(gen_path)) {
    json gen = io::read_json_file(gen_path.string());
    if (gen.is_object() && gen.contains("eos_token_id")) {
      const json& e = gen.at("eos_token_id");
      if (e.is_number_integer()) add_eos_id(e.get<int32_t>());
      if (e.is_array()) {
        for (const auto& x : e) {
          if (x.is_number_integer()) add_eos_id(x.get<int32_t>());
        }
      }
    }
  }
  // End-of-turn tokens of common chat formats also end generation.
  for (const char* name : {"<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                           "<|end_of_text|>", "<｜end▁of▁sentence｜>"}) {
    for (const auto& t : parts.added_tokens) {
      if (t.special && t.content == name) add_eos_id(t.id);
    }
  }

  parts.chat_template = chat_template_from(cfg);
  if (!parts.chat_template) parts.chat_template = read_text_file(dir / "chat_template.jinja");
  if (!parts.chat_template && fs::exists(dir / "chat_template.json")) {
    json ct = io::read_json_file((dir / "chat_template.json").string());
    if (ct.is_object()) parts.chat_template = chat_template_from(ct);
  }
  return std::make_unique<PipelineTokenizer>(std::move(parts));
}

}  // namespace kiln::tok
