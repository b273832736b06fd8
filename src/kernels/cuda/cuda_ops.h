// The first CUDA ops: device discovery and dtype casts (checked against the CPU conversions).
#pragma once

#include <cstddef>
#include <cstdint>

namespace kiln::cuda {

// Number of CUDA devices usable now (0 when there is no driver or GPU).
int device_count();

// Converts n floats on the host to bf16 / f16 bits on the host through the GPU (round to nearest even).
void cast_f32_to_bf16(const float* host_in, uint16_t* host_out, size_t n);
void cast_f32_to_f16(const float* host_in, uint16_t* host_out, size_t n);

}  // namespace kiln::cuda
