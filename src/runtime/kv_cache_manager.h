// KvCacheManager: which block of the paged KV pool belongs to which sequence. Reference-counted blocks,
// per-sequence block tables behind opaque handles, and prefix reuse: a full block is registered under a
// hash chained over its tokens and every token before it, so a later sequence with the same prefix takes
// the block instead of recomputing it. Blocks nobody references stay cached until evicted, least recently
// freed first. Bookkeeping only: the K/V themselves live in a KvPool made by the model.
#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

namespace kiln {

// A sequence's place in the manager. Copyable; valid from open() to close().
struct KvHandle {
  int32_t index = -1;
  bool valid() const { return index >= 0; }
};

class KvCacheManager {
 public:
  struct Config {
    int64_t num_blocks = 0;
    int32_t block_size = 16;
    bool enable_prefix_caching = true;
  };

  explicit KvCacheManager(const Config& config);

  // A new sequence holding no blocks.
  KvHandle open();
  // Releases the sequence's blocks (registered ones stay cached, the sequence's last block first in line
  // for eviction) and invalidates the handle.
  void close(KvHandle& h);

  // On a sequence holding no blocks: takes the longest run of cached full blocks that prefixes `tokens`,
  // always leaving the last token to compute (its logits are needed). Returns the tokens now covered.
  int64_t attach_cached_prefix(KvHandle h, std::span<const int32_t> tokens);
  // Blocks that growing the sequence to num_tokens would take from the free pool.
  int64_t blocks_to_grow(KvHandle h, int64_t num_tokens) const;
  // Grows the sequence's table to cover num_tokens, evicting cached blocks as needed. Returns false, and
  // changes nothing, when too few blocks are free.
  bool grow(KvHandle h, int64_t num_tokens);
  // Tells the manager that tokens[0, num_computed) are now in the sequence's blocks: full blocks become
  // reusable by prefix. `tokens` is the sequence's whole token list (it may run past num_computed).
  void commit(KvHandle h, std::span<const int32_t> tokens, int64_t num_computed);

  std::span<const int32_t> block_table(KvHandle h) const;

  int64_t num_blocks() const { return static_cast<int64_t>(blocks_.size()); }
  int32_t block_size() const { return block_size_; }
  // Blocks no sequence references (cached ones included: they are evicted on demand).
  int64_t num_free_blocks() const { return static_cast<int64_t>(free_.size()) + lru_size_; }
  int64_t num_used_blocks() const { return num_blocks() - num_free_blocks(); }
  int64_t num_cached_blocks() const { return static_cast<int64_t>(by_hash_.size()); }
  int64_t num_open_sequences() const { return open_seqs_; }
  int64_t evictions() const { return evictions_; }

  // Recounts every reference and list from scratch; throws kiln::Error naming the first inconsistency.
  // For tests.
  void check_invariants() const;

  // The chained block hash: a 64-bit mix of the parent's hash and the block's tokens. Exposed for tests.
  static uint64_t chain_hash(uint64_t parent, std::span<const int32_t> tokens);
  static constexpr uint64_t kRootHash = 0x6b696c6e2d6b7621ull;

 private:
  struct Block {
    int32_t ref = 0;
    bool registered = false;  // in by_hash_ (its tokens are in block_tokens_)
    uint64_t hash = 0;
    // A registered block names its parent (the registered block of the tokens before it) by index and
    // generation, so a match proves the whole prefix equal without trusting the hash: a block's contents
    // never change while it is registered, and re-registering bumps its generation.
    int32_t parent = -1;
    uint32_t parent_gen = 0;
    uint32_t gen = 0;
    int32_t lru_prev = -1, lru_next = -1;
  };
  struct Seq {
    std::vector<int32_t> blocks;
    int64_t committed_blocks = 0;  // leading blocks already offered to the prefix cache
    uint64_t last_hash = kRootHash;
    int32_t last_canonical = -1;   // the registered block holding the same prefix as blocks[committed - 1]
    uint32_t last_canonical_gen = 0;
    bool open = false;
  };

  Seq& seq(KvHandle h);
  const Seq& seq(KvHandle h) const;
  int32_t take_free_block();
  void release(int32_t b);
  void lru_push_back(int32_t b);
  void lru_unlink(int32_t b);
  bool tokens_equal(int32_t b, std::span<const int32_t> tokens) const;

  int32_t block_size_;
  bool prefix_caching_;
  std::vector<Block> blocks_;
  std::vector<int32_t> block_tokens_;  // [num_blocks, block_size]: the tokens of registered blocks
  std::vector<int32_t> free_;          // unregistered free blocks, used first
  int32_t lru_head_ = -1, lru_tail_ = -1;  // registered blocks with ref 0, least recently freed first
  int64_t lru_size_ = 0;
  std::unordered_map<uint64_t, int32_t> by_hash_;
  std::vector<Seq> seqs_;
  std::vector<int32_t> free_seqs_;
  int64_t open_seqs_ = 0;
  int64_t evictions_ = 0;
};

}  // namespace kiln
