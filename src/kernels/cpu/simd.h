// Which CPU kernels run: the portable ones, AVX2/FMA, or AVX2/FMA with AVX-512VL's 32 registers (larger
// matmul tiles, the same arithmetic), as cpu::set_simd or set_simd_level last chose.
#pragma once

namespace kiln::cpu {

// In order: each level's kernels give the same bits as the one before it, except Portable's matmul (no FMA).
enum class SimdLevel { Portable, Avx2, Avx2Wide };

// Selects the highest level up to `most` that the CPU has; returns the level now in use. For tests and
// benchmarks of each path; not thread-safe against running kernels (set_simd(true) selects the highest).
SimdLevel set_simd_level(SimdLevel most);
SimdLevel simd_level();

// True when a vectorized level (Avx2 or Avx2Wide) is selected.
bool simd_enabled();

}  // namespace kiln::cpu
