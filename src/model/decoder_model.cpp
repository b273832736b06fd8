// DecoderModel: the contiguous KvState path over the paged forward, shared by every backend.
#include "model/decoder_model.h"

#include <algorithm>
#include <fstream>
#include <string>

#include "kiln/error.h"

namespace kiln {
namespace {

// A sequence's contiguous cache: a pool whose blocks it owns in order, and a workspace of its own.
class DecoderState final : public KvState {
 public:
  DecoderState(const DecoderModel* owner, std::unique_ptr<KvPool> pool, std::unique_ptr<Workspace> ws,
               int64_t capacity)
      : owner_(owner), pool_(std::move(pool)), ws_(std::move(ws)) {
    capacity_ = capacity;
    table_.resize(static_cast<size_t>(pool_->num_blocks()));
    for (size_t i = 0; i < table_.size(); ++i) table_[i] = static_cast<int32_t>(i);
  }
  const DecoderModel* owner() const { return owner_; }
  KvPool& pool() { return *pool_; }
  Workspace& ws() { return *ws_; }
  std::span<const int32_t> table(int64_t context) const {
    const int64_t bs = pool_->block_size();
    return std::span<const int32_t>(table_).first(static_cast<size_t>((context + bs - 1) / bs));
  }
  void set_length(int64_t n) { length_ = n; }

  std::vector<int64_t> positions, slots, logit_rows;
  std::vector<float> chunk_logits;

 private:
  const DecoderModel* owner_;
  std::unique_ptr<KvPool> pool_;
  std::unique_ptr<Workspace> ws_;
  std::vector<int32_t> table_;
};

}  // namespace

void KvState::truncate(int64_t n) {
  KILN_CHECK(n >= 0 && n <= length_, "KV state: cannot truncate to {} tokens, it holds {}", n, length_);
  length_ = n;
}

Model::Memory host_memory() {
  std::ifstream in("/proc/meminfo");
  std::string key, unit;
  int64_t kb = 0;
  Model::Memory m;
  while (in >> key >> kb >> unit) {
    if (key == "MemTotal:") m.total = kb * 1024;
    if (key == "MemAvailable:") m.free = kb * 1024;
  }
  return m;
}

std::unique_ptr<KvState> DecoderModel::new_state(int64_t capacity) const {
  KILN_CHECK(capacity > 0, "KV state capacity must be positive, got {}", capacity);
  const int32_t bs = state_block_size(capacity);
  auto pool = new_kv_pool((capacity + bs - 1) / bs, bs);
  auto ws = new_workspace(std::min(capacity, state_chunk_tokens(capacity)));
  return std::make_unique<DecoderState>(this, std::move(pool), std::move(ws), capacity);
}

void DecoderModel::forward(KvState& state, std::span<const int32_t> tokens, std::vector<float>& logits,
                           bool all_logits) const {
  auto* st = dynamic_cast<DecoderState*>(&state);
  KILN_CHECK(st != nullptr && st->owner() == this, "forward: the KV state was not made by this model's new_state");
  const int64_t total = static_cast<int64_t>(tokens.size());
  KILN_CHECK(total > 0, "forward: no tokens to run");
  const int64_t pos_start = st->length();
  KILN_CHECK(pos_start + total <= st->capacity(),
             "forward: {} new tokens after {} cached exceed the KV state capacity of {}", total, pos_start,
             st->capacity());
  KILN_CHECK(cfg_.position != PositionKind::Learned || pos_start + total <= cfg_.max_position_embeddings,
             "forward: position {} exceeds the model's {} learned positions", pos_start + total - 1,
             cfg_.max_position_embeddings);
  const int64_t V = cfg_.vocab_size;
  for (int64_t t = 0; t < total; ++t)
    KILN_CHECK(tokens[t] >= 0 && tokens[t] < V, "token id {} at position {} is outside the vocabulary [0, {})",
               tokens[t], t, V);
  logits.resize(static_cast<size_t>((all_logits ? total : 1) * V));
  // Chunks of at most the workspace's rows: each a prefill over the cached prefix (chunked prefill) of one
  // sequence whose block table is the identity.
  const int64_t chunk = st->ws().max_tokens();
  const int64_t bs = st->pool().block_size();
  for (int64_t done = 0; done < total; done += chunk) {
    const int64_t T = std::min(chunk, total - done);
    const int64_t pos0 = pos_start + done;
    st->positions.resize(static_cast<size_t>(T));
    st->slots.resize(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) {
      const int64_t p = pos0 + t;
      st->positions[t] = p;
      st->slots[t] = (p / bs) * bs + p % bs;  // the identity table: block p / bs
    }
    st->logit_rows.clear();
    const bool last = done + T == total;
    for (int64_t t = all_logits ? 0 : (last ? T - 1 : T); t < T; ++t) st->logit_rows.push_back(t);
    const int64_t ctx = pos0 + T;
    const BatchSeq seq{0, T, ctx, st->table(ctx)};
    ForwardBatch batch{tokens.subspan(static_cast<size_t>(done), static_cast<size_t>(T)),
                       st->positions,
                       st->slots,
                       {&seq, 1},
                       st->logit_rows,
                       T == 1 ? 1 : 0};
    forward_batch(st->pool(), st->ws(), batch, st->chunk_logits);
    std::copy(st->chunk_logits.begin(), st->chunk_logits.end(), logits.begin() + (all_logits ? done * V : 0));
  }
  st->set_length(pos_start + total);
}

}  // namespace kiln
