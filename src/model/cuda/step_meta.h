// One step's batch metadata on the device: ids, positions, physical KV slots, logit rows, context lengths, prefill
// query offsets and block tables, uploaded in one copy from pinned memory, with the sizes the kernels are planned for.
#pragma once

#ifdef KILN_HAVE_CUDA

#include <cuda_runtime.h>

#include <cstdint>

#include "kiln/model.h"
#include "model/cuda/cuda_workspace.h"
#include "model/cuda/kv_storage.h"

namespace kiln::cudadev {

struct StepMeta {
  int64_t T = 0;       // rows (padded rows included)
  int64_t R = 0;       // logit rows
  int64_t ns = 0;      // sequences
  int64_t nd = 0;      // decodes: the first nd sequences, one row each (ForwardBatch::num_decodes)
  int64_t np = 0;      // prefills: the rest
  int64_t mb = 1;      // block-table width (entries per sequence)
  int64_t row0_p = 0;  // the first prefill row
  int64_t max_q = 0;   // the longest prefill chunk
  int64_t max_kv_decode = 0;  // the context decode attention is planned for
  const int32_t *ids = nullptr, *pos = nullptr, *slots = nullptr, *rows = nullptr, *lens = nullptr, *cu = nullptr,
                *tab = nullptr;
};

// Uploads the metadata of a checked batch on `stream`. Decode attention is planned for a context of a power of two
// blocks (at least 8), so a plan only changes when the longest context doubles and a graph's plan stays valid.
// pad_to > 0 (pure-decode batches only) pads the batch with harmless rows to pad_to sequences (id 0, no KV write,
// one valid block) and gives the tables `width` entries, for a CUDA graph whose pointers and sizes are fixed.
StepMeta upload_meta(CudaWorkspace& ws, const KvLayout& kv, const ForwardBatch& b, int64_t pad_to, int64_t width,
                     cudaStream_t stream);

int64_t pow2_at_least(int64_t n);

}  // namespace kiln::cudadev

#endif  // KILN_HAVE_CUDA
