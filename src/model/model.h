// Model: a loaded decoder-only LLM and its forward pass (CPU backend; CUDA in CudaDecoderModel).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "kiln/tensor.h"
#include "model/model_config.h"

namespace kiln {

// The KV cache of one sequence, contiguous, with room for `capacity` tokens.
class KvState {
 public:
  virtual ~KvState() = default;
  int64_t length() const { return length_; }      // tokens already in the cache
  int64_t capacity() const { return capacity_; }
  // Forgets the tokens after the first n (0 <= n <= length()); the next forward continues at position n.
  void truncate(int64_t n);

 protected:
  int64_t length_ = 0;
  int64_t capacity_ = 0;
  friend class Model;
};

// The blocks of a paged KV cache in the backend's memory: block b holds, for every layer, the K and V of
// block_size consecutive tokens of one sequence. Which block belongs to whom is the runtime's business
// (KvCacheManager); the pool only stores. It also holds the scratch of forward_batch for batches of up to
// max_batch_tokens rows, so one pool serves one thread at a time.
class KvPool {
 public:
  virtual ~KvPool() = default;
  int64_t num_blocks() const { return num_blocks_; }
  int32_t block_size() const { return block_size_; }
  int64_t max_batch_tokens() const { return max_batch_tokens_; }

 protected:
  int64_t num_blocks_ = 0;
  int32_t block_size_ = 0;
  int64_t max_batch_tokens_ = 0;
};

// One sequence of a packed batch: rows [query_start, query_start + query_len) of the batch, at positions
// context_len - query_len .. context_len - 1. block_table lists the blocks of positions 0 .. context_len - 1
// in order (position p lives in block block_table[p / block_size], slot p % block_size).
struct BatchSeq {
  int64_t query_start = 0;
  int64_t query_len = 0;
  int64_t context_len = 0;
  std::span<const int32_t> block_table;
};

// One step's packed batch, without padding: the rows of every sequence back to back, in seqs order.
struct ForwardBatch {
  std::span<const int32_t> tokens;     // [T]
  std::span<const int64_t> positions;  // [T]
  std::span<const int64_t> slots;      // [T] the KV slot each row writes: block * block_size + offset
  std::span<const BatchSeq> seqs;
  std::span<const int64_t> logit_rows;  // rows whose logits are wanted, ascending
};

// One logit row's sampling in forward_batch_sample: the CPU Sampler's parameters (runtime/sampler.h), with
// the penalties' token statistics kept by the caller.
struct SamplePenalty {
  int32_t token = 0;         // a distinct token of the prompt or the output
  int32_t output_count = 0;  // its occurrences in the output so far
  int32_t in_prompt = 0;     // 1 when it occurs in the prompt
};
struct RowSampling {
  float temperature = 0.0f;  // 0: greedy
  int32_t top_k = 0;         // 0: off
  float top_p = 1.0f;        // 1: off
  float min_p = 0.0f;        // 0: off
  float repetition_penalty = 1.0f, presence_penalty = 0.0f, frequency_penalty = 0.0f;
  uint64_t seed = 0;
  uint64_t step = 0;     // which token of the request this is (0 for the first generated): a fresh draw each
  int32_t logprobs = 0;  // top log-probs wanted (0..20)
  // Every distinct token of prompt and output with its counts; read only when a penalty is on (without one,
  // leave it empty: no per-step work proportional to the prompt).
  std::span<const SamplePenalty> penalties;
};
// What forward_batch_sample gives per logit row: the chosen token, its log-prob under the raw (temperature 1,
// unpenalized) distribution, and the best top_stride log-probs (row r's first rows[r].logprobs are valid).
struct BatchSamples {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  int32_t top_stride = 0;
  std::vector<int32_t> top_ids;  // [rows, top_stride]
  std::vector<float> top_logprobs;
};
// Counters of a backend's step machinery (CUDA graphs of decode steps; zero where there are none).
struct ModelStats {
  int64_t graph_captures = 0;  // graphs captured (one per batch bucket and table width first used twice)
  int64_t graph_replays = 0;   // steps run by replaying one
  int64_t eager_steps = 0;     // forward_batch_sample steps run kernel by kernel
  // GPU time of the last forward_batch_sample step in ms (CUDA events around its device work), measured only
  // when KILN_STEP_LOG is set; -1 otherwise.
  double last_step_gpu_ms = -1;
};

struct LoadOptions {
  // Print loading progress on stderr.
  bool progress = false;
  // CUDA: the decoder on the GPU (CudaDecoderModel, every family; CUDA builds only, refused by name otherwise).
  Device device = Device::CPU;
  // CUDA: what weights, activations and the KV cache are stored as (BF16 or F16); unset: F16 (BF16 when a
  // weight is outside the f16 range). The CPU backend computes in f32 whatever this says.
  std::optional<DType> compute_dtype;
  // Build the model from an HF config.json (the path is the file, or a folder holding it) with
  // deterministic random weights instead of reading a checkpoint: matrices and embeddings normal(0, 0.02),
  // norm scales 1, biases 0, the same for the same seed on every machine and thread count.
  bool random_weights = false;
  uint64_t random_seed = 0;
  // What the random values are rounded to (F32, F16 or BF16); unset: the config's torch_dtype.
  std::optional<DType> random_dtype;
  // CUDA: replay CUDA graphs for pure-decode steps of forward_batch_sample (captured per batch bucket).
  bool cuda_graphs = true;
  // Store the KV cache as fp8 e4m3 (one byte per value instead of two: twice the tokens per byte, half the
  // bytes decode attention reads), each K and V value rounded to nearest even and saturated at +-448, without
  // a scale (kiln::round_to_fp8_e4m3). The CPU backend keeps f32 storage but stores the same rounded values, so
  // both backends compute with the same K and V.
  bool kv_cache_fp8 = false;
};

class Model {
 public:
  virtual ~Model() = default;

  // Loads an HF checkpoint folder (config.json + safetensors), a .gguf file, or a llama2.c .bin; with
  // options.random_weights, an HF config.json with random weights.
  // Throws kiln::Error naming the file and problem (missing file, unknown architecture, bad tensor).
  static std::unique_ptr<Model> load(const std::string& path, const LoadOptions& options = {});

  virtual const ModelConfig& config() const = 0;
  virtual int64_t num_parameters() const = 0;
  virtual size_t weight_bytes() const = 0;  // in memory, as computed with

  virtual std::unique_ptr<KvState> new_state(int64_t capacity) const = 0;

  // Runs `tokens` at positions state.length() .. + tokens.size(), appending their K/V to the state.
  // Writes logits [vocab] of the last token into `logits` (or [tokens.size(), vocab] when all_logits).
  // Throws kiln::Error when the state would exceed its capacity or an id is out of range (the state is
  // then unchanged). Call from one thread at a time: the CPU kernels share ThreadPool::global().
  virtual void forward(KvState& state, std::span<const int32_t> tokens, std::vector<float>& logits,
                       bool all_logits = false) const = 0;

  // Paged KV (the runtime's path). Bytes of one block of `block_size` tokens (all layers, K and V).
  virtual int64_t kv_block_bytes(int32_t block_size) const;
  // A pool of num_blocks blocks whose scratch fits batches of up to max_batch_tokens rows. Its memory is
  // reserved, not touched: pages are committed as blocks are first written.
  virtual std::unique_ptr<KvPool> new_kv_pool(int64_t num_blocks, int32_t block_size, int64_t max_batch_tokens) const;
  // Runs one packed batch: each row's K/V is written to its slot (after RoPE), attention reads each
  // sequence's keys through its block table, and `logits` becomes [logit_rows.size(), vocab]. A row's
  // result depends only on its sequence's tokens, never on the rest of the batch (bitwise on the CPU).
  // Throws kiln::Error for an id out of range or a malformed batch; the pool's blocks not written by this
  // batch are unchanged. Same threading contract as forward.
  virtual void forward_batch(KvPool& pool, const ForwardBatch& batch, std::vector<float>& logits) const;
  // Whether forward_batch_sample samples where the logits are (the GPU), so that they never travel.
  virtual bool samples_on_device() const { return false; }
  // forward_batch, then each logit row sampled with rows[i] (one per logit row) into `out`: the CPU Sampler's
  // semantics (penalties, then greedy or temperature with top-k, top-p and min-p; log-probs of the raw
  // distribution), with greedy ids and log-probs equal to the CPU Sampler's up to float rounding. Draws are
  // deterministic for (seed, step) and independent of the batch, but are not the CPU Sampler's mt19937
  // stream: the same seed gives different (equally distributed) tokens on the two paths. Backends without
  // device sampling throw (callers check samples_on_device() and sample forward_batch's logits themselves).
  virtual void forward_batch_sample(KvPool& pool, const ForwardBatch& batch, std::span<const RowSampling> rows,
                                    BatchSamples& out) const;
  virtual ModelStats stats() const { return {}; }
  // Bytes free now where this backend's KV pool would live: the GPU's free memory for a device backend; -1 for
  // host memory (the executor then reads MemAvailable).
  virtual int64_t kv_memory_available() const { return -1; }
};

}  // namespace kiln
