// BatchBuilder: packs one scheduled step into the model's ForwardBatch (token ids, positions, KV slots,
// per-sequence ranges and block tables, logit rows), reusing its buffers from step to step.
#pragma once

#include <cstdint>
#include <vector>

#include "kiln/model.h"
#include "runtime/kv_cache_manager.h"
#include "runtime/scheduler.h"

namespace kiln {

class BatchBuilder {
 public:
  // Sized for steps of up to max_tokens rows and max_seqs sequences (larger ones still work, growing).
  BatchBuilder(int64_t max_tokens, int64_t max_seqs);

  // The batch of `out`, valid until the next call: the one-row sequences (decodes) first, then the others, each
  // group in scheduled order. A sequence needs logits when this step reaches its last known token; logit_seqs()
  // lists those sequences in logit-row order.
  const ForwardBatch& build(const SchedulerOutput& out, const KvCacheManager& kv);
  const std::vector<Sequence*>& logit_seqs() const { return logit_seqs_; }

 private:
  std::vector<int32_t> tokens_;
  std::vector<int64_t> positions_;
  std::vector<int64_t> slots_;
  std::vector<BatchSeq> seqs_;
  std::vector<int64_t> logit_rows_;
  std::vector<Sequence*> logit_seqs_;
  ForwardBatch batch_;
};

}  // namespace kiln
