// Sampler: turns one row of logits into a token (repetition/presence/frequency penalties, then greedy,
// temperature, top-k, top-p, min-p) with logprobs of the chosen and top-K tokens from the raw model
// distribution.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace kiln {

struct SamplingParams {
  float temperature = 1.0f;  // 0: greedy
  int32_t top_k = 0;         // 0: off
  float top_p = 1.0f;        // 1: off
  float min_p = 0.0f;        // 0: off
  uint64_t seed = 0;
  int32_t logprobs = 0;      // how many top alternatives to report per token (0: none)
  float repetition_penalty = 1.0f;  // HF: over prompt and output tokens, positive logits / p, negative * p; 1: off
  float presence_penalty = 0.0f;    // OpenAI: minus this for every token seen in the output; 0: off
  float frequency_penalty = 0.0f;   // OpenAI: minus this times the token's count in the output; 0: off
};

struct TokenLogprob {
  int32_t id = 0;
  double logprob = 0.0;
};

struct SampleResult {
  int32_t token = 0;
  double logprob = 0.0;             // of the chosen token under the raw (temperature 1) distribution
  std::vector<TokenLogprob> top;    // the top `logprobs` tokens, best first
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // Throws kiln::Error for parameter values out of range.
  static void validate(const SamplingParams& params);
  SampleResult sample(std::span<const float> logits);
  // With the penalties applied over `prompt` and `output` (the tokens generated so far) before choosing;
  // the logprobs stay those of the raw logits.
  SampleResult sample(std::span<const float> logits, std::span<const int32_t> prompt,
                      std::span<const int32_t> output);
  bool has_penalties() const;

 private:
  SampleResult sample_from(std::span<const float> raw, std::span<const float> logits);

  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<int32_t> order_;
  std::vector<double> probs_;
  std::vector<float> adjusted_;   // penalized logits
  std::vector<int32_t> counts_;   // per vocabulary id, zero outside a call
};

// log(sum(exp(row))) in double precision, max-shifted.
double log_sum_exp(std::span<const float> logits);
// log_softmax of a row, in double precision.
std::vector<double> log_softmax(std::span<const float> logits);

}  // namespace kiln
