// BPE (by merge rank and by score), WordPiece and WordLevel models. The merge loops keep a linked
// list of symbols and a heap of candidate pairs, so a word of n characters costs O(n log n).
#include "tokenizer/models.h"

#include <fmt/format.h>

#include <algorithm>
#include <functional>
#include <queue>

#include "kiln/error.h"
#include "tokenizer/unicode.h"

namespace kiln::tok {

Vocab::Vocab(std::vector<std::string> tokens, std::vector<bool> present)
    : tokens_(std::move(tokens)), present_(std::move(present)) {
  ids_.reserve(tokens_.size());
  for (size_t i = 0; i < tokens_.size(); ++i) {
    if (!present_.empty() && !present_[i]) continue;
    // The first id wins when a string appears twice.
    ids_.emplace(std::string_view(tokens_[i]), static_cast<int32_t>(i));
  }
}

void find_byte_tokens(const Vocab& vocab, int32_t (&ids)[256]) {
  for (int b = 0; b < 256; ++b) ids[b] = vocab.find_or(fmt::format("<0x{:02X}>", b), -1);
}

bool WordCache::get(std::string_view word, std::vector<int32_t>& out) const {
  if (word.size() > kMaxWordBytes) return false;
  auto& shard = shards_[std::hash<std::string_view>{}(word) % kShards];
  std::lock_guard<std::mutex> lock(shard.mu);
  auto it = shard.map.find(std::string(word));
  if (it == shard.map.end()) return false;
  out.insert(out.end(), it->second.begin(), it->second.end());
  return true;
}

void WordCache::put(std::string_view word, const std::vector<int32_t>& ids) const {
  if (word.size() > kMaxWordBytes) return;
  auto& shard = shards_[std::hash<std::string_view>{}(word) % kShards];
  std::lock_guard<std::mutex> lock(shard.mu);
  if (shard.map.size() >= kMaxEntriesPerShard) shard.map.clear();
  shard.map.emplace(std::string(word), ids);
}

namespace {

struct Symbol {
  int32_t id;
  int32_t prev, next;
  uint32_t begin, len;  // bytes of the word this symbol covers (len 0: merged away)
};

}  // namespace

// ---------------- BPE by rank ----------------

BpeModel::BpeModel(Vocab vocab, const std::vector<std::pair<std::string, std::string>>& merges, BpeOptions options)
    : vocab_(std::move(vocab)), opt_(std::move(options)) {
  if (opt_.unk_token) {
    auto id = vocab_.find(*opt_.unk_token);
    KILN_CHECK(id.has_value(), "BPE unk_token '{}' is not in the vocabulary", *opt_.unk_token);
    unk_id_ = *id;
  }
  find_byte_tokens(vocab_, byte_ids_);
  merges_.reserve(merges.size());
  const std::string& prefix = opt_.continuing_subword_prefix;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [a, b] = merges[rank];
    auto ia = vocab_.find(a), ib = vocab_.find(b);
    KILN_CHECK(ia && ib, "BPE merge '{} {}' (rank {}) uses a token that is not in the vocabulary", a, b, rank);
    std::string merged = a;
    if (!prefix.empty() && b.compare(0, prefix.size(), prefix) == 0) {
      merged.append(b, prefix.size());
    } else {
      merged += b;
    }
    auto im = vocab_.find(merged);
    KILN_CHECK(im.has_value(), "BPE merge '{} {}' (rank {}) makes '{}', which is not in the vocabulary", a, b, rank,
               merged);
    uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(*ia)) << 32) | static_cast<uint32_t>(*ib);
    merges_.emplace(key, std::make_pair(static_cast<int32_t>(rank), *im));  // the first rank wins
  }
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (opt_.ignore_merges) {
    if (auto id = vocab_.find(word)) {
      out.push_back(*id);
      return;
    }
  }
  if (cache_.get(word, out)) return;
  std::vector<int32_t> ids;
  merge_word(word, ids);
  cache_.put(word, ids);
  out.insert(out.end(), ids.begin(), ids.end());
}

void BpeModel::merge_word(std::string_view word, std::vector<int32_t>& out) const {
  std::vector<Symbol> syms;
  syms.reserve(word.size());
  bool last_unk = false;
  auto push = [&](int32_t id, size_t begin, size_t len) {
    int32_t idx = static_cast<int32_t>(syms.size());
    syms.push_back({id, idx - 1, -1, static_cast<uint32_t>(begin), static_cast<uint32_t>(len)});
    if (idx > 0) syms[idx - 1].next = idx;
  };
  std::string piece;
  size_t pos = 0;
  while (pos < word.size()) {
    size_t begin = pos;
    pos += utf8_len(static_cast<unsigned char>(word[pos]));
    if (pos > word.size()) pos = word.size();
    std::string_view ch = word.substr(begin, pos - begin);
    std::optional<int32_t> id;
    if (opt_.continuing_subword_prefix.empty() && opt_.end_of_word_suffix.empty()) {
      id = vocab_.find(ch);
    } else {
      piece.clear();
      if (begin > 0) piece += opt_.continuing_subword_prefix;
      piece += ch;
      if (pos == word.size()) piece += opt_.end_of_word_suffix;
      id = vocab_.find(piece);
    }
    if (id) {
      push(*id, begin, ch.size());
      last_unk = false;
      continue;
    }
    if (opt_.byte_fallback) {
      bool all = true;
      for (char c : ch) all = all && byte_ids_[static_cast<unsigned char>(c)] >= 0;
      if (all) {
        for (size_t i = 0; i < ch.size(); ++i) push(byte_ids_[static_cast<unsigned char>(ch[i])], begin + i, 1);
        last_unk = false;
        continue;
      }
    }
    if (unk_id_ >= 0) {
      if (opt_.fuse_unk && last_unk) {
        syms.back().len += static_cast<uint32_t>(ch.size());
      } else {
        push(unk_id_, begin, ch.size());
      }
      last_unk = true;
    }
    // Without an unk token the character is dropped, as HF does.
  }

  // Candidate merges: lowest rank first, then leftmost.
  struct Cand {
    int32_t rank, pos, new_id;
    bool operator<(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::vector<Cand> heap_storage;
  heap_storage.reserve(syms.size());
  std::priority_queue<Cand> heap(std::less<Cand>(), std::move(heap_storage));
  auto consider = [&](int32_t left) {
    if (left < 0) return;
    int32_t right = syms[left].next;
    if (right < 0) return;
    if (auto m = find_merge(syms[left].id, syms[right].id)) heap.push({m->first, left, m->second});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(syms.size()); ++i) consider(i);
  while (!heap.empty()) {
    Cand c = heap.top();
    heap.pop();
    Symbol& s = syms[c.pos];
    if (s.len == 0 || s.next < 0) continue;
    Symbol& r = syms[s.next];
    auto m = find_merge(s.id, r.id);
    if (!m || m->second != c.new_id) continue;
    s.id = c.new_id;
    s.len += r.len;
    r.len = 0;
    s.next = r.next;
    if (s.next >= 0) syms[s.next].prev = c.pos;
    consider(s.prev);
    consider(c.pos);
  }
  for (int32_t i = syms.empty() ? -1 : 0; i >= 0; i = syms[i].next) out.push_back(syms[i].id);
}

// ---------------- BPE by score (SentencePiece) ----------------

SpmModel::SpmModel(Vocab vocab, std::vector<float> scores, std::vector<bool> mergeable, int32_t unk_id)
    : vocab_(std::move(vocab)), scores_(std::move(scores)), mergeable_(std::move(mergeable)), unk_id_(unk_id) {
  KILN_CHECK(static_cast<int32_t>(scores_.size()) == vocab_.size() &&
                 static_cast<int32_t>(mergeable_.size()) == vocab_.size(),
             "SentencePiece vocabulary: {} tokens but {} scores", vocab_.size(), scores_.size());
  find_byte_tokens(vocab_, byte_ids_);
  has_byte_tokens_ = true;
  for (int b = 0; b < 256; ++b) has_byte_tokens_ = has_byte_tokens_ && byte_ids_[b] >= 0;
}

void SpmModel::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (cache_.get(word, out)) return;
  std::vector<Symbol> syms;
  syms.reserve(word.size());
  size_t pos = 0;
  while (pos < word.size()) {
    size_t begin = pos;
    pos += utf8_len(static_cast<unsigned char>(word[pos]));
    if (pos > word.size()) pos = word.size();
    int32_t idx = static_cast<int32_t>(syms.size());
    syms.push_back({-1, idx - 1, -1, static_cast<uint32_t>(begin), static_cast<uint32_t>(pos - begin)});
    if (idx > 0) syms[idx - 1].next = idx;
  }
  // Candidate merges: highest score first, then leftmost. size guards against stale entries.
  struct Cand {
    float score;
    int32_t left, right;
    uint32_t size;
    int32_t id;
    bool operator<(const Cand& o) const { return score != o.score ? score < o.score : left > o.left; }
  };
  std::priority_queue<Cand> heap;
  auto consider = [&](int32_t left) {
    if (left < 0) return;
    int32_t right = syms[left].next;
    if (right < 0) return;
    uint32_t size = syms[left].len + syms[right].len;
    if (auto id = lookup(word.substr(syms[left].begin, size))) heap.push({scores_[*id], left, right, size, *id});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(syms.size()); ++i) consider(i);
  while (!heap.empty()) {
    Cand c = heap.top();
    heap.pop();
    Symbol& l = syms[c.left];
    if (l.len == 0 || l.next != c.right) continue;
    Symbol& r = syms[c.right];
    if (l.len + r.len != c.size) continue;
    l.len += r.len;
    l.id = c.id;
    r.len = 0;
    l.next = r.next;
    if (l.next >= 0) syms[l.next].prev = c.left;
    consider(l.prev);
    consider(c.left);
  }
  std::vector<int32_t> ids;
  for (int32_t i = 0; i >= 0; i = syms[i].next) {
    const Symbol& s = syms[i];
    std::string_view text = word.substr(s.begin, s.len);
    if (s.id >= 0) {
      ids.push_back(s.id);
    } else if (auto id = lookup(text)) {
      ids.push_back(*id);
    } else if (has_byte_tokens_) {
      for (char ch : text) ids.push_back(byte_ids_[static_cast<unsigned char>(ch)]);
    } else if (unk_id_ >= 0) {
      ids.push_back(unk_id_);
    }
  }
  cache_.put(word, ids);
  out.insert(out.end(), ids.begin(), ids.end());
}

// ---------------- WordPiece ----------------

WordPieceModel::WordPieceModel(Vocab vocab, std::string unk_token, std::string prefix, size_t max_chars)
    : vocab_(std::move(vocab)), prefix_(std::move(prefix)), max_chars_(max_chars) {
  auto id = vocab_.find(unk_token);
  KILN_CHECK(id.has_value(), "WordPiece unk_token '{}' is not in the vocabulary", unk_token);
  unk_id_ = *id;
}

void WordPieceModel::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  size_t chars = 0;
  for (char c : word) chars += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  if (chars > max_chars_) {
    out.push_back(unk_id_);
    return;
  }
  std::vector<int32_t> ids;
  size_t start = 0;
  std::string candidate;
  while (start < word.size()) {
    size_t end = word.size();
    std::optional<int32_t> found;
    while (start < end) {
      candidate.clear();
      if (start > 0) candidate += prefix_;
      candidate.append(word.substr(start, end - start));
      if ((found = vocab_.find(candidate))) break;
      // Step back one whole character.
      do {
        --end;
      } while (end > start && (static_cast<unsigned char>(word[end]) & 0xC0) == 0x80);
    }
    if (!found) {
      out.push_back(unk_id_);
      return;
    }
    ids.push_back(*found);
    start = end;
  }
  out.insert(out.end(), ids.begin(), ids.end());
}

WordLevelModel::WordLevelModel(Vocab vocab, std::string unk_token) : vocab_(std::move(vocab)) {
  unk_id_ = vocab_.find_or(unk_token, -1);
}

void WordLevelModel::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (auto id = vocab_.find(word)) {
    out.push_back(*id);
  } else {
    KILN_CHECK(unk_id_ >= 0, "WordLevel: '{}' is not in the vocabulary and there is no unk_token", word);
    out.push_back(unk_id_);
  }
}

// ---------------- Unigram ----------------

UnigramModel::UnigramModel(Vocab vocab, std::vector<double> scores, int32_t unk_id, bool byte_fallback)
    : vocab_(std::move(vocab)), scores_(std::move(scores)), unk_id_(unk_id), byte_fallback_(byte_fallback) {
  KILN_CHECK(static_cast<int32_t>(scores_.size()) == vocab_.size(), "Unigram: {} pieces but {} scores", vocab_.size(),
             scores_.size());
  double min_score = 0;
  for (size_t i = 0; i < scores_.size(); ++i) min_score = i == 0 ? scores_[i] : std::min(min_score, scores_[i]);
  unk_score_ = min_score - 10.0;
  find_byte_tokens(vocab_, byte_ids_);
  trie_.emplace_back();
  for (int32_t id = 0; id < vocab_.size(); ++id) {
    const std::string* piece = vocab_.token(id);
    if (!piece || piece->empty()) continue;
    int32_t node = 0;
    for (char ch : *piece) {
      auto b = static_cast<unsigned char>(ch);
      int32_t c = child(node, b);
      if (c < 0) {
        c = static_cast<int32_t>(trie_.size());
        trie_.emplace_back();
        auto& next = trie_[node].next;
        next.insert(std::lower_bound(next.begin(), next.end(), std::make_pair(b, int32_t{-1})), {b, c});
      }
      node = c;
    }
    if (trie_[node].id < 0) trie_[node].id = id;
  }
}

int32_t UnigramModel::child(int32_t node, unsigned char b) const {
  const auto& next = trie_[node].next;
  auto it = std::lower_bound(next.begin(), next.end(), std::make_pair(b, int32_t{-1}));
  return it != next.end() && it->first == b ? it->second : -1;
}

void UnigramModel::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (cache_.get(word, out)) return;
  const size_t n = word.size();
  struct Best {
    double score = 0;
    int32_t start = -1;  // -1: not reached
    int32_t id = -1;
  };
  std::vector<Best> best(n + 1);
  best[0].start = 0;
  for (size_t pos = 0; pos < n;) {
    size_t char_len = std::min(utf8_len(static_cast<unsigned char>(word[pos])), n - pos);
    if (best[pos].start >= 0) {
      const double base = best[pos].score;
      bool single = false;
      int32_t node = 0;
      for (size_t i = pos; i < n; ++i) {
        node = child(node, static_cast<unsigned char>(word[i]));
        if (node < 0) break;
        int32_t id = trie_[node].id;
        if (id < 0) continue;
        size_t end = i + 1;
        double cand = base + scores_[id];
        if (best[end].start < 0 || cand > best[end].score) best[end] = {cand, static_cast<int32_t>(pos), id};
        if (end - pos == char_len) single = true;
      }
      if (!single) {
        size_t end = pos + char_len;
        double cand = base + unk_score_;
        if (best[end].start < 0 || cand > best[end].score) best[end] = {cand, static_cast<int32_t>(pos), unk_id_};
      }
    }
    pos += char_len;
  }
  // Back from the end; consecutive unknown pieces fuse into one.
  std::vector<std::pair<size_t, size_t>> pieces;
  std::vector<bool> unknown;
  for (size_t end = n; end > 0;) {
    const Best& b = best[end];
    size_t start = static_cast<size_t>(b.start);
    bool unk = b.id == unk_id_;
    if (unk && !unknown.empty() && unknown.back()) {
      pieces.back().first = start;
    } else {
      pieces.emplace_back(start, end);
      unknown.push_back(unk);
    }
    end = start;
  }
  std::vector<int32_t> ids;
  for (size_t i = pieces.size(); i-- > 0;) {
    std::string_view piece = word.substr(pieces[i].first, pieces[i].second - pieces[i].first);
    if (auto id = vocab_.find(piece)) {
      ids.push_back(*id);
      continue;
    }
    bool all = byte_fallback_;
    for (char c : piece) all = all && byte_ids_[static_cast<unsigned char>(c)] >= 0;
    if (all) {
      for (char c : piece) ids.push_back(byte_ids_[static_cast<unsigned char>(c)]);
    } else {
      KILN_CHECK(unk_id_ >= 0, "Unigram: '{}' is not in the vocabulary and there is no unk_id", piece);
      ids.push_back(unk_id_);
    }
  }
  cache_.put(word, ids);
  out.insert(out.end(), ids.begin(), ids.end());
}

}  // namespace kiln::tok
