// The paged forward: several sequences packed into one batch, their K/V in scattered blocks, prefilled in
// chunks of odd sizes, give bitwise the logits of one contiguous forward per sequence, on every fixture
// (GQA, MQA, sliding windows, biases, qk-norm) and the llama2.c model; matmul rows are independent of T.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <random>

#include "kernels/cpu/ops.h"
#include "kiln/error.h"
#include "kiln/model.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> model_paths() {
  std::vector<std::string> paths;
  const fs::path fixtures = fs::path(KILN_SOURCE_DIR) / "tests" / "fixtures" / "models";
  for (const auto& e : fs::directory_iterator(fixtures))
    if (fs::exists(e.path() / "config.json")) paths.push_back(e.path().string());
  std::sort(paths.begin(), paths.end());
  paths.push_back(std::string(KILN_SOURCE_DIR) + "/tests/fixtures/llama2c/stories260K/stories260K.bin");
  return paths;
}

TEST(PagedForward, MatmulRowsDoNotDependOnBatchSize) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  for (bool simd : {true, false}) {
    cpu::set_simd(simd);
    for (int64_t K : {1, 7, 8, 13, 64, 172}) {
      for (int64_t O : {1, 5, 37}) {
        std::vector<float> x(static_cast<size_t>(70 * K)), w(static_cast<size_t>(O * K)), bias(static_cast<size_t>(O));
        for (float& v : x) v = nd(rng);
        for (float& v : w) v = nd(rng);
        for (float& v : bias) v = nd(rng);
        std::vector<float> all(static_cast<size_t>(70 * O)), one(static_cast<size_t>(O));
        cpu::matmul(x.data(), 70, K, w.data(), O, bias.data(), all.data());
        for (int64_t t = 0; t < 70; ++t) {
          cpu::matmul(x.data() + t * K, 1, K, w.data(), O, bias.data(), one.data());
          ASSERT_EQ(std::memcmp(one.data(), all.data() + t * O, sizeof(float) * O), 0)
              << "simd " << simd << " K " << K << " O " << O << " row " << t;
        }
      }
    }
  }
  cpu::set_simd(true);
}

struct Seq {
  std::vector<int32_t> tokens;
  std::vector<int32_t> table;
  int64_t done = 0;
};

// Prefills `seqs` together in chunks of at most `chunk` tokens each per step, with every row's logits.
// Returns the logits of each sequence, [len, vocab].
std::vector<std::vector<float>> run_paged(const Model& m, std::vector<Seq>& seqs, int32_t block_size, int64_t chunk,
                                          std::mt19937& rng) {
  const int64_t V = m.config().vocab_size;
  int64_t blocks = 0;
  for (Seq& s : seqs) blocks += (static_cast<int64_t>(s.tokens.size()) + block_size - 1) / block_size;
  blocks += 3;  // some never used
  std::vector<int32_t> ids(static_cast<size_t>(blocks));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  size_t next = 0;
  for (Seq& s : seqs) {
    s.table.clear();
    s.done = 0;
    for (int64_t i = 0; i < (static_cast<int64_t>(s.tokens.size()) + block_size - 1) / block_size; ++i)
      s.table.push_back(ids[next++]);
  }
  auto pool = m.new_kv_pool(blocks, block_size);
  auto ws = m.new_workspace(64 * static_cast<int64_t>(seqs.size()));
  std::vector<std::vector<float>> out(seqs.size());
  std::vector<float> logits;
  for (;;) {
    std::vector<int32_t> tokens;
    std::vector<int64_t> positions, slots, rows;
    std::vector<BatchSeq> bs;
    std::vector<size_t> which;
    for (size_t i = 0; i < seqs.size(); ++i) {
      Seq& s = seqs[i];
      const int64_t left = static_cast<int64_t>(s.tokens.size()) - s.done;
      if (left == 0) continue;
      const int64_t n = std::min<int64_t>(left, 1 + static_cast<int64_t>(rng() % chunk));
      const int64_t row0 = static_cast<int64_t>(tokens.size());
      for (int64_t p = s.done; p < s.done + n; ++p) {
        tokens.push_back(s.tokens[p]);
        positions.push_back(p);
        slots.push_back(static_cast<int64_t>(s.table[p / block_size]) * block_size + p % block_size);
        rows.push_back(static_cast<int64_t>(rows.size()));
      }
      bs.push_back({row0, n, s.done + n, s.table});
      which.push_back(i);
      s.done += n;
    }
    if (tokens.empty()) break;
    m.forward_batch(*pool, *ws, {tokens, positions, slots, bs, rows}, logits);
    EXPECT_EQ(logits.size(), tokens.size() * static_cast<size_t>(V));
    for (size_t k = 0; k < bs.size(); ++k)
      out[which[k]].insert(out[which[k]].end(), logits.begin() + bs[k].query_start * V,
                           logits.begin() + (bs[k].query_start + bs[k].query_len) * V);
  }
  return out;
}

TEST(PagedForward, PackedChunkedPagedEqualsContiguousBitwise) {
  for (const std::string& path : model_paths()) {
    SCOPED_TRACE(path);
    auto m = Model::load(path);
    const int64_t V = m->config().vocab_size;
    std::mt19937 rng(17);
    std::vector<Seq> seqs(4);
    const int lens[4] = {1, 9, 23, 40};
    for (size_t i = 0; i < seqs.size(); ++i)
      for (int t = 0; t < lens[i]; ++t) seqs[i].tokens.push_back(static_cast<int32_t>(rng() % V));
    std::vector<std::vector<float>> ref(seqs.size());
    for (size_t i = 0; i < seqs.size(); ++i) {
      auto st = m->new_state(static_cast<int64_t>(seqs[i].tokens.size()));
      m->forward(*st, seqs[i].tokens, ref[i], /*all_logits=*/true);
    }
    for (int32_t block_size : {1, 3, 16}) {
      for (int64_t chunk : {1, 5, 64}) {
        const auto got = run_paged(*m, seqs, block_size, chunk, rng);
        for (size_t i = 0; i < seqs.size(); ++i) {
          ASSERT_EQ(got[i].size(), ref[i].size());
          EXPECT_EQ(std::memcmp(got[i].data(), ref[i].data(), ref[i].size() * sizeof(float)), 0)
              << "sequence " << i << " block size " << block_size << " chunk " << chunk;
        }
      }
    }
  }
}

TEST(PagedForward, MalformedBatchesAreRefused) {
  auto m = Model::load(std::string(KILN_SOURCE_DIR) + "/tests/fixtures/llama2c/stories260K/stories260K.bin");
  auto pool = m->new_kv_pool(4, 4);
  auto ws = m->new_workspace(16);
  std::vector<float> logits;
  const std::vector<int32_t> tokens = {1, 2};
  const std::vector<int64_t> positions = {0, 1}, slots = {0, 1}, rows = {1};
  const std::vector<int32_t> table = {0};
  const BatchSeq ok{0, 2, 2, table};
  EXPECT_NO_THROW(m->forward_batch(*pool, *ws, {tokens, positions, slots, {&ok, 1}, rows}, logits));
  EXPECT_EQ(logits.size(), 512u);
  const std::vector<int32_t> far = {9};
  const BatchSeq bad_block{0, 2, 2, far};
  EXPECT_THROW(m->forward_batch(*pool, *ws, {tokens, positions, slots, {&bad_block, 1}, rows}, logits), Error);
  const std::vector<int64_t> bad_slots = {0, 2};
  EXPECT_THROW(m->forward_batch(*pool, *ws, {tokens, positions, bad_slots, {&ok, 1}, rows}, logits), Error);
  const std::vector<int32_t> bad_ids = {1, 512};
  EXPECT_THROW(m->forward_batch(*pool, *ws, {bad_ids, positions, slots, {&ok, 1}, rows}, logits), Error);
  auto other = Model::load(std::string(KILN_SOURCE_DIR) + "/tests/fixtures/llama2c/stories260K/stories260K.bin");
  EXPECT_THROW(other->forward_batch(*pool, *ws, {tokens, positions, slots, {&ok, 1}, rows}, logits), Error);
  auto other_ws = other->new_workspace(16);
  EXPECT_THROW(m->forward_batch(*pool, *other_ws, {tokens, positions, slots, {&ok, 1}, rows}, logits), Error);
  // A two-row sequence claimed as a decode, and more rows than the workspace holds.
  EXPECT_THROW(m->forward_batch(*pool, *ws, {tokens, positions, slots, {&ok, 1}, rows, 1}, logits), Error);
  auto small_ws = m->new_workspace(1);
  EXPECT_THROW(m->forward_batch(*pool, *small_ws, {tokens, positions, slots, {&ok, 1}, rows}, logits), Error);
}

}  // namespace
}  // namespace kiln
