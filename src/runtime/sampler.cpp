// Sampler: penalties first, then the filters in the order HF and vLLM use: temperature, top-k, top-p, min-p.
#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "kiln/error.h"

namespace kiln {

double log_sum_exp(std::span<const float> logits) {
  double mx = -std::numeric_limits<double>::infinity();
  for (float v : logits) mx = std::max(mx, static_cast<double>(v));
  double sum = 0.0;
  for (float v : logits) sum += std::exp(static_cast<double>(v) - mx);
  return mx + std::log(sum);
}

std::vector<double> log_softmax(std::span<const float> logits) {
  std::vector<double> out(logits.size());
  const double lse = log_sum_exp(logits);
  for (size_t i = 0; i < logits.size(); ++i) out[i] = static_cast<double>(logits[i]) - lse;
  return out;
}

void Sampler::validate(const SamplingParams& p) {
  KILN_CHECK(std::isfinite(p.temperature) && p.temperature >= 0.0f, "temperature must be >= 0, got {}", p.temperature);
  KILN_CHECK(p.top_k >= 0, "top-k must be >= 0, got {}", p.top_k);
  KILN_CHECK(std::isfinite(p.top_p) && p.top_p > 0.0f && p.top_p <= 1.0f, "top-p must be in (0, 1], got {}", p.top_p);
  KILN_CHECK(std::isfinite(p.min_p) && p.min_p >= 0.0f && p.min_p <= 1.0f, "min-p must be in [0, 1], got {}", p.min_p);
  KILN_CHECK(p.logprobs >= 0 && p.logprobs <= 20, "logprobs must be in [0, 20], got {}", p.logprobs);
  KILN_CHECK(std::isfinite(p.repetition_penalty) && p.repetition_penalty > 0.0f,
             "repetition penalty must be > 0, got {}", p.repetition_penalty);
  KILN_CHECK(std::isfinite(p.presence_penalty) && p.presence_penalty >= -2.0f && p.presence_penalty <= 2.0f,
             "presence penalty must be in [-2, 2], got {}", p.presence_penalty);
  KILN_CHECK(std::isfinite(p.frequency_penalty) && p.frequency_penalty >= -2.0f && p.frequency_penalty <= 2.0f,
             "frequency penalty must be in [-2, 2], got {}", p.frequency_penalty);
}

bool Sampler::has_penalties() const {
  return params_.repetition_penalty != 1.0f || params_.presence_penalty != 0.0f || params_.frequency_penalty != 0.0f;
}

SampleResult Sampler::sample(std::span<const float> logits, std::span<const int32_t> prompt,
                             std::span<const int32_t> output) {
  if (!has_penalties()) return sample_from(logits, logits);
  const int32_t n = static_cast<int32_t>(logits.size());
  adjusted_.assign(logits.begin(), logits.end());
  if (counts_.size() < logits.size()) counts_.resize(logits.size(), 0);
  auto in_vocab = [&](int32_t t) { return t >= 0 && t < n; };
  if (params_.repetition_penalty != 1.0f) {
    // Each distinct token once (counts_ marks the ones done, then is cleared).
    const float p = params_.repetition_penalty;
    for (std::span<const int32_t> part : {prompt, output})
      for (int32_t t : part) {
        if (!in_vocab(t) || counts_[t]++ != 0) continue;
        adjusted_[t] = adjusted_[t] < 0.0f ? adjusted_[t] * p : adjusted_[t] / p;
      }
    for (std::span<const int32_t> part : {prompt, output})
      for (int32_t t : part)
        if (in_vocab(t)) counts_[t] = 0;
  }
  if (params_.presence_penalty != 0.0f || params_.frequency_penalty != 0.0f) {
    for (int32_t t : output)
      if (in_vocab(t)) ++counts_[t];
    for (int32_t t : output) {
      if (!in_vocab(t) || counts_[t] == 0) continue;
      adjusted_[t] -= params_.frequency_penalty * static_cast<float>(counts_[t]) + params_.presence_penalty;
      counts_[t] = 0;
    }
  }
  return sample_from(logits, adjusted_);
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) { validate(params); }

SampleResult Sampler::sample(std::span<const float> logits) { return sample_from(logits, logits); }

// Chooses from `logits` (penalized or not); logprobs come from `raw`.
SampleResult Sampler::sample_from(std::span<const float> raw, std::span<const float> logits) {
  const int32_t n = static_cast<int32_t>(logits.size());
  KILN_ASSERT(n > 0 && raw.size() == logits.size());
  // Logprobs of the raw distribution: raw[i] - logsumexp(raw), in double, computed only for the tokens
  // reported (a full-vocabulary double row per token was most of a large batch's sampling time).
  const double lse = log_sum_exp(raw);
  auto lp = [&](int32_t i) { return static_cast<double>(raw[i]) - lse; };
  SampleResult r;

  if (params_.logprobs > 0) {
    // Ordering by raw logit is ordering by logprob (the same double subtraction for every token).
    const int32_t k = std::min(params_.logprobs, n);
    order_.resize(n);
    std::iota(order_.begin(), order_.end(), 0);
    std::partial_sort(order_.begin(), order_.begin() + k, order_.end(),
                      [&](int32_t a, int32_t b) { return raw[a] > raw[b] || (raw[a] == raw[b] && a < b); });
    for (int32_t i = 0; i < k; ++i) r.top.push_back({order_[i], lp(order_[i])});
  }

  if (params_.temperature == 0.0f || params_.top_k == 1) {
    // Greedy: the lowest id wins ties, as torch.argmax does.
    int32_t best = 0;
    for (int32_t i = 1; i < n; ++i)
      if (logits[i] > logits[best]) best = i;
    r.token = best;
    r.logprob = lp(best);
    return r;
  }

  // Candidates sorted by probability, then truncated by top-k, top-p and min-p.
  order_.resize(n);
  std::iota(order_.begin(), order_.end(), 0);
  int32_t keep = n;
  if (params_.top_k > 0 && params_.top_k < n) keep = params_.top_k;
  auto by_logit = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  if (keep < n) {
    std::partial_sort(order_.begin(), order_.begin() + keep, order_.end(), by_logit);
  } else {
    std::sort(order_.begin(), order_.end(), by_logit);
  }
  const double inv_t = 1.0 / params_.temperature;
  const double mx = static_cast<double>(logits[order_[0]]);
  probs_.resize(keep);
  double sum = 0.0;
  for (int32_t i = 0; i < keep; ++i) {
    probs_[i] = std::exp((static_cast<double>(logits[order_[i]]) - mx) * inv_t);
    sum += probs_[i];
  }
  for (int32_t i = 0; i < keep; ++i) probs_[i] /= sum;
  if (params_.top_p < 1.0f) {
    double cum = 0.0;
    int32_t cut = keep;
    for (int32_t i = 0; i < keep; ++i) {
      cum += probs_[i];
      if (cum >= params_.top_p) {
        cut = i + 1;
        break;
      }
    }
    keep = cut;
  }
  if (params_.min_p > 0.0f) {
    const double floor = params_.min_p * probs_[0];
    int32_t cut = 1;
    while (cut < keep && probs_[cut] >= floor) ++cut;
    keep = cut;
  }
  double total = 0.0;
  for (int32_t i = 0; i < keep; ++i) total += probs_[i];
  std::uniform_real_distribution<double> uni(0.0, total);
  const double u = uni(rng_);
  double acc = 0.0;
  int32_t pick = keep - 1;
  for (int32_t i = 0; i < keep; ++i) {
    acc += probs_[i];
    if (u < acc) {
      pick = i;
      break;
    }
  }
  r.token = order_[pick];
  r.logprob = lp(r.token);
  return r;
}

}  // namespace kiln
