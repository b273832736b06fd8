// Device and pinned allocations, the model layer's CUDA error check, and the weights' arena.
#include "model/cuda/device_memory.h"

#ifdef KILN_HAVE_CUDA

#include <fmt/format.h>

namespace kiln::cudadev {

bool is_sticky(cudaError_t e) {
  switch (e) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorECCUncorrectable:
    case cudaErrorAssert:
    case cudaErrorLaunchTimeout:
    case cudaErrorContextIsDestroyed:
    case cudaErrorDevicesUnavailable:
    case cudaErrorUnknown:
      return true;
    default:
      return false;
  }
}

void throw_cuda_error(cudaError_t e, const char* file, int line) {
  const std::string msg = fmt::format("CUDA error {} ({}) at {}:{}", cudaGetErrorString(e), cudaGetErrorName(e), file,
                                      line);
  if (is_sticky(e)) throw DeviceFault(msg);
  cudaGetLastError();  // clear a non-sticky error so the next call does not see it
  throw Error(msg);
}

void* DeviceKind::allocate(size_t n) {
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, n);
  if (e != cudaSuccess) {
    if (is_sticky(e)) throw_cuda_error(e, __FILE__, __LINE__);
    cudaGetLastError();
    KILN_THROW("CUDA: out of device memory allocating {} MiB ({})", n >> 20, cudaGetErrorString(e));
  }
  return p;
}

void DeviceKind::release(void* p) { cudaFree(p); }

void* PinnedKind::allocate(size_t n) {
  void* p = nullptr;
  KILN_MODEL_CUDA(cudaMallocHost(&p, n));
  return p;
}

void PinnedKind::release(void* p) { cudaFreeHost(p); }

void* DeviceArena::alloc(size_t bytes) {
  const size_t n = (bytes + 255) / 256 * 256;
  used_ += n;
  if (n > kChunk / 4) {
    blocks_.emplace_back(n);
    allocated_ += n;
    return blocks_.back().p;
  }
  if (n > chunk_left_) {
    blocks_.emplace_back(kChunk);
    allocated_ += kChunk;
    chunk_next_ = blocks_.back().as<unsigned char>();
    chunk_left_ = kChunk;
  }
  void* p = chunk_next_;
  chunk_next_ += n;
  chunk_left_ -= n;
  return p;
}

}  // namespace kiln::cudadev

#endif  // KILN_HAVE_CUDA
