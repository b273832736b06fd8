// The memory plan of an executor: weights, workspace and KV cache (kiln/executor.h MemoryPlan), the same for
// every verb, the C++ LLM and the server.
#pragma once

#include "kiln/executor.h"
#include "kiln/model.h"

namespace kiln {

// Plans the KV cache for `model` under `config` (kiln::MemoryPlan says how). Never more blocks than max_batch_size
// requests at the full context can use. Throws kiln::Error with what to change when one request of the context
// (config.max_seq_len, or the model's) cannot fit, or when the device has no room for the workspace and one block.
MemoryPlan plan_memory(const Model& model, const ExecutorConfig& config);

}  // namespace kiln
