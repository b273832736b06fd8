// Attention kernel instances for head_dim 128 (bf16 and f16), and the occupancy of its head-major decode kernel.
#include "kernels/cuda/attention_kernels.cuh"

namespace kiln::cuda::attn {
KILN_ATTN_INSTANCES(128)

int head_major_decode_ctas_per_sm(bool kv_fp8) {
  return kv_fp8 ? decode_occupancy<__nv_bfloat16, 128, true, true>()
                : decode_occupancy<__nv_bfloat16, 128, true, false>();
}
}  // namespace kiln::cuda::attn
