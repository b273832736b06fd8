// KvCacheManager: allocation, reference counts, prefix reuse (chained hashes, verified contents), LRU
// eviction, and the books balancing after every operation.
#include <gtest/gtest.h>

#include <numeric>
#include <random>

#include "kiln/error.h"
#include "runtime/kv_cache_manager.h"

namespace kiln {
namespace {

std::vector<int32_t> iota_tokens(int n, int start = 0) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), start);
  return v;
}

TEST(KvCacheManager, GrowAllocatesWholeBlocksAndRefusesWhenShort) {
  KvCacheManager kv({8, 4, true});
  KvHandle a = kv.open();
  EXPECT_EQ(kv.blocks_to_grow(a, 9), 3);
  EXPECT_TRUE(kv.grow(a, 9));
  EXPECT_EQ(kv.block_table(a).size(), 3u);
  EXPECT_TRUE(kv.grow(a, 12));  // still three blocks
  EXPECT_EQ(kv.num_free_blocks(), 5);
  KvHandle b = kv.open();
  EXPECT_FALSE(kv.grow(b, 24));  // six blocks wanted, five free: nothing changes
  EXPECT_EQ(kv.block_table(b).size(), 0u);
  EXPECT_EQ(kv.num_free_blocks(), 5);
  EXPECT_TRUE(kv.grow(b, 20));
  EXPECT_EQ(kv.num_free_blocks(), 0);
  kv.check_invariants();
  kv.close(a);
  kv.close(b);
  EXPECT_FALSE(a.valid());
  EXPECT_EQ(kv.num_free_blocks(), 8);
  EXPECT_EQ(kv.num_open_sequences(), 0);
  kv.check_invariants();
}

TEST(KvCacheManager, PrefixHitSharesFullBlocksAndLeavesTheLastToken) {
  KvCacheManager kv({16, 4, true});
  const std::vector<int32_t> prompt = iota_tokens(10);  // two full blocks and a partial one
  KvHandle a = kv.open();
  EXPECT_EQ(kv.attach_cached_prefix(a, prompt), 0);
  ASSERT_TRUE(kv.grow(a, 10));
  kv.commit(a, prompt, 10);
  EXPECT_EQ(kv.num_cached_blocks(), 2);

  KvHandle b = kv.open();
  EXPECT_EQ(kv.attach_cached_prefix(b, prompt), 8);
  EXPECT_EQ(kv.block_table(b)[0], kv.block_table(a)[0]);
  EXPECT_EQ(kv.block_table(b)[1], kv.block_table(a)[1]);
  ASSERT_TRUE(kv.grow(b, 10));
  EXPECT_NE(kv.block_table(b)[2], kv.block_table(a)[2]);
  kv.check_invariants();

  // A prompt of exactly two blocks reuses only the first: its last token must be computed.
  KvHandle c = kv.open();
  EXPECT_EQ(kv.attach_cached_prefix(c, std::span(prompt).first(8)), 4);
  // A prompt that differs inside the second block reuses the first only.
  std::vector<int32_t> other = prompt;
  other[6] = 99;
  KvHandle d = kv.open();
  EXPECT_EQ(kv.attach_cached_prefix(d, other), 4);
  kv.check_invariants();
  for (KvHandle* h : {&a, &b, &c, &d}) kv.close(*h);
  EXPECT_EQ(kv.num_free_blocks(), 16);
  EXPECT_EQ(kv.num_cached_blocks(), 2);  // still cached, unreferenced
  kv.check_invariants();
}

TEST(KvCacheManager, SameTokensAfterADifferentPrefixDoNotMatch) {
  KvCacheManager kv({16, 2, true});
  const std::vector<int32_t> x = {1, 2, 3, 4, 5};
  const std::vector<int32_t> y = {9, 9, 3, 4, 5};  // block 1 has the same tokens, the prefix differs
  KvHandle a = kv.open();
  ASSERT_TRUE(kv.grow(a, 5));
  kv.commit(a, x, 5);
  KvHandle b = kv.open();
  EXPECT_EQ(kv.attach_cached_prefix(b, y), 0);
  kv.close(a);
  kv.close(b);
  kv.check_invariants();
}

TEST(KvCacheManager, EvictsLeastRecentlyFreedAndDeepestBlocksFirst) {
  KvCacheManager kv({4, 2, true});
  const std::vector<int32_t> p = {1, 2, 3, 4, 5};  // two full blocks
  KvHandle a = kv.open();
  ASSERT_TRUE(kv.grow(a, 5));
  kv.commit(a, p, 5);
  const int32_t first = kv.block_table(a)[0];
  kv.close(a);
  EXPECT_EQ(kv.num_cached_blocks(), 2);
  // Two plain free blocks are used before any cached one is evicted.
  KvHandle b = kv.open();
  ASSERT_TRUE(kv.grow(b, 4));
  EXPECT_EQ(kv.evictions(), 0);
  // One more block: the deeper cached block (the second of the prefix) goes first.
  ASSERT_TRUE(kv.grow(b, 6));
  EXPECT_EQ(kv.evictions(), 1);
  KvHandle c = kv.open();
  EXPECT_EQ(kv.attach_cached_prefix(c, p), 2);
  EXPECT_EQ(kv.block_table(c)[0], first);
  kv.check_invariants();
  kv.close(b);
  kv.close(c);
  kv.check_invariants();
}

TEST(KvCacheManager, AnEvictedBlockEndsTheMatch) {
  KvCacheManager kv({3, 1, true});
  const std::vector<int32_t> p = {7, 8, 0};
  KvHandle a = kv.open();
  ASSERT_TRUE(kv.grow(a, 3));
  kv.commit(a, p, 2);
  kv.close(a);  // blocks [7], [7,8] cached; the partial third one free
  KvHandle b = kv.open();
  ASSERT_TRUE(kv.grow(b, 2));  // takes the free block, then evicts the deepest cached one ([7,8])
  kv.close(b);
  kv.check_invariants();
  KvHandle c = kv.open();
  EXPECT_EQ(kv.attach_cached_prefix(c, p), 1);
  kv.close(c);
  kv.check_invariants();
}

TEST(KvCacheManager, DuplicatePrefixesRegisterOnceAndChainsContinue) {
  // Two sequences compute the same prompt at once; the second one's blocks stay unregistered, but its
  // own later block still chains onto the registered prefix.
  KvCacheManager kv({16, 2, true});
  const std::vector<int32_t> p = {1, 2, 3, 4};
  std::vector<int32_t> q = {1, 2, 3, 4, 5, 6, 7};
  KvHandle a = kv.open(), b = kv.open();
  ASSERT_TRUE(kv.grow(a, 4));
  ASSERT_TRUE(kv.grow(b, 7));
  kv.commit(a, p, 4);
  kv.commit(b, q, 7);
  EXPECT_EQ(kv.num_cached_blocks(), 3);
  KvHandle c = kv.open();
  EXPECT_EQ(kv.attach_cached_prefix(c, q), 6);
  kv.close(a);
  kv.close(b);
  kv.close(c);
  kv.check_invariants();
}

TEST(KvCacheManager, WithoutPrefixCachingNothingIsShared) {
  KvCacheManager kv({8, 2, false});
  const std::vector<int32_t> p = iota_tokens(7);
  KvHandle a = kv.open();
  ASSERT_TRUE(kv.grow(a, 7));
  kv.commit(a, p, 7);
  KvHandle b = kv.open();
  EXPECT_EQ(kv.attach_cached_prefix(b, p), 0);
  EXPECT_EQ(kv.num_cached_blocks(), 0);
  kv.close(a);
  kv.close(b);
  kv.check_invariants();
}

TEST(KvCacheManager, ChainHashDependsOnParentAndEveryToken) {
  const std::vector<int32_t> t = {1, 2, 3};
  const uint64_t h = KvCacheManager::chain_hash(KvCacheManager::kRootHash, t);
  EXPECT_NE(h, KvCacheManager::chain_hash(h, t));
  EXPECT_NE(h, KvCacheManager::chain_hash(KvCacheManager::kRootHash, std::vector<int32_t>{1, 2, 4}));
  EXPECT_NE(h, KvCacheManager::chain_hash(KvCacheManager::kRootHash, std::vector<int32_t>{1, 2, 3, 0}));
  EXPECT_EQ(h, KvCacheManager::chain_hash(KvCacheManager::kRootHash, t));
}

TEST(KvCacheManager, RandomOperationsKeepTheBooks) {
  std::mt19937 rng(5);
  KvCacheManager kv({40, 3, true});
  struct S {
    KvHandle h;
    std::vector<int32_t> tokens;
    int64_t computed = 0;
  };
  std::vector<S> live;
  for (int it = 0; it < 5000; ++it) {
    const int op = static_cast<int>(rng() % 4);
    if (op == 0 || live.empty()) {
      S s;
      s.h = kv.open();
      const int n = 1 + static_cast<int>(rng() % 20);
      for (int i = 0; i < n; ++i) s.tokens.push_back(static_cast<int32_t>(rng() % 3));  // small alphabet: many hits
      s.computed = kv.attach_cached_prefix(s.h, s.tokens);
      EXPECT_LT(s.computed, static_cast<int64_t>(s.tokens.size()));
      live.push_back(std::move(s));
    } else if (op == 1) {
      S& s = live[rng() % live.size()];
      const int64_t want = std::min<int64_t>(static_cast<int64_t>(s.tokens.size()), s.computed + 1 + rng() % 5);
      if (kv.grow(s.h, want)) {
        s.computed = want;
        kv.commit(s.h, s.tokens, s.computed);
      }
      if (s.computed == static_cast<int64_t>(s.tokens.size())) s.tokens.push_back(static_cast<int32_t>(rng() % 3));
    } else {
      const size_t i = rng() % live.size();
      kv.close(live[i].h);
      live.erase(live.begin() + static_cast<ptrdiff_t>(i));
    }
    if (it % 97 == 0) kv.check_invariants();
  }
  for (S& s : live) kv.close(s.h);
  kv.check_invariants();
  EXPECT_EQ(kv.num_free_blocks(), 40);
}

}  // namespace
}  // namespace kiln
