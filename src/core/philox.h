// Philox4x32-10 (Salmon, Moraes, Dror and Shaw, SC'11), the counter-based generator behind sampling's random numbers,
// for the host and the device alike: four 32-bit words from a 128-bit counter and a 64-bit key, a pure function of
// both, so a number never depends on which thread, row or machine computes it.
#pragma once

#include <cstdint>

#ifndef KILN_HOST_DEVICE
#ifdef __CUDACC__
#define KILN_HOST_DEVICE __host__ __device__
#else
#define KILN_HOST_DEVICE
#endif
#endif

namespace kiln {

struct Philox4 {
  uint32_t x, y, z, w;
  KILN_HOST_DEVICE uint32_t word(int i) const { return i == 0 ? x : i == 1 ? y : i == 2 ? z : w; }
};

KILN_HOST_DEVICE inline uint32_t mul_hi32(uint32_t a, uint32_t b) {
#ifdef __CUDA_ARCH__
  return __umulhi(a, b);
#else
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
#endif
}

// Ten rounds of the Philox4x32 bijection of the counter (c0..c3) under the key (k0, k1), the key bumped by the
// Weyl constants between rounds (Random123's philox4x32_R(10, ...); its known-answer vectors hold).
KILN_HOST_DEVICE inline Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                                              uint32_t k1) {
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
  for (int r = 0; r < 10; ++r) {
    const uint32_t hi0 = mul_hi32(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
    const uint32_t hi1 = mul_hi32(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return Philox4{c0, c1, c2, c3};
}

}  // namespace kiln
