// f32 -> bf16 / f16 casts of host arrays through the GPU, for cuda_cast_test (test support, not in libkiln: no
// production code casts on the device this way; the test checks the device's rounding against the CPU's).
#pragma once

#include <cstddef>
#include <cstdint>

namespace kiln::testing {

// Converts n floats on the host to bf16 / f16 bits on the host through the GPU: round to nearest even, as the
// kernels' stores (__float2bfloat16_rn / __float2half_rn); NaNs keep their sign and top payload bits and become
// quiet, as the CPU conversions do.
void cast_f32_to_bf16(const float* host_in, uint16_t* host_out, size_t n);
void cast_f32_to_f16(const float* host_in, uint16_t* host_out, size_t n);

}  // namespace kiln::testing
