// Sampler: penalties, then greedy or the kept set (top-k, top-p, min-p) and a Gumbel-max draw on Philox numbers, in
// the arithmetic the GPU kernel shares (core/sampling_math.h).
#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/sampling_math.h"
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

Sampler::Sampler(const SamplingParams& params) : params_(params), seed_(params.seed.value_or(0)) {
  validate(params);
}

void Sampler::count(int32_t token, bool in_prompt) {
  auto [it, fresh] = index_.emplace(token, static_cast<int32_t>(entries_.size()));
  if (fresh) entries_.push_back({token, 0, 0});
  SamplePenalty& e = entries_[it->second];
  if (in_prompt)
    e.in_prompt = 1;
  else
    ++e.output_count;
}

void Sampler::add_prompt(std::span<const int32_t> prompt) {
  if (!has_penalties()) return;  // nothing per token for requests that never read it
  for (int32_t t : prompt) count(t, true);
}

void Sampler::accept(int32_t token) {
  ++step_;
  if (has_penalties()) count(token, false);
}

SampleResult Sampler::sample(std::span<const float> raw) {
  const int32_t n = static_cast<int32_t>(raw.size());
  KILN_ASSERT(n > 0);
  std::span<const float> x = raw;
  if (!entries_.empty()) {
    adjusted_.assign(raw.begin(), raw.end());
    for (const SamplePenalty& e : entries_)
      if (e.token >= 0 && e.token < n) adjusted_[e.token] = sampling::penalized_logit(adjusted_[e.token], params_, e);
    x = adjusted_;
  }
  // Logprobs of the raw distribution: raw[i] - logsumexp(raw), in double, computed only for the tokens reported (a
  // full-vocabulary double row per token was most of a large batch's sampling time).
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
  // Greedy's choice, and the best token the filters measure against: the lowest id on ties, as torch.argmax.
  int32_t best = 0;
  for (int32_t i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  r.token = sampling::draws(params_) ? draw(x, best) : best;
  r.logprob = lp(r.token);
  return r;
}

// The kept token of the penalized row x with the largest perturbed score (the lowest id on ties); `best` when every
// score is -inf, as on the GPU.
int32_t Sampler::draw(std::span<const float> x, int32_t best) {
  using namespace sampling;
  const int32_t n = static_cast<int32_t>(x.size());
  const float inv_t = inverse_temperature(params_.temperature);
  const float mx = x[best];
  int32_t pick = best;
  float top = -std::numeric_limits<float>::infinity();
  bool any = false;
  auto consider = [&](int32_t i, uint32_t bits) {
    const float s = perturbed_score(x[i], inv_t, bits);
    if (s > top || (any && s == top && i < pick)) top = s, pick = i, any = true;
  };
  if (!filters(params_, n)) {
    for (int32_t b = 0; 4 * static_cast<int64_t>(b) < n; ++b) {
      const Philox4 bits = random_block(seed_, step_, static_cast<uint32_t>(b));
      for (int32_t w = 0; w < 4 && 4 * b + w < n; ++w) consider(4 * b + w, bits.word(w));
    }
    return pick;
  }

  // Candidates in the filters' order: larger key first, the lower id among equal keys.
  auto before = [&](int32_t a, int32_t b) {
    const uint32_t ka = order_key(x[a]), kb = order_key(x[b]);
    return ka > kb || (ka == kb && a < b);
  };
  order_.resize(n);
  std::iota(order_.begin(), order_.end(), 0);
  int32_t keep = n;
  if (params_.top_k > 0 && params_.top_k < n) {
    keep = params_.top_k;
    std::nth_element(order_.begin(), order_.begin() + (keep - 1), order_.end(), before);  // [0, keep): the top-k set
  }
  if (params_.top_p < 1.0f) {
    uint64_t z = 0;
    for (int32_t j = 0; j < keep; ++j) z += probability_mass(x[order_[j]], mx, inv_t);
    const uint64_t target = top_p_target(params_.top_p, z);
    // The shortest prefix reaching the target, sorting only as far as it goes (usually a few dozen tokens).
    uint64_t cum = 0;
    int32_t sorted = 0, cut = keep;
    bool found = false;
    for (int64_t chunk = 64; !found && sorted < keep; chunk *= 4) {
      const int32_t end = static_cast<int32_t>(std::min<int64_t>(keep, sorted + chunk));
      std::partial_sort(order_.begin() + sorted, order_.begin() + end, order_.begin() + keep, before);
      for (; sorted < end; ++sorted) {
        cum += probability_mass(x[order_[sorted]], mx, inv_t);
        if (cum >= target) {
          cut = sorted + 1;
          found = true;
          break;
        }
      }
    }
    keep = cut;
  }
  const float min_p = params_.min_p;
  for (int32_t j = 0; j < keep; ++j) {
    const int32_t i = order_[j];
    if (min_p > 0.0f && i != best && !passes_min_p(x[i], mx, inv_t, min_p)) continue;
    consider(i, random_bits(seed_, step_, i));
  }
  return pick;
}

}  // namespace kiln
