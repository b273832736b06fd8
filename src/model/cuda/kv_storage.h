// The CUDA backend's paged KV storage: the block layout the attention kernels read, and the pool that places the
// runtime's logical blocks (the one place block placement is decided).
#pragma once

#ifdef KILN_HAVE_CUDA

#include <cstdint>
#include <vector>

#include "kiln/model.h"
#include "model/cuda/device_memory.h"

namespace kiln::cudadev {

// Where the K/V of a pass live: block b of layer l holds K at base + b * block_stride + 2 l * per and V at
// + (2 l + 1) * per elements, each [kv_head][block_size][head_dim] (per is that size rounded up to 16 bytes, so
// every layer's K and V start 16-byte aligned). Elements are of the compute type, or one-byte fp8 e4m3.
struct KvLayout {
  unsigned char* base = nullptr;
  int64_t elem_bytes = 2;
  int64_t per = 0;
  int64_t block_stride = 0;
  int32_t block_size = 0;
  int64_t num_blocks = 0;
  // Logical block b (the runtime's id) lives at physical block phys[b]; null: b itself.
  const int32_t* phys = nullptr;
  int64_t physical(int64_t b) const { return phys ? phys[b] : b; }
  void* k(int64_t layer) const { return base + 2 * layer * per * elem_bytes; }
  void* v(int64_t layer) const { return base + (2 * layer + 1) * per * elem_bytes; }
};

// Elements of one layer's K (or V) in a block: whole 16-byte units.
int64_t kv_per_layer(const ModelConfig& c, int32_t block_size, bool fp8);
// Bytes of one block (all layers, K and V).
int64_t kv_block_bytes(const ModelConfig& c, int32_t block_size, bool fp8);

// The runtime's pool: num_blocks blocks in one device allocation. The runtime hands out blocks in order, so a
// prefill's blocks are neighbours and the concurrent reads of decode attention land 2 num_layers per apart, a regular
// stride that the DRAM channels serve unevenly (at batch 384 x 1024 tokens, tables in allocation order read at 85% of
// copy bandwidth, shuffled ones at 94%: docs/kernels.md). The pool therefore places logical blocks by a fixed random
// permutation (`shuffle`).
class CudaKvPool final : public KvPool {
 public:
  CudaKvPool(const void* owner, const ModelConfig& c, int64_t num_blocks, int32_t block_size, bool fp8, bool shuffle);
  const void* owner() const { return owner_; }
  const KvLayout& layout() const { return layout_; }
  // A number that changes whenever a pool is made (CUDA graphs captured over one pool must not replay over another).
  uint64_t id() const { return id_; }

 private:
  const void* owner_;
  DeviceMem mem_;
  KvLayout layout_;
  std::vector<int32_t> perm_;
  uint64_t id_;
};

}  // namespace kiln::cudadev

#endif  // KILN_HAVE_CUDA
