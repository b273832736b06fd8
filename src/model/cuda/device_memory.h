// Device and pinned host allocations freed on destruction, the CUDA error check of the model layer (sticky errors,
// which poison the context, become kiln::DeviceFault), and a bump allocator for small weights.
#pragma once

#ifdef KILN_HAVE_CUDA

#include <cuda_runtime.h>

#include <cstddef>
#include <utility>
#include <vector>

#include "kiln/error.h"

namespace kiln::cudadev {

// Whether a CUDA error leaves the context unusable (every later call fails): the engine is then dead.
bool is_sticky(cudaError_t e);
// Throws DeviceFault for a sticky error, kiln::Error for any other; names the call site.
[[noreturn]] void throw_cuda_error(cudaError_t e, const char* file, int line);

#define KILN_MODEL_CUDA(expr)                                                       \
  do {                                                                              \
    const cudaError_t e_ = (expr);                                                  \
    if (e_ != cudaSuccess) ::kiln::cudadev::throw_cuda_error(e_, __FILE__, __LINE__); \
  } while (0)

// An allocation of `Kind` (device or page-locked host memory) freed on destruction.
template <typename Kind>
struct Allocation {
  void* p = nullptr;
  size_t bytes = 0;
  Allocation() = default;
  explicit Allocation(size_t n) : p(n ? Kind::allocate(n) : nullptr), bytes(n) {}
  Allocation(Allocation&& o) noexcept : p(o.p), bytes(o.bytes) { o.p = nullptr, o.bytes = 0; }
  Allocation& operator=(Allocation&& o) noexcept {
    std::swap(p, o.p);
    std::swap(bytes, o.bytes);
    return *this;
  }
  ~Allocation() {
    if (p) Kind::release(p);
  }
  template <typename T>
  T* as() const {
    return static_cast<T*>(p);
  }
};
struct DeviceKind {
  static void* allocate(size_t n);  // throws kiln::Error naming the size when the device is out of memory
  static void release(void* p);
};
struct PinnedKind {  // the per-step metadata is staged here
  static void* allocate(size_t n);
  static void release(void* p);
};
using DeviceMem = Allocation<DeviceKind>;
using PinnedMem = Allocation<PinnedKind>;

// Device memory for many tensors: large ones get an allocation each, small ones (norm weights, biases) are packed
// into chunks, every start 256-byte aligned (cuBLASLt's preference).
class DeviceArena {
 public:
  void* alloc(size_t bytes);
  // Bytes handed out (what the tensors take) and bytes allocated from the device.
  size_t used() const { return used_; }
  size_t allocated() const { return allocated_; }

 private:
  static constexpr size_t kChunk = size_t{16} << 20;
  std::vector<DeviceMem> blocks_;
  size_t chunk_left_ = 0;
  unsigned char* chunk_next_ = nullptr;
  size_t used_ = 0, allocated_ = 0;
};

}  // namespace kiln::cudadev

#endif  // KILN_HAVE_CUDA
