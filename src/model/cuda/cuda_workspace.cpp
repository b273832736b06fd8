// The CUDA workspace: every buffer of a pass, sized in one place.
#include "model/cuda/cuda_workspace.h"

#ifdef KILN_HAVE_CUDA

#include <algorithm>

namespace kiln::cudadev {

CudaWorkspace::Sizes CudaWorkspace::sizes(const WorkspaceShape& s, int64_t T, int64_t table, int64_t pen_cap) {
  Sizes z{};
  const auto n = [](int64_t v) { return static_cast<size_t>(v); };
  z.x = n(T * s.hidden) * 4;
  z.h = n(T * s.hidden) * 2;
  z.qkv = n(T * s.ld_qkv) * 2;
  z.att = n(T * s.q_width) * 2;
  z.mlp_in = n(T * (s.gated ? 2 * s.intermediate : s.intermediate)) * 4;
  z.act = n(T * s.intermediate) * 2;
  z.y = s.post_norms ? n(T * s.hidden) * 4 : 0;
  z.logits = n(std::min(s.max_logit_rows, T) * s.vocab) * 4;
  z.samp_out = n(T) * (2 + 2 * cuda::kMaxTopLogprobs) * 4;
  z.samp = n(T) * kSampleRowBytes + n(pen_cap) * (sizeof(SamplePenalty) + sizeof(float));
  // Split-K decode: small batches split up to about a wave of CTAs (4 SMs + 2 (sequence, split) pairs cover it),
  // large ones into the few splits that round their waves up (2 per sequence at batch 320); a plan that would need
  // more than this runs unsplit.
  const int64_t pairs = 4 * s.num_sms + 2 + 2 * std::min<int64_t>(T, 1024);
  z.decode_ws = n(s.num_heads) * n(pairs) * n(s.head_dim + 1) * sizeof(float);
  // Metadata: ids, positions, slots, logit rows, kv lengths and cu_q (at most 6 T + 1 ints), then block tables.
  z.meta = n(6 * T + 1 + table) * sizeof(int32_t);
  return z;
}

int64_t CudaWorkspace::device_bytes(const WorkspaceShape& shape, int64_t max_tokens) {
  return static_cast<int64_t>(sizes(shape, max_tokens, kInitialTableEntries, kInitialPenaltyEntries).total());
}

CudaWorkspace::CudaWorkspace(const void* owner, const WorkspaceShape& s, int64_t T) : owner_(owner), shape_(s) {
  KILN_CHECK(T > 0, "workspace: max_tokens must be positive, got {}", T);
  max_tokens_ = T;
  tokens = T;
  const Sizes z = sizes(s, T, 0, 0);
  x = DeviceMem(z.x);
  h = DeviceMem(z.h);
  qkv = DeviceMem(z.qkv);
  att = DeviceMem(z.att);
  mlp_in = DeviceMem(z.mlp_in);
  act = DeviceMem(z.act);
  y = DeviceMem(z.y);
  logit_rows = std::min(s.max_logit_rows, T);
  logits = DeviceMem(z.logits);
  samp_out = DeviceMem(z.samp_out);
  host_out = PinnedMem(z.samp_out);
  decode_ws = DeviceMem(z.decode_ws);
  grow_penalties(kInitialPenaltyEntries);
  grow_tables(kInitialTableEntries);
  bytes_ = device_bytes(s, T);
}

void CudaWorkspace::grow_tables(int64_t entries) {
  graphs.clear();  // they point at the old buffers
  const size_t n = sizes(shape_, tokens, entries, 0).meta;
  meta = DeviceMem();
  host_meta = PinnedMem();
  meta = DeviceMem(n);
  host_meta = PinnedMem(n);
  table = entries;
}

void CudaWorkspace::grow_penalties(int64_t entries) {
  if (entries <= pen_cap && samp.p) return;
  graphs.clear();
  const int64_t cap = std::max<int64_t>(entries, 2 * pen_cap);
  const size_t n = sizes(shape_, tokens, 0, cap).samp;
  samp = DeviceMem();
  host_samp = PinnedMem();
  samp = DeviceMem(n);
  host_samp = PinnedMem(n);
  pen_cap = cap;
}

}  // namespace kiln::cudadev

#endif  // KILN_HAVE_CUDA
