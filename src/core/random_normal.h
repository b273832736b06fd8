// The counter-based normal generator of random weights, shared by the host (load_random.cpp) and the device
// (cuda::fill_normal), so a value depends only on (key, index), never on who computes it or in what order.
#pragma once

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define KILN_HOST_DEVICE __host__ __device__
#else
#define KILN_HOST_DEVICE
#endif

namespace kiln {

KILN_HOST_DEVICE inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Element i of the stream `key`: normal(0, stddev) by Box-Muller over pairs, elements 2j and 2j + 1 from one
// 64-bit draw of counter j. In double; the callers round to their storage type.
KILN_HOST_DEVICE inline double random_normal(uint64_t key, int64_t i, double stddev) {
  const uint64_t h = splitmix64(key + static_cast<uint64_t>(i >> 1));
  const double u1 = (static_cast<double>(h >> 32) + 0.5) * 0x1p-32;  // (0, 1): log is finite
  const double u2 = static_cast<double>(h & 0xffffffffu) * 0x1p-32;
  const double r = stddev * sqrt(-2.0 * log(u1));
  constexpr double kTwoPi = 6.283185307179586;
  return (i & 1) ? r * sin(kTwoPi * u2) : r * cos(kTwoPi * u2);
}

// The largest |random_normal| can return: u1 >= 2^-33.
constexpr double kRandomNormalMaxSigmas = 6.77;

}  // namespace kiln
