// The arithmetic of a sampled token that the CPU Sampler (runtime/sampler.cpp) and the GPU sampling kernel
// (kernels/cuda/sampling.cu) share, so that a seeded request draws the same tokens on either: the random bits each
// token gets, its Gumbel noise and the score a draw maximizes, the order and probability mass the filters use, and
// the penalties. Products are rounded before sums on both sides (no FMA contraction), so equal logits give equal
// tokens except where logf/expf of the host's libm and CUDA's (1 to 2 ulp apart) decide a near tie.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/philox.h"
#include "kiln/sampling.h"

namespace kiln::sampling {

// ---------------------------------------------------------------- float arithmetic rounded alike on both sides
// nvcc fuses a * b + c into an FMA unless told not to, and a host compiler may where the CPU has FMA; the intrinsics
// and the double product (exact for two floats, then rounded once) give the IEEE float result everywhere.
KILN_HOST_DEVICE inline float mul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return static_cast<float>(static_cast<double>(a) * static_cast<double>(b));
#endif
}
KILN_HOST_DEVICE inline float add_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
KILN_HOST_DEVICE inline float sub_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
KILN_HOST_DEVICE inline float div_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
// CUDA's accurate expf/logf/log1pf (never the __expf-style intrinsics) and the host's libm.
KILN_HOST_DEVICE inline float exp_f(float x) {
#ifdef __CUDA_ARCH__
  return expf(x);
#else
  return std::exp(x);
#endif
}
KILN_HOST_DEVICE inline float log_f(float x) {
#ifdef __CUDA_ARCH__
  return logf(x);
#else
  return std::log(x);
#endif
}
KILN_HOST_DEVICE inline float log1p_f(float x) {
#ifdef __CUDA_ARCH__
  return log1pf(x);
#else
  return std::log1p(x);
#endif
}
KILN_HOST_DEVICE inline uint32_t float_bits(float v) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(v);
#else
  uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  return u;
#endif
}

// ---------------------------------------------------------------- what a row does
// A row draws at random when its temperature is above 0 and top-k is not 1; otherwise it is greedy (the argmax of
// the penalized logits, the lowest id on ties).
KILN_HOST_DEVICE inline bool draws(const SamplingParams& p) {
  return p.temperature > 0.0f && p.top_k != 1;
}
// A drawing row restricts its candidates when top-k is below the vocabulary, top-p below 1 or min-p above 0.
KILN_HOST_DEVICE inline bool filters(const SamplingParams& p, int64_t vocab) {
  return (p.top_k > 0 && p.top_k < vocab) || p.top_p < 1.0f || p.min_p > 0.0f;
}
KILN_HOST_DEVICE inline float inverse_temperature(float temperature) {
  return div_rn(1.0f, temperature);
}

// ---------------------------------------------------------------- penalties
// A logit with its token's penalties, in this order: the repetition penalty (HF: a positive logit divided by it, a
// negative one multiplied) for a token of the prompt or output, then minus frequency_penalty times its output count
// plus presence_penalty for a token of the output.
KILN_HOST_DEVICE inline float penalized_logit(float v, const SamplingParams& p, const SamplePenalty& e) {
  if (p.repetition_penalty != 1.0f && (e.in_prompt != 0 || e.output_count > 0))
    v = v < 0.0f ? mul_rn(v, p.repetition_penalty) : div_rn(v, p.repetition_penalty);
  if ((p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f) && e.output_count > 0)
    v = sub_rn(v, add_rn(mul_rn(p.frequency_penalty, static_cast<float>(e.output_count)), p.presence_penalty));
  return v;
}

// ---------------------------------------------------------------- the filters' order and mass
// A float as an unsigned key of the same order (a larger value has a larger key; -0 sits just below +0). Candidates
// are ranked by key, larger first, and among equal keys by id, lower first: top-k keeps the first k of that order and
// top-p the shortest prefix of it that reaches its mass.
KILN_HOST_DEVICE inline uint32_t order_key(float v) {
  const uint32_t u = float_bits(v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// A token's probability relative to the best token's (logit mx), exp((v - mx) / T), in fixed point with 2^40 = 1.
// Sums of these are exact integers whatever their order, so the GPU's parallel sums and the CPU's sequential ones
// agree, and top-p's set is the same from run to run.
constexpr double kMassOne = 1099511627776.0;
KILN_HOST_DEVICE inline float relative_probability(float v, float mx, float inv_t) {
  return exp_f(mul_rn(sub_rn(v, mx), inv_t));
}
KILN_HOST_DEVICE inline uint64_t probability_mass(float v, float mx, float inv_t) {
  return static_cast<uint64_t>(static_cast<double>(relative_probability(v, mx, inv_t)) * kMassOne);
}
// The mass top-p keeps at least, of a candidate set of total mass z: ceil(top_p * z), at least 1.
KILN_HOST_DEVICE inline uint64_t top_p_target(float top_p, uint64_t z) {
#ifdef __CUDA_ARCH__
  const double t = ceil(static_cast<double>(top_p) * static_cast<double>(z));
#else
  const double t = std::ceil(static_cast<double>(top_p) * static_cast<double>(z));
#endif
  return t < 1.0 ? uint64_t{1} : static_cast<uint64_t>(t);
}
// min-p keeps a candidate whose probability is at least min_p times the best token's (the best token always stays).
KILN_HOST_DEVICE inline bool passes_min_p(float v, float mx, float inv_t, float min_p) {
  return relative_probability(v, mx, inv_t) >= min_p;
}

// ---------------------------------------------------------------- the draw
// The random block of four tokens (ids 4 * block .. 4 * block + 3) at a request's step: Philox4x32-10 of counter
// (block, step low, step high, 0) keyed by the seed; token id takes word id % 4. A function of (seed, step, id)
// alone, never of the batch row or the thread, so a request draws the same wherever it runs.
KILN_HOST_DEVICE inline Philox4 random_block(uint64_t seed, uint64_t step, uint32_t block) {
  return philox4x32_10(block, static_cast<uint32_t>(step), static_cast<uint32_t>(step >> 32), 0u,
                       static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}
KILN_HOST_DEVICE inline uint32_t random_bits(uint64_t seed, uint64_t step, int32_t id) {
  return random_block(seed, step, static_cast<uint32_t>(id) >> 2).word(id & 3);
}

// Standard Gumbel noise from 32 random bits: -log(E) for the exponential E = -log(1 - V) of V = (bits + 1/2) / 2^32,
// uniform in (0, 1). log1p keeps E's relative precision where E is small, which is where the largest noise, and so
// the argmax, is decided (-log(U) of a float U near 1 would quantize it); V is kept below 1, so E is finite and the
// noise is in [-2.8, 22.9].
KILN_HOST_DEVICE inline float gumbel_noise(uint32_t bits) {
  float v = add_rn(static_cast<float>(bits), 0.5f) * 0x1p-32f;
  if (v > 0x1.fffffep-1f) v = 0x1.fffffep-1f;
  return -log_f(-log1p_f(-v));
}

// What a draw maximizes over the kept tokens: the logit at the temperature plus the token's Gumbel noise. The argmax
// (the lowest id on ties) is token i with probability exp(v_i / T) / sum_kept exp(v_j / T): the Gumbel-max trick.
KILN_HOST_DEVICE inline float perturbed_score(float logit, float inv_t, uint32_t bits) {
  return add_rn(mul_rn(logit, inv_t), gumbel_noise(bits));
}

}  // namespace kiln::sampling
