// Tokenization models: the step that turns one pre-tokenized word into ids. BPE (merge ranks, as
// tokenizer.json and GGUF "gpt2" vocabularies have), SentencePiece-style BPE (merge by score, as
// GGUF "llama" and llama2.c vocabularies have), WordPiece and WordLevel.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace kiln::tok {

// Token strings by id (ids may have holes) and the reverse map.
class Vocab {
 public:
  Vocab() = default;
  // tokens[i] is the string of id i; present[i] false marks a hole (may be empty: all present).
  Vocab(std::vector<std::string> tokens, std::vector<bool> present = {});
  Vocab(Vocab&&) = default;
  Vocab& operator=(Vocab&&) = default;

  int32_t size() const { return static_cast<int32_t>(tokens_.size()); }
  std::optional<int32_t> find(std::string_view s) const {
    auto it = ids_.find(s);
    if (it == ids_.end()) return std::nullopt;
    return it->second;
  }
  int32_t find_or(std::string_view s, int32_t def) const {
    auto it = ids_.find(s);
    return it == ids_.end() ? def : it->second;
  }
  const std::string* token(int32_t id) const {
    if (id < 0 || id >= size() || (!present_.empty() && !present_[id])) return nullptr;
    return &tokens_[id];
  }

 private:
  std::vector<std::string> tokens_;
  std::vector<bool> present_;
  std::unordered_map<std::string_view, int32_t> ids_;  // views into tokens_
};

class Model {
 public:
  virtual ~Model() = default;
  // Appends the ids of one word (a pre-tokenized piece).
  virtual void tokenize(std::string_view word, std::vector<int32_t>& out) const = 0;
  virtual const Vocab& vocab() const = 0;
};

// A bounded, thread-safe word -> ids cache.
class WordCache {
 public:
  bool get(std::string_view word, std::vector<int32_t>& out) const;
  void put(std::string_view word, const std::vector<int32_t>& ids) const;
  static constexpr size_t kMaxWordBytes = 128;

 private:
  static constexpr size_t kShards = 16;
  static constexpr size_t kMaxEntriesPerShard = 4096;
  struct Shard {
    std::mutex mu;
    std::unordered_map<std::string, std::vector<int32_t>> map;
  };
  mutable Shard shards_[kShards];
};

struct BpeOptions {
  std::optional<std::string> unk_token;
  std::string continuing_subword_prefix;
  std::string end_of_word_suffix;
  bool fuse_unk = false;
  bool byte_fallback = false;
  bool ignore_merges = false;
};

class BpeModel : public Model {
 public:
  // merges: pairs of token strings in priority order (first merges first). Throws kiln::Error
  // naming the merge when one of its tokens (or their concatenation) is not in the vocabulary.
  BpeModel(Vocab vocab, const std::vector<std::pair<std::string, std::string>>& merges, BpeOptions options);
  void tokenize(std::string_view word, std::vector<int32_t>& out) const override;
  const Vocab& vocab() const override { return vocab_; }

 private:
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;
  std::optional<std::pair<int32_t, int32_t>> find_merge(int32_t a, int32_t b) const {
    auto it = merges_.find((static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b));
    if (it == merges_.end()) return std::nullopt;
    return it->second;
  }

  Vocab vocab_;
  BpeOptions opt_;
  int32_t unk_id_ = -1;
  int32_t byte_ids_[256];
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;  // (a, b) -> (rank, merged id)
  WordCache cache_;
};

// SentencePiece BPE: repeatedly merge the adjacent pair whose concatenation is a mergeable token
// with the highest score. Pieces left that are not tokens become <0xNN> byte tokens when the
// vocabulary has them, else unk.
class SpmModel : public Model {
 public:
  // mergeable[i]: token i may be produced by a merge or stand for a single character.
  SpmModel(Vocab vocab, std::vector<float> scores, std::vector<bool> mergeable, int32_t unk_id);
  void tokenize(std::string_view word, std::vector<int32_t>& out) const override;
  const Vocab& vocab() const override { return vocab_; }

 private:
  std::optional<int32_t> lookup(std::string_view s) const {
    auto id = vocab_.find(s);
    if (!id || !mergeable_[*id]) return std::nullopt;
    return id;
  }
  Vocab vocab_;
  std::vector<float> scores_;
  std::vector<bool> mergeable_;
  int32_t unk_id_;
  int32_t byte_ids_[256];
  bool has_byte_tokens_ = false;
  WordCache cache_;
};

class WordPieceModel : public Model {
 public:
  WordPieceModel(Vocab vocab, std::string unk_token, std::string prefix, size_t max_chars);
  void tokenize(std::string_view word, std::vector<int32_t>& out) const override;
  const Vocab& vocab() const override { return vocab_; }

 private:
  Vocab vocab_;
  int32_t unk_id_;
  std::string prefix_;
  size_t max_chars_;
};

class WordLevelModel : public Model {
 public:
  WordLevelModel(Vocab vocab, std::string unk_token);
  void tokenize(std::string_view word, std::vector<int32_t>& out) const override;
  const Vocab& vocab() const override { return vocab_; }

 private:
  Vocab vocab_;
  int32_t unk_id_;
};

// Unigram (SentencePiece unigram LM): the segmentation with the highest total score (Viterbi),
// characters no piece covers scored as unk (min score - 10); unknown pieces fall back to bytes.
// Ties between equal sums are decided by the last bits of the scores, so scores must be exactly
// HF's (see serde_json_double).
class UnigramModel : public Model {
 public:
  UnigramModel(Vocab vocab, std::vector<double> scores, int32_t unk_id, bool byte_fallback);
  void tokenize(std::string_view word, std::vector<int32_t>& out) const override;
  const Vocab& vocab() const override { return vocab_; }

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> next;  // sorted by byte
    int32_t id = -1;
  };
  int32_t child(int32_t node, unsigned char b) const;
  Vocab vocab_;
  std::vector<double> scores_;
  int32_t unk_id_;
  bool byte_fallback_;
  double unk_score_ = 0;
  int32_t byte_ids_[256];
  std::vector<Node> trie_;
  WordCache cache_;
};

// The id of "<0xNN>" for every byte, or -1.
void find_byte_tokens(const Vocab& vocab, int32_t (&ids)[256]);

}  // namespace kiln::tok
