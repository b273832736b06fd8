// The CPU linear: y = x · Wᵀ (+ bias) for every weight format of model/linear.h — the numerical reference of each
// backend's quantized kernels.
#pragma once

#include <cstdint>

#include "model/linear.h"

namespace kiln::cpu {

// y [T, w.out] (row stride ldy) = x [T, w.in] (row stride ldx) · Wᵀ + bias, multi-threaded on ThreadPool::global().
//  - Dense f32: cpu::matmul.
//  - Any other weight with the input as is (ActQuant::None): every row of W dequantized exactly as
//    dequantize_row defines it, then the same arithmetic as cpu::matmul, so the result equals cpu::matmul over the
//    dequantized f32 weights bit for bit.
//  - fp8 activations: each input row is scaled (per token: amax / 448; static: act_scale) and rounded to e4m3 as the
//    GPU's quantizing kernels do, multiplied with W's fp8 codes in f32, and the sums scaled back:
//    y = (acc * s_x) * s_w (+ bias).
//  - int8 activations per token: rows rounded to int8 (amax / 127), exact int32 sums with W's int8 codes, then
//    y = (float(acc) * s_x) * s_w (+ bias).
// ldx / ldy 0: dense.
void linear(const Linear& w, const float* x, int64_t T, float* y, int64_t ldx = 0, int64_t ldy = 0);

// The per-token activation quantization of `linear` (for the GPU kernels' tests): row t of x scaled by
// scale[t] = amax_t / qmax (1 when the row is 0; qmax 448 for fp8, 127 for int8) and rounded to the format, the
// codes written as floats.
void quantize_rows(ActQuant act, const float* x, int64_t T, int64_t n, int64_t ldx, float static_scale, float* codes,
                   float* scales);

}  // namespace kiln::cpu
