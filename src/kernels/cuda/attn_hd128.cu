// Attention kernel instances for head_dim 128 (bf16 and f16).
#include "kernels/cuda/attention_kernels.cuh"

namespace kiln::cuda::attn {
KILN_ATTN_INSTANCES(128)
}  // namespace kiln::cuda::attn
