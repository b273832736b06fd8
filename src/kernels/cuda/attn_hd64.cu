// Attention kernel instances for head_dim 64 (bf16 and f16).
#include "kernels/cuda/attention_kernels.cuh"

namespace kiln::cuda::attn {
KILN_ATTN_INSTANCES(64)
}  // namespace kiln::cuda::attn
