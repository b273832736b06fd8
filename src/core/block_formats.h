// GGUF's block formats (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K): dequantization to f32 as llama.cpp's
// published layouts define it, the one definition every backend's kernels must reproduce value for value.
#pragma once

#include <cstdint>

#include "kiln/dtype.h"

namespace kiln {

// Dequantizes n values (whole blocks of `t`) at src into dst. Every value is computed in f32 as the format
// defines it (scale times quant, plus the block minimum where there is one), each product and sum rounded
// separately (no fused multiply-add), so a kernel that does the same gets the same bits.
void dequantize_blocks(DType t, const void* src, float* dst, int64_t n);

// Quantizes n values (whole blocks) of x into the format `t` (Q8_0, Q4_0 and Q4_1 only): the simple
// round-to-nearest quantizers, for tests and for making block-quantized data from f32.
void quantize_blocks(DType t, const float* x, void* dst, int64_t n);

}  // namespace kiln
