// The step's metadata upload: the batch's logical blocks become physical ones here (KvLayout::physical).
#include "model/cuda/step_meta.h"

#ifdef KILN_HAVE_CUDA

#include <algorithm>

namespace kiln::cudadev {

int64_t pow2_at_least(int64_t n) {
  int64_t p = 1;
  while (p < n) p <<= 1;
  return p;
}

StepMeta upload_meta(CudaWorkspace& ws, const KvLayout& kv, const ForwardBatch& b, int64_t pad_to, int64_t width,
                     cudaStream_t stream) {
  StepMeta m;
  const int64_t T0 = static_cast<int64_t>(b.tokens.size());
  const int64_t ns0 = static_cast<int64_t>(b.seqs.size());
  const int64_t bs = kv.block_size;
  KILN_CHECK(T0 <= ws.tokens && pad_to <= ws.tokens, "forward: {} rows exceed the workspace's {}",
             std::max(T0, pad_to), ws.tokens);
  const bool pad = pad_to > 0;
  KILN_ASSERT(!pad || (b.num_decodes == ns0 && T0 == ns0 && static_cast<int64_t>(b.logit_rows.size()) == T0 &&
                       pad_to >= T0));
  const int64_t T = pad ? pad_to : T0, ns = pad ? pad_to : ns0,
                R = pad ? pad_to : static_cast<int64_t>(b.logit_rows.size());
  const int64_t nd = pad ? ns : b.num_decodes;
  const int64_t np = ns - nd;
  int64_t mb = 1, max_q = 0, max_kv_decode = 0;
  for (int64_t i = 0; i < ns0; ++i) {
    const BatchSeq& s = b.seqs[i];
    mb = std::max(mb, (s.context_len + bs - 1) / bs);
    if (i < nd)
      max_kv_decode = std::max(max_kv_decode, s.context_len);
    else
      max_q = std::max(max_q, s.query_len);
  }
  if (pad) mb = std::max(mb, width);
  if (max_kv_decode > 0) max_kv_decode = std::max<int64_t>(8, pow2_at_least((max_kv_decode + bs - 1) / bs)) * bs;
  if (pad) max_kv_decode = width * bs;
  if (ns * mb > ws.table) ws.grow_tables(ns * mb);

  int32_t* hm = ws.host_meta.as<int32_t>();
  int32_t* h_ids = hm;
  int32_t* h_pos = h_ids + T;
  int32_t* h_slots = h_pos + T;
  int32_t* h_rows = h_slots + T;
  int32_t* h_lens = h_rows + R;
  int32_t* h_cu = h_lens + ns;
  int32_t* h_tab = h_cu + np + 1;
  for (int64_t t = 0; t < T0; ++t) {
    h_ids[t] = b.tokens[t];
    h_pos[t] = static_cast<int32_t>(b.positions[t]);
    const int64_t slot = b.slots[t];
    h_slots[t] = static_cast<int32_t>(slot < 0 ? slot : kv.physical(slot / bs) * bs + slot % bs);
  }
  for (int64_t t = T0; t < T; ++t) h_ids[t] = 0, h_pos[t] = 0, h_slots[t] = -1;
  for (int64_t r = 0; r < R; ++r) h_rows[r] = static_cast<int32_t>(pad ? r : b.logit_rows[r]);
  const int64_t row0_p = np > 0 ? b.seqs[nd].query_start : 0;
  h_cu[0] = 0;
  for (int64_t i = 0; i < ns0; ++i) {
    const BatchSeq& s = b.seqs[i];
    h_lens[i] = static_cast<int32_t>(s.context_len);
    if (i >= nd) h_cu[i - nd + 1] = static_cast<int32_t>(s.query_start + s.query_len - row0_p);
    const int64_t n = (s.context_len + bs - 1) / bs;
    int32_t* row = h_tab + i * mb;
    for (int64_t j = 0; j < n; ++j) row[j] = static_cast<int32_t>(kv.physical(s.block_table[j]));
    std::fill(row + n, row + mb, 0);
  }
  for (int64_t i = ns0; i < ns; ++i) {
    h_lens[i] = 1;
    std::fill(h_tab + i * mb, h_tab + (i + 1) * mb, 0);
  }
  const int64_t ints = (h_tab + ns * mb) - hm;
  KILN_MODEL_CUDA(
      cudaMemcpyAsync(ws.meta.p, hm, static_cast<size_t>(ints) * sizeof(int32_t), cudaMemcpyHostToDevice, stream));
  m.T = T, m.R = R, m.ns = ns, m.nd = nd, m.np = np, m.mb = mb, m.row0_p = row0_p, m.max_q = max_q;
  m.max_kv_decode = max_kv_decode;
  m.ids = ws.meta.as<int32_t>();
  m.pos = m.ids + T;
  m.slots = m.pos + T;
  m.rows = m.slots + T;
  m.lens = m.rows + R;
  m.cu = m.lens + ns;
  m.tab = m.cu + np + 1;
  return m;
}

}  // namespace kiln::cudadev

#endif  // KILN_HAVE_CUDA
