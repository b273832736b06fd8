// One sequence's generation loop on a Model: prefill, then sample and feed one token at a time.
// (The executor of the runtime issue replaces this with in-flight batching.)
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "kiln/model.h"
#include "runtime/sampler.h"

namespace kiln {

struct GenerationResult {
  std::vector<int32_t> tokens;         // generated ids, the stop token included when one ended it
  std::vector<SampleResult> samples;   // one per generated id
  std::string finish_reason;           // "stop", "length" or "cancelled"
  int64_t prefill_tokens = 0;
  double prefill_seconds = 0.0;
  double decode_seconds = 0.0;         // time for the tokens after the first
};

// Feeds `input` (ids not yet in `state`), then generates up to max_tokens. Stops at an id of
// `stop_ids` (finish "stop") or at max_tokens or the state's capacity (finish "length").
// on_token is called for each generated id that is not a stop id, as soon as it is sampled. Every generated id is
// accepted by `sampler` (its step advances; its penalties, if any, count the id; add_prompt is the caller's).
// stop_requested, when given, is asked before each token is sampled: true ends generation with finish
// "cancelled" (kiln chat's Ctrl-C); `state` then holds the input and every token in `tokens`. With on_prefill,
// the input is computed in chunks of kPrefillChunk tokens (the same logits: a row's result does not depend on
// the chunk it is in) and on_prefill(computed, input size) is called after each.
inline constexpr int64_t kPrefillChunk = 512;
GenerationResult generate(const Model& model, KvState& state, std::span<const int32_t> input, int64_t max_tokens,
                          Sampler& sampler, std::span<const int32_t> stop_ids,
                          const std::function<void(int32_t)>& on_token = {},
                          const std::function<bool()>& stop_requested = {},
                          const std::function<void(int64_t, int64_t)>& on_prefill = {});

}  // namespace kiln
