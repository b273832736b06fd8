// Sampler: one request's token choice on the CPU (penalties, then greedy or a seeded draw through top-k, top-p and
// min-p) with log-probs of the chosen and top-K tokens from the raw model distribution; and the request's penalty
// statistics, kept as tokens arrive, which the GPU sampling kernel reads as well.
#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "kiln/sampling.h"

namespace kiln {

struct TokenLogprob {
  int32_t id = 0;
  double logprob = 0.0;
};

struct SampleResult {
  int32_t token = 0;
  double logprob = 0.0;             // of the chosen token under the raw (temperature 1) distribution
  std::vector<TokenLogprob> top;    // the top `logprobs` tokens, best first
};

// One definition of sampling, which the GPU kernel (kernels/cuda/sampling.cu) implements too, through the same
// arithmetic (core/sampling_math.h):
// 1. Penalties, over the statistics of add_prompt and accept (penalized_logit).
// 2. Greedy (temperature 0 or top-k 1): the argmax of the penalized logits, the lowest id on ties.
// 3. Otherwise the kept set: candidates ranked by logit, larger first and the lower id among equal ones (order_key);
//    top-k keeps the first k; top-p the shortest prefix of those whose fixed-point mass exp((v - max) / T) reaches
//    ceil(top_p * their total); min-p those whose exp((v - max) / T) is at least min_p (the best always stays).
// 4. The draw: the kept token with the largest logit / T + Gumbel noise, the noise from Philox4x32-10 keyed by the
//    seed at counter (token / 4, step) (the Gumbel-max trick: token i with probability softmax(v / T)_i over the
//    set). Step is the number of tokens accepted so far, so the draw is a function of (seed, step, logits) alone:
//    the same in any batch, in any order of rows, and on the GPU, up to libm rounding near a tie.
class Sampler {
 public:
  // Throws kiln::Error for parameter values out of range. An unset seed is 0 (the executor resolves it first).
  explicit Sampler(const SamplingParams& params);
  static void validate(const SamplingParams& params);
  const SamplingParams& params() const { return params_; }
  bool has_penalties() const { return params_.has_penalties(); }

  // The prompt's tokens, for the repetition penalty. Kept only when a penalty is on.
  void add_prompt(std::span<const int32_t> prompt);
  // A token generated for the request: counted for the penalties, and the next draw is at the next step.
  void accept(int32_t token);
  // Tokens accepted so far: the step of the next draw.
  uint64_t step() const { return step_; }
  // Every distinct token of the prompt and the output with its counts, in order of first appearance (empty without
  // penalties): what the penalties read here and on the GPU.
  std::span<const SamplePenalty> penalties() const { return entries_; }

  // Chooses a token from a row of logits at step(); changes no state (accept does).
  SampleResult sample(std::span<const float> logits);

 private:
  void count(int32_t token, bool in_prompt);
  int32_t draw(std::span<const float> x, int32_t best);

  SamplingParams params_;
  uint64_t seed_ = 0;
  uint64_t step_ = 0;
  std::vector<SamplePenalty> entries_;
  std::unordered_map<int32_t, int32_t> index_;  // token -> its entry
  // Scratch, reused across calls.
  std::vector<int32_t> order_;
  std::vector<float> adjusted_;  // penalized logits
};

// log(sum(exp(row))) in double precision, max-shifted.
double log_sum_exp(std::span<const float> logits);
// log_softmax of a row, in double precision.
std::vector<double> log_softmax(std::span<const float> logits);

}  // namespace kiln
