// BatchBuilder: the packing of a scheduled step.
#include "runtime/batch_builder.h"

#include "kiln/error.h"

namespace kiln {

BatchBuilder::BatchBuilder(int64_t max_tokens, int64_t max_seqs) {
  tokens_.reserve(static_cast<size_t>(max_tokens));
  positions_.reserve(static_cast<size_t>(max_tokens));
  slots_.reserve(static_cast<size_t>(max_tokens));
  seqs_.reserve(static_cast<size_t>(max_seqs));
  logit_rows_.reserve(static_cast<size_t>(max_seqs));
  logit_seqs_.reserve(static_cast<size_t>(max_seqs));
}

const ForwardBatch& BatchBuilder::build(const SchedulerOutput& out, const KvCacheManager& kv) {
  tokens_.clear();
  positions_.clear();
  slots_.clear();
  seqs_.clear();
  logit_rows_.clear();
  logit_seqs_.clear();
  const int64_t bs = kv.block_size();
  // Decodes (one row) first, whatever order the policy scheduled them in: the model runs them through its decode
  // attention (ForwardBatch::num_decodes); the order of sequences in a batch changes no row's result.
  int64_t num_decodes = 0;
  for (int pass = 0; pass < 2; ++pass)
    for (const ScheduledSeq& s : out.scheduled) {
      if ((s.num_tokens == 1) != (pass == 0)) continue;
      num_decodes += pass == 0;
      Sequence& seq = *s.seq;
      const std::span<const int32_t> table = kv.block_table(seq.kv);
      const int64_t start = seq.num_computed, end = start + s.num_tokens;
      KILN_ASSERT(s.num_tokens > 0 && end <= static_cast<int64_t>(seq.tokens.size()) &&
                  end <= static_cast<int64_t>(table.size()) * bs);
      const int64_t row0 = static_cast<int64_t>(tokens_.size());
      for (int64_t p = start; p < end; ++p) {
        tokens_.push_back(seq.tokens[p]);
        positions_.push_back(p);
        slots_.push_back(static_cast<int64_t>(table[p / bs]) * bs + p % bs);
      }
      seqs_.push_back({row0, s.num_tokens, end, table});
      if (end == static_cast<int64_t>(seq.tokens.size())) {
        logit_rows_.push_back(row0 + s.num_tokens - 1);
        logit_seqs_.push_back(&seq);
      }
    }
  batch_ = {tokens_, positions_, slots_, seqs_, logit_rows_, num_decodes};
  return batch_;
}

}  // namespace kiln
