// The CUDA backend's workspace: the activation buffers of one pass of up to max_tokens rows, the step's metadata
// and sampling staging (device and pinned host), the split-K decode scratch, and the CUDA graphs captured over them.
#pragma once

#ifdef KILN_HAVE_CUDA

#include <cuda_runtime.h>

#include <map>
#include <memory>
#include <tuple>

#include "kernels/cuda/cuda_ops.h"
#include "kiln/model.h"
#include "model/cuda/device_memory.h"

namespace kiln::cudadev {

// Block-table entries the metadata buffers are first made with (4 MiB each on the device and pinned host); a batch
// whose tables outgrow them (hundreds of sequences at a 128K context) makes them again, once.
inline constexpr int64_t kInitialTableEntries = int64_t{1} << 20;
// Penalty entries the sampling buffers are first made with (doubled as needed).
inline constexpr int64_t kInitialPenaltyEntries = 4096;

// A captured CUDA graph of one pure-decode bucket, ready to replay.
struct GraphExec {
  cudaGraphExec_t exec = nullptr;
  int64_t uses = 0;
  GraphExec() = default;
  GraphExec(const GraphExec&) = delete;
  GraphExec& operator=(const GraphExec&) = delete;
  ~GraphExec() {
    if (exec) cudaGraphExecDestroy(exec);
  }
};

// What sizes a workspace: the model's shapes and the pass's rows.
struct WorkspaceShape {
  int64_t hidden = 0, intermediate = 0, ld_qkv = 0, q_width = 0, vocab = 0, num_heads = 0, head_dim = 0;
  bool gated = true, post_norms = false;
  int64_t max_logit_rows = 512;  // fp32 logit rows computed per lm_head GEMM
  int num_sms = 0;
};

class CudaWorkspace final : public Workspace {
 public:
  CudaWorkspace(const void* owner, const WorkspaceShape& shape, int64_t max_tokens);
  // Device bytes a workspace of these sizes takes (what the constructor allocates on the device).
  static int64_t device_bytes(const WorkspaceShape& shape, int64_t max_tokens);
  const void* owner() const { return owner_; }

  // Room for `table` block-table entries (drops the graphs, which point at the old buffers).
  void grow_tables(int64_t table);
  // Room for `entries` penalty entries after the per-row sampling rows (doubling; drops the graphs).
  void grow_penalties(int64_t entries);

  int64_t tokens = 0, table = 0;
  int64_t logit_rows = 0;  // fp32 logit rows `logits` holds
  // x: the fp32 residual stream [T, H]; h: its 16-bit norm [T, H]; mlp_in: the fp32 (or 16-bit) up (or gate|up)
  // GEMM output; act: the 16-bit activation; y: fp32 [T, H] for a block output before its post-norm (PrePost only).
  DeviceMem x, h, qkv, att, mlp_in, act, y, logits, decode_ws, meta;
  PinnedMem host_meta;
  // Sampling (device, and staged in the same layout in pinned memory): a step's R rows' SamplingParams, then their
  // SampleRowInfo (one upload), room for `tokens` rows of both; then penalty entries [pen_cap] (a second upload)
  // and the kernel's penalty scratch [pen_cap] floats.
  // Results: tokens [tokens] | logprobs [tokens] | top ids [tokens, 20] | top logprobs [tokens, 20].
  int64_t pen_cap = 0;
  DeviceMem samp, samp_out;
  PinnedMem host_samp, host_out;
  // Pure-decode graphs by (pool, batch bucket, table width, top log-probs).
  std::map<std::tuple<uint64_t, int64_t, int64_t, int32_t>, std::unique_ptr<GraphExec>> graphs;
  bool graphs_failed = false;

  static constexpr size_t kSampleRowBytes = sizeof(SamplingParams) + sizeof(cuda::SampleRowInfo);
  SamplingParams* samp_params() const { return samp.as<SamplingParams>(); }
  cuda::SampleRowInfo* samp_info(int64_t R) const { return reinterpret_cast<cuda::SampleRowInfo*>(samp_params() + R); }
  SamplePenalty* samp_pens() const {
    return reinterpret_cast<SamplePenalty*>(samp.as<char>() + tokens * kSampleRowBytes);
  }
  float* samp_scratch() const { return reinterpret_cast<float*>(samp_pens() + pen_cap); }
  SamplingParams* host_params() const { return host_samp.as<SamplingParams>(); }
  cuda::SampleRowInfo* host_info(int64_t R) const { return reinterpret_cast<cuda::SampleRowInfo*>(host_params() + R); }
  SamplePenalty* host_pens() const {
    return reinterpret_cast<SamplePenalty*>(host_samp.as<char>() + tokens * kSampleRowBytes);
  }
  int32_t* out_tokens() const { return samp_out.as<int32_t>(); }
  float* out_logprobs() const { return reinterpret_cast<float*>(out_tokens() + tokens); }
  int32_t* out_top_ids() const { return reinterpret_cast<int32_t*>(out_logprobs() + tokens); }
  float* out_top_logprobs() const { return reinterpret_cast<float*>(out_top_ids() + tokens * cuda::kMaxTopLogprobs); }

 private:
  // Each buffer's bytes, in one place for the constructor and device_bytes.
  struct Sizes {
    size_t x, h, qkv, att, mlp_in, act, y, logits, samp_out, samp, decode_ws, meta;
    size_t total() const { return x + h + qkv + att + mlp_in + act + y + logits + samp_out + samp + decode_ws + meta; }
  };
  static Sizes sizes(const WorkspaceShape& s, int64_t T, int64_t table, int64_t pen_cap);

  const void* owner_;
  WorkspaceShape shape_;
};

}  // namespace kiln::cudadev

#endif  // KILN_HAVE_CUDA
