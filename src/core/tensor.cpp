// Tensor views and aligned host buffers.
#include "kiln/tensor.h"

#include <fmt/format.h>

#include <cstdlib>
#include <cstring>

#include "kiln/error.h"

namespace kiln {

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_str(const Shape& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

Tensor::Tensor(void* data_, DType dtype_, Shape shape_, Device device_)
    : data(data_), dtype(dtype_), shape(std::move(shape_)), device(device_) {
  strides.resize(shape.size());
  int64_t s = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = s;
    s *= shape[i];
  }
}

bool Tensor::contiguous() const {
  int64_t s = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    if (shape[i] != 1 && strides[i] != s) return false;
    s *= shape[i];
  }
  return true;
}

HostBuffer::HostBuffer(size_t nbytes) : size_(nbytes) {
  const size_t rounded = (nbytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
  KILN_CHECK(p != nullptr, "out of host memory allocating {} bytes", nbytes);
  std::memset(p, 0, rounded == 0 ? 64 : rounded);
  data_.reset(p);
}

void HostBuffer::Free::operator()(void* p) const { std::free(p); }

}  // namespace kiln
