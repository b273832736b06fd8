// Which CPU kernels run: the vectorized (AVX2/FMA) ones or the portable ones, as cpu::set_simd last chose.
#pragma once

namespace kiln::cpu {

// True when the vectorized kernels are selected and the CPU has AVX2 and FMA.
bool simd_enabled();

}  // namespace kiln::cpu
