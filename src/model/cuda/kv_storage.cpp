// The CUDA KV pool: one device allocation of blocks and the permutation that places them.
#include "model/cuda/kv_storage.h"

#ifdef KILN_HAVE_CUDA

#include <algorithm>
#include <atomic>
#include <numeric>
#include <random>

namespace kiln::cudadev {

int64_t kv_per_layer(const ModelConfig& c, int32_t block_size, bool fp8) {
  const int64_t unit = fp8 ? 16 : 8;
  return (c.num_kv_heads * block_size * c.head_dim + unit - 1) / unit * unit;
}

int64_t kv_block_bytes(const ModelConfig& c, int32_t block_size, bool fp8) {
  return 2 * c.num_layers * kv_per_layer(c, block_size, fp8) * (fp8 ? 1 : 2);
}

CudaKvPool::CudaKvPool(const void* owner, const ModelConfig& c, int64_t num_blocks, int32_t block_size, bool fp8,
                       bool shuffle)
    : owner_(owner) {
  static std::atomic<uint64_t> next_id{1};
  id_ = next_id++;
  layout_.elem_bytes = fp8 ? 1 : 2;
  layout_.per = kv_per_layer(c, block_size, fp8);
  layout_.block_stride = 2 * c.num_layers * layout_.per;
  layout_.block_size = block_size;
  layout_.num_blocks = num_blocks;
  mem_ = DeviceMem(static_cast<size_t>(num_blocks * layout_.block_stride * layout_.elem_bytes));
  layout_.base = mem_.as<unsigned char>();
  if (shuffle) {
    perm_.resize(static_cast<size_t>(num_blocks));
    std::iota(perm_.begin(), perm_.end(), 0);
    std::shuffle(perm_.begin(), perm_.end(), std::mt19937_64(0x6b696c6e));
    layout_.phys = perm_.data();
  }
  num_blocks_ = num_blocks;
  block_size_ = block_size;
  bytes_ = static_cast<int64_t>(mem_.bytes);
}

}  // namespace kiln::cudadev

#endif  // KILN_HAVE_CUDA
