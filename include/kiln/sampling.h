// SamplingParams: how a request chooses its tokens. The one struct that goes from the public Request through the CPU
// Sampler and the model interface to the GPU sampling kernel (plain data, so it is copied to the device as bytes);
// and SamplePenalty, one entry of the token statistics the penalties read.
#pragma once

#include <cstdint>
#include <optional>
#include <type_traits>

// Device code (the sampling kernel) reads these structs too.
#ifndef KILN_HOST_DEVICE
#ifdef __CUDACC__
#define KILN_HOST_DEVICE __host__ __device__
#else
#define KILN_HOST_DEVICE
#endif
#endif

namespace kiln {

// A request's seed, or none. Used as the std::optional<uint64_t> it replaces (assigned a value or std::nullopt,
// tested, dereferenced) but plain data, so SamplingParams stays a POD the GPU can read. An unset seed is resolved
// before sampling: the executor draws one when the request is enqueued; a Sampler or the kernel given none uses 0.
class SamplingSeed {
 public:
  constexpr SamplingSeed() = default;
  KILN_HOST_DEVICE constexpr SamplingSeed(uint64_t value) : value_(value), set_(true) {}
  constexpr SamplingSeed(std::nullopt_t) {}
  constexpr SamplingSeed(const std::optional<uint64_t>& v) : value_(v.value_or(0)), set_(v.has_value()) {}
  KILN_HOST_DEVICE constexpr bool has_value() const { return set_; }
  KILN_HOST_DEVICE constexpr explicit operator bool() const { return set_; }
  KILN_HOST_DEVICE constexpr uint64_t operator*() const { return value_; }
  KILN_HOST_DEVICE constexpr uint64_t value_or(uint64_t fallback) const { return set_ ? value_ : fallback; }
  void reset() { *this = SamplingSeed(); }

 private:
  uint64_t value_ = 0;
  bool set_ = false;
};

// The order of the first six fields is the one positional initializers ({temperature, top_k, top_p, min_p, seed,
// logprobs}) rely on. Filters, penalties and the draw are defined in runtime/sampler.h; the arithmetic both backends
// share is core/sampling_math.h.
struct SamplingParams {
  float temperature = 1.0f;         // 0: greedy (ties go to the lowest id)
  int32_t top_k = 0;                // 0: off; 1: greedy
  float top_p = 1.0f;               // 1: off
  float min_p = 0.0f;               // 0: off
  SamplingSeed seed;                // none: drawn by the executor at enqueue
  int32_t logprobs = 0;             // top alternatives reported per generated token (0..20; 0: only the chosen one's)
  float repetition_penalty = 1.0f;  // HF style, over prompt and output: positive logits / p, negative * p; 1: off
  float presence_penalty = 0.0f;    // OpenAI style: minus this for every token present in the output; 0: off
  float frequency_penalty = 0.0f;   // OpenAI style: minus this times the token's count in the output; 0: off

  KILN_HOST_DEVICE bool has_penalties() const {
    return repetition_penalty != 1.0f || presence_penalty != 0.0f || frequency_penalty != 0.0f;
  }
};
static_assert(std::is_trivially_copyable_v<SamplingParams> && std::is_standard_layout_v<SamplingParams>,
              "SamplingParams is copied to the GPU as bytes");

// The name the request API had for it.
using RequestSampling = SamplingParams;

// One entry of a request's penalty statistics: a distinct token of its prompt or output (the Sampler keeps one per
// such token, in the order they first appeared, and the GPU kernel reads the same entries).
struct SamplePenalty {
  int32_t token = 0;         // a distinct token of the prompt or the output
  int32_t output_count = 0;  // its occurrences in the output so far
  int32_t in_prompt = 0;     // 1 when it occurs in the prompt
};
static_assert(std::is_trivially_copyable_v<SamplePenalty> && sizeof(SamplePenalty) == 12);

}  // namespace kiln
