// KvCacheManager: block pool bookkeeping, prefix registration and lookup, LRU eviction.
#include "runtime/kv_cache_manager.h"

#include <algorithm>

#include "kiln/error.h"

namespace kiln {
namespace {

inline uint64_t mix64(uint64_t x) {
  // A bijective finalizer (xor-shift-multiply rounds) so that every input bit reaches every output bit.
  x ^= x >> 31;
  x *= 0x7fb5d329728ea185ull;
  x ^= x >> 27;
  x *= 0x81dadef4bc2dd44dull;
  x ^= x >> 33;
  return x;
}

}  // namespace

uint64_t KvCacheManager::chain_hash(uint64_t parent, std::span<const int32_t> tokens) {
  uint64_t h = mix64(parent ^ 0x9e3779b97f4a7c15ull);
  for (int32_t t : tokens) h = mix64(h + static_cast<uint32_t>(t) + 0x632be59bd9b4e019ull);
  return mix64(h ^ tokens.size());
}

KvCacheManager::KvCacheManager(const Config& c)
    : block_size_(c.block_size), prefix_caching_(c.enable_prefix_caching) {
  KILN_CHECK(c.block_size > 0, "KV cache: block size must be positive, got {}", c.block_size);
  KILN_CHECK(c.num_blocks > 0 && c.num_blocks < INT32_MAX, "KV cache: {} blocks is out of range", c.num_blocks);
  blocks_.resize(static_cast<size_t>(c.num_blocks));
  if (prefix_caching_) block_tokens_.resize(static_cast<size_t>(c.num_blocks * c.block_size));
  free_.reserve(blocks_.size());
  for (int64_t b = c.num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

KvCacheManager::Seq& KvCacheManager::seq(KvHandle h) {
  KILN_ASSERT(h.valid() && h.index < static_cast<int32_t>(seqs_.size()) && seqs_[h.index].open);
  return seqs_[h.index];
}

const KvCacheManager::Seq& KvCacheManager::seq(KvHandle h) const {
  KILN_ASSERT(h.valid() && h.index < static_cast<int32_t>(seqs_.size()) && seqs_[h.index].open);
  return seqs_[h.index];
}

KvHandle KvCacheManager::open() {
  KvHandle h;
  if (!free_seqs_.empty()) {
    h.index = free_seqs_.back();
    free_seqs_.pop_back();
  } else {
    h.index = static_cast<int32_t>(seqs_.size());
    seqs_.emplace_back();
  }
  Seq& s = seqs_[h.index];
  s.blocks.clear();
  s.committed_blocks = 0;
  s.last_hash = kRootHash;
  s.last_canonical = -1;
  s.last_canonical_gen = 0;
  s.open = true;
  ++open_seqs_;
  return h;
}

void KvCacheManager::close(KvHandle& h) {
  Seq& s = seq(h);
  // The last block first: blocks deep in a prefix are the least likely to be shared, so they go first.
  for (auto it = s.blocks.rbegin(); it != s.blocks.rend(); ++it) release(*it);
  s.blocks.clear();
  s.open = false;
  free_seqs_.push_back(h.index);
  --open_seqs_;
  h.index = -1;
}

bool KvCacheManager::tokens_equal(int32_t b, std::span<const int32_t> tokens) const {
  const int32_t* stored = block_tokens_.data() + static_cast<size_t>(b) * block_size_;
  return std::equal(tokens.begin(), tokens.end(), stored);
}

int64_t KvCacheManager::attach_cached_prefix(KvHandle h, std::span<const int32_t> tokens) {
  Seq& s = seq(h);
  KILN_ASSERT(s.blocks.empty());
  if (!prefix_caching_ || tokens.empty()) return 0;
  const int64_t max_blocks = (static_cast<int64_t>(tokens.size()) - 1) / block_size_;
  uint64_t hash = kRootHash;
  int32_t canon = -1;
  uint32_t canon_gen = 0;
  for (int64_t i = 0; i < max_blocks; ++i) {
    const std::span<const int32_t> blk = tokens.subspan(static_cast<size_t>(i * block_size_), block_size_);
    const uint64_t next = chain_hash(hash, blk);
    auto it = by_hash_.find(next);
    if (it == by_hash_.end()) break;
    const int32_t b = it->second;
    Block& B = blocks_[b];
    if (B.parent != canon || (canon >= 0 && B.parent_gen != canon_gen) || !tokens_equal(b, blk)) break;
    if (B.ref == 0) lru_unlink(b);
    ++B.ref;
    s.blocks.push_back(b);
    hash = next;
    canon = b;
    canon_gen = B.gen;
  }
  s.committed_blocks = static_cast<int64_t>(s.blocks.size());
  s.last_hash = hash;
  s.last_canonical = canon;
  s.last_canonical_gen = canon_gen;
  return s.committed_blocks * block_size_;
}

int64_t KvCacheManager::blocks_to_grow(KvHandle h, int64_t num_tokens) const {
  const Seq& s = seq(h);
  const int64_t want = (num_tokens + block_size_ - 1) / block_size_;
  return std::max<int64_t>(0, want - static_cast<int64_t>(s.blocks.size()));
}

bool KvCacheManager::grow(KvHandle h, int64_t num_tokens) {
  const int64_t need = blocks_to_grow(h, num_tokens);
  if (need == 0) return true;
  if (need > num_free_blocks()) return false;
  Seq& s = seq(h);
  for (int64_t i = 0; i < need; ++i) {
    const int32_t b = take_free_block();
    blocks_[b].ref = 1;
    s.blocks.push_back(b);
  }
  return true;
}

void KvCacheManager::commit(KvHandle h, std::span<const int32_t> tokens, int64_t num_computed) {
  Seq& s = seq(h);
  KILN_ASSERT(num_computed <= static_cast<int64_t>(tokens.size()) &&
              num_computed <= static_cast<int64_t>(s.blocks.size()) * block_size_);
  if (!prefix_caching_) return;
  const int64_t full = num_computed / block_size_;
  for (int64_t i = s.committed_blocks; i < full; ++i) {
    const std::span<const int32_t> blk = tokens.subspan(static_cast<size_t>(i * block_size_), block_size_);
    const uint64_t hash = chain_hash(s.last_hash, blk);
    const int32_t b = s.blocks[i];
    int32_t canon = -2;  // -2: the chain is broken (a hash collision); nothing after it is registered
    if (s.last_canonical != -2) {
      auto it = by_hash_.find(hash);
      if (it == by_hash_.end()) {
        Block& B = blocks_[b];
        KILN_ASSERT(!B.registered);
        B.registered = true;
        B.hash = hash;
        B.parent = s.last_canonical;
        B.parent_gen = s.last_canonical_gen;
        ++B.gen;
        std::copy(blk.begin(), blk.end(), block_tokens_.begin() + static_cast<ptrdiff_t>(b) * block_size_);
        by_hash_.emplace(hash, b);
        canon = b;
      } else {
        // The same prefix may already be registered under another block (two sequences computed it at
        // once): that block stands for it, and this one stays unregistered.
        const Block& C = blocks_[it->second];
        if (C.parent == s.last_canonical && (s.last_canonical < 0 || C.parent_gen == s.last_canonical_gen) &&
            tokens_equal(it->second, blk))
          canon = it->second;
      }
    }
    s.last_hash = hash;
    s.last_canonical = canon;
    s.last_canonical_gen = canon >= 0 ? blocks_[canon].gen : 0;
    s.committed_blocks = i + 1;
  }
}

std::span<const int32_t> KvCacheManager::block_table(KvHandle h) const { return seq(h).blocks; }

int32_t KvCacheManager::take_free_block() {
  if (!free_.empty()) {
    const int32_t b = free_.back();
    free_.pop_back();
    return b;
  }
  const int32_t b = lru_head_;
  KILN_ASSERT(b >= 0);
  lru_unlink(b);
  Block& B = blocks_[b];
  by_hash_.erase(B.hash);
  B.registered = false;
  ++evictions_;
  return b;
}

void KvCacheManager::release(int32_t b) {
  Block& B = blocks_[b];
  KILN_ASSERT(B.ref > 0);
  if (--B.ref > 0) return;
  if (B.registered) {
    lru_push_back(b);
  } else {
    free_.push_back(b);
  }
}

void KvCacheManager::lru_push_back(int32_t b) {
  Block& B = blocks_[b];
  B.lru_prev = lru_tail_;
  B.lru_next = -1;
  if (lru_tail_ >= 0) {
    blocks_[lru_tail_].lru_next = b;
  } else {
    lru_head_ = b;
  }
  lru_tail_ = b;
  ++lru_size_;
}

void KvCacheManager::lru_unlink(int32_t b) {
  Block& B = blocks_[b];
  if (B.lru_prev >= 0) {
    blocks_[B.lru_prev].lru_next = B.lru_next;
  } else {
    lru_head_ = B.lru_next;
  }
  if (B.lru_next >= 0) {
    blocks_[B.lru_next].lru_prev = B.lru_prev;
  } else {
    lru_tail_ = B.lru_prev;
  }
  B.lru_prev = B.lru_next = -1;
  --lru_size_;
}

void KvCacheManager::check_invariants() const {
  std::vector<int32_t> refs(blocks_.size(), 0);
  int64_t open = 0;
  for (const Seq& s : seqs_) {
    if (!s.open) continue;
    ++open;
    for (int32_t b : s.blocks) ++refs[b];
  }
  KILN_CHECK(open == open_seqs_, "KV cache: {} open sequences counted, {} recorded", open, open_seqs_);
  std::vector<uint8_t> listed(blocks_.size(), 0);
  for (int32_t b : free_) {
    KILN_CHECK(!listed[b]++, "KV cache: block {} is listed free twice", b);
    KILN_CHECK(!blocks_[b].registered, "KV cache: free block {} is registered", b);
  }
  int64_t lru = 0;
  for (int32_t b = lru_head_, prev = -1; b >= 0; prev = b, b = blocks_[b].lru_next) {
    KILN_CHECK(blocks_[b].lru_prev == prev, "KV cache: LRU links broken at block {}", b);
    KILN_CHECK(!listed[b]++, "KV cache: block {} is both free and cached, or cached twice", b);
    KILN_CHECK(blocks_[b].registered, "KV cache: LRU block {} is not registered", b);
    ++lru;
  }
  KILN_CHECK(lru == lru_size_, "KV cache: LRU holds {} blocks, {} recorded", lru, lru_size_);
  for (size_t b = 0; b < blocks_.size(); ++b) {
    KILN_CHECK(blocks_[b].ref == refs[b], "KV cache: block {} has {} references, {} counted", b, blocks_[b].ref,
               refs[b]);
    KILN_CHECK((refs[b] > 0) != (listed[b] != 0), "KV cache: block {} is {} yet {}", b,
               refs[b] > 0 ? "referenced" : "unreferenced", listed[b] ? "listed free" : "not listed free");
  }
  for (const auto& [hash, b] : by_hash_)
    KILN_CHECK(blocks_[b].registered && blocks_[b].hash == hash, "KV cache: hash entry of block {} is stale", b);
  int64_t registered = 0;
  for (const Block& B : blocks_) registered += B.registered;
  KILN_CHECK(registered == static_cast<int64_t>(by_hash_.size()), "KV cache: {} registered blocks, {} hash entries",
             registered, by_hash_.size());
}

}  // namespace kiln
