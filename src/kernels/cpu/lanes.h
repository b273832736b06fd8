// Eight fp32 lanes for the CPU kernels written once over a lane type (attention panels, SiLU): PortableOps (plain
// arrays) and, on x86, Avx2Ops (AVX2/FMA). Both do the same IEEE operation per lane, so a kernel gives the same
// bits on either; lanes_math.inc builds functions (exp) from them.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define KILN_LANES_X86 1
#endif

namespace kiln::cpu {

// Eight lanes as plain arrays: the portable path, the same IEEE operations per lane as the AVX2 one.
struct PortableOps {
  struct V {
    float x[8];
  };
  struct I {
    int32_t x[8];
  };
  struct M {
    bool x[8];
  };
  template <class F>
  static V map(F f) {
    V r;
    for (int i = 0; i < 8; ++i) r.x[i] = f(i);
    return r;
  }
  static V zero() { return set1(0.0f); }
  static V set1(float a) {
    return map([&](int) { return a; });
  }
  static V load(const float* p) {
    return map([&](int i) { return p[i]; });
  }
  static void store(float* p, V a) { std::memcpy(p, a.x, sizeof(a.x)); }
  static I iload(const int32_t* p) {
    I r;
    std::memcpy(r.x, p, sizeof(r.x));
    return r;
  }
  static V fma(V a, V b, V c) {
    return map([&](int i) { return std::fma(a.x[i], b.x[i], c.x[i]); });
  }
  static V mul(V a, V b) {
    return map([&](int i) { return a.x[i] * b.x[i]; });
  }
  static V add(V a, V b) {
    return map([&](int i) { return a.x[i] + b.x[i]; });
  }
  static V sub(V a, V b) {
    return map([&](int i) { return a.x[i] - b.x[i]; });
  }
  static V div(V a, V b) {
    return map([&](int i) { return a.x[i] / b.x[i]; });
  }
  // As the x86 max instruction: the second operand unless the first is greater.
  static V max(V a, V b) {
    return map([&](int i) { return a.x[i] > b.x[i] ? a.x[i] : b.x[i]; });
  }
  static V round(V a) {
    return map([&](int i) { return std::nearbyint(a.x[i]); });
  }
  // 2^n for integral n in [-126, 127].
  static V pow2i(V n) {
    return map([&](int i) { return std::ldexp(1.0f, static_cast<int>(n.x[i])); });
  }
  static M ge(V a, V b) {
    M r;
    for (int i = 0; i < 8; ++i) r.x[i] = a.x[i] >= b.x[i];
    return r;
  }
  static V select(M m, V a, V b) {
    return map([&](int i) { return m.x[i] ? a.x[i] : b.x[i]; });
  }
  static M key_valid(int32_t j, I pos, I lo) {
    M r;
    for (int i = 0; i < 8; ++i) r.x[i] = j <= pos.x[i] && j >= lo.x[i];
    return r;
  }
  // (float)(j - pos) per lane: the ALiBi distance, exact below 2^24.
  static V distance(int32_t j, I pos) {
    return map([&](int i) { return static_cast<float>(j - pos.x[i]); });
  }
};

#ifdef KILN_LANES_X86
#pragma GCC push_options
#pragma GCC target("avx2,fma")

struct Avx2Ops {
  using V = __m256;
  using I = __m256i;
  using M = __m256;
  static V zero() { return _mm256_setzero_ps(); }
  static V set1(float a) { return _mm256_set1_ps(a); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V a) { _mm256_storeu_ps(p, a); }
  static I iload(const int32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V div(V a, V b) { return _mm256_div_ps(a, b); }
  static V max(V a, V b) { return _mm256_max_ps(a, b); }
  static V round(V a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static V pow2i(V n) {
    const __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
  }
  static M ge(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_GE_OQ); }
  static V select(M m, V a, V b) { return _mm256_blendv_ps(b, a, m); }
  static M key_valid(int32_t j, I pos, I lo) {
    const __m256i jv = _mm256_set1_epi32(j);
    const __m256i bad = _mm256_or_si256(_mm256_cmpgt_epi32(jv, pos), _mm256_cmpgt_epi32(lo, jv));
    return _mm256_castsi256_ps(_mm256_xor_si256(bad, _mm256_set1_epi32(-1)));
  }
  static V distance(int32_t j, I pos) { return _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_set1_epi32(j), pos)); }
};

#pragma GCC pop_options
#endif

}  // namespace kiln::cpu
