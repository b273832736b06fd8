// The memory plan: one rule for every verb (weights, then the workspace, then the KV cache from what is left).
#include "runtime/memory_plan.h"

#include <fmt/format.h>

#include <algorithm>
#include <climits>

#include "kiln/error.h"

namespace kiln {
namespace {

double gib(int64_t b) { return static_cast<double>(b) / static_cast<double>(int64_t{1} << 30); }

}  // namespace

int64_t MemoryPlan::concurrency(int64_t tokens_per_request) const {
  if (tokens_per_request <= 0) return 0;
  const int64_t blocks_per_request = (tokens_per_request + block_size - 1) / block_size;
  return num_blocks / blocks_per_request;
}

std::string MemoryPlan::describe(int64_t tokens_per_request) const {
  std::string s = fmt::format("memory plan: weights {:.2f} GiB, workspace {:.2f} GiB, KV cache {:.2f} GiB ({} blocks of "
                              "{} tokens, {} tokens",
                              gib(weights), gib(workspace), gib(kv_cache), num_blocks, block_size, tokens());
  if (tokens_per_request > 0)
    s += fmt::format("; {} requests of {} tokens at once", concurrency(tokens_per_request), tokens_per_request);
  s += fmt::format("), context {}", max_seq_len);
  if (model_context > max_seq_len) s += fmt::format(" (the model's {} does not fit)", model_context);
  if (device == Device::CUDA)
    s += fmt::format(", GPU {:.2f} GiB ({:.2f} GiB in use before the KV cache and workspace)", gib(device_total),
                     gib(in_use_before));
  return s;
}

MemoryPlan plan_memory(const Model& model, const ExecutorConfig& c) {
  const ModelConfig& mc = model.config();
  MemoryPlan p;
  p.device = model.device();
  p.block_size = c.block_size;
  p.weights = static_cast<int64_t>(model.weight_bytes());
  p.workspace = model.workspace_bytes(c.max_num_tokens);
  const int64_t block_bytes = model.kv_block_bytes(c.block_size);
  const Model::Memory mem = model.memory();
  p.device_total = mem.total;
  int64_t budget = 0;
  if (p.device == Device::CPU) {
    budget = c.kv_cache_bytes > 0 ? c.kv_cache_bytes : kCpuKvCacheBytes;
  } else {
    // The engine takes at most kv_cache_fraction of the device: what is in use already (the weights, the CUDA
    // context, other processes) and the workspace come off it first.
    p.in_use_before = mem.total - mem.free;
    const auto allowed = static_cast<int64_t>(static_cast<double>(mem.total) * c.kv_cache_fraction);
    budget = allowed - p.in_use_before - p.workspace;
    KILN_CHECK(budget >= block_bytes,
               "memory plan: no room for the KV cache: {:.2f} GiB of the GPU's {:.2f} GiB are in use (the weights take "
               "{:.2f} GiB), the workspace for --max-num-tokens {} needs {:.2f} GiB, and --kv-cache-fraction {} allows "
               "{:.2f} GiB in all; lower --max-num-tokens or raise --kv-cache-fraction",
               gib(p.in_use_before), gib(mem.total), gib(p.weights), c.max_num_tokens, gib(p.workspace),
               c.kv_cache_fraction, gib(allowed));
    if (c.kv_cache_bytes > 0) budget = std::min(budget, c.kv_cache_bytes);
  }
  int64_t num_blocks = budget / block_bytes;
  KILN_CHECK(num_blocks >= 1, "memory plan: a KV cache of {} bytes holds no block ({} bytes for {} tokens)", budget,
             block_bytes, c.block_size);
  const int64_t context = c.max_seq_len > 0 ? c.max_seq_len : mc.max_position_embeddings;
  // A request of the whole context must fit on its own (so that preemption always ends): a context asked for
  // that does not fit is refused; the model's own is shortened to what fits (and the plan says so).
  KILN_CHECK(c.max_seq_len == 0 || num_blocks * c.block_size >= c.max_seq_len,
             "memory plan: the KV cache holds {} tokens ({:.2f} GiB), less than one request of --max-seq-len {}; "
             "lower it, or give the cache more memory (--kv-cache-bytes, --kv-cache-fraction)",
             num_blocks * c.block_size, gib(num_blocks * block_bytes), c.max_seq_len);
  if (context > 0) {
    const int64_t useful = (context + c.block_size - 1) / c.block_size * static_cast<int64_t>(c.max_batch_size);
    num_blocks = std::min(num_blocks, useful);
  }
  num_blocks = std::min<int64_t>(num_blocks, INT32_MAX - 1);
  p.num_blocks = num_blocks;
  p.kv_cache = num_blocks * block_bytes;
  const int64_t pool_tokens = num_blocks * c.block_size;
  p.max_seq_len = context > 0 ? std::min(context, pool_tokens) : pool_tokens;
  p.model_context = context;
  return p;
}

}  // namespace kiln
