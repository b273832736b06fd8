// The single-sequence generation loop.
#include "runtime/generation.h"

#include <algorithm>
#include <chrono>

#include "kiln/error.h"

namespace kiln {

GenerationResult generate(const Model& model, KvState& state, std::span<const int32_t> input, int64_t max_tokens,
                          Sampler& sampler, std::span<const int32_t> stop_ids,
                          const std::function<void(int32_t)>& on_token, const std::function<bool()>& stop_requested,
                          const std::function<void(int64_t, int64_t)>& on_prefill) {
  using Clock = std::chrono::steady_clock;
  KILN_CHECK(!input.empty(), "the prompt is empty: nothing to condition on");
  KILN_CHECK(state.length() + static_cast<int64_t>(input.size()) <= state.capacity(),
             "the prompt ({} tokens) does not fit the context ({} tokens)", state.length() + input.size(),
             state.capacity());
  GenerationResult r;
  r.finish_reason = "length";
  r.prefill_tokens = static_cast<int64_t>(input.size());
  std::vector<float> logits;
  const auto t0 = Clock::now();
  const int64_t n = static_cast<int64_t>(input.size());
  const int64_t chunk = on_prefill ? kPrefillChunk : n;
  for (int64_t i = 0; i < n; i += chunk) {
    model.forward(state, input.subspan(static_cast<size_t>(i), static_cast<size_t>(std::min(chunk, n - i))), logits);
    if (on_prefill) on_prefill(std::min(i + chunk, n), n);
  }
  const auto t1 = Clock::now();
  r.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();
  for (int64_t i = 0; i < max_tokens; ++i) {
    if (stop_requested && stop_requested()) {
      r.finish_reason = "cancelled";
      break;
    }
    SampleResult s = sampler.sample(logits);
    sampler.accept(s.token);  // the next draw is the next step's (and the token counts for penalties)
    r.tokens.push_back(s.token);
    r.samples.push_back(std::move(s));
    const int32_t tok = r.tokens.back();
    if (std::find(stop_ids.begin(), stop_ids.end(), tok) != stop_ids.end()) {
      r.finish_reason = "stop";
      break;
    }
    if (on_token) on_token(tok);
    if (i + 1 == max_tokens || state.length() >= state.capacity()) break;
    const int32_t one[1] = {tok};
    model.forward(state, one, logits);
  }
  r.decode_seconds = std::chrono::duration<double>(Clock::now() - t1).count();
  return r;
}

}  // namespace kiln
