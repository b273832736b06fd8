// Tensor: a typed, strided view over memory that someone else owns; HostBuffer: aligned host memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "kiln/dtype.h"

namespace kiln {

enum class Device : uint8_t { CPU, CUDA };

using Shape = std::vector<int64_t>;

int64_t shape_numel(const Shape& shape);
std::string shape_str(const Shape& shape);

// A non-owning view. Strides are in elements; a default-constructed Tensor is empty.
struct Tensor {
  void* data = nullptr;
  DType dtype = DType::F32;
  Shape shape;
  Shape strides;
  Device device = Device::CPU;

  Tensor() = default;
  // A contiguous (row-major) view.
  Tensor(void* data, DType dtype, Shape shape, Device device = Device::CPU);

  int64_t numel() const { return shape_numel(shape); }
  int64_t dim(size_t i) const { return shape.at(i); }
  size_t rank() const { return shape.size(); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  bool contiguous() const;

  template <typename T>
  T* ptr() const { return static_cast<T*>(data); }
};

// 64-byte aligned host memory, zero-initialised.
class HostBuffer {
 public:
  HostBuffer() = default;
  explicit HostBuffer(size_t nbytes);
  size_t size() const { return size_; }
  void* data() const { return data_.get(); }
  template <typename T>
  T* as() const { return static_cast<T*>(data_.get()); }

 private:
  struct Free {
    void operator()(void* p) const;
  };
  std::unique_ptr<void, Free> data_;
  size_t size_ = 0;
};

}  // namespace kiln
