// Model: a loaded decoder-only LLM on one device (the CPU backend, or the CUDA backend on one GPU), its options,
// and the packed batch its forward pass runs. The public face of src/model/.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "kiln/model_config.h"
#include "kiln/sampling.h"
#include "kiln/tensor.h"

namespace kiln {

// The KV cache of one sequence, contiguous, with room for `capacity` tokens (Model::forward's state).
class KvState {
 public:
  virtual ~KvState() = default;
  int64_t length() const { return length_; }  // tokens already in the cache
  int64_t capacity() const { return capacity_; }
  // Forgets the tokens after the first n (0 <= n <= length()); the next forward continues at position n.
  void truncate(int64_t n);

 protected:
  int64_t length_ = 0;
  int64_t capacity_ = 0;
};

// The blocks of a paged KV cache in the backend's memory: block b holds, for every layer, the K and V of
// block_size consecutive tokens of one sequence. Which block belongs to whom is the runtime's business
// (KvCacheManager); the pool only stores.
class KvPool {
 public:
  virtual ~KvPool() = default;
  int64_t num_blocks() const { return num_blocks_; }
  int32_t block_size() const { return block_size_; }
  int64_t bytes() const { return bytes_; }

 protected:
  int64_t num_blocks_ = 0;
  int32_t block_size_ = 0;
  int64_t bytes_ = 0;
};

// The activation scratch of one forward pass of up to max_tokens rows (and the per-step staging and CUDA graphs
// of a device backend). One workspace serves one thread at a time; it may be used with any pool of its model.
class Workspace {
 public:
  virtual ~Workspace() = default;
  int64_t max_tokens() const { return max_tokens_; }
  int64_t bytes() const { return bytes_; }

 protected:
  int64_t max_tokens_ = 0;
  int64_t bytes_ = 0;
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

// One step's packed batch, without padding: the rows of every sequence back to back, in seqs order. The first
// num_decodes sequences have one row each (a decode: one query against its whole context) and run through the
// decode attention kernels; the rest (prompt chunks) through prefill attention. The batch is checked against
// this: a one-row sequence after num_decodes is fine (it runs as a prefill of one row), a longer one before is not.
struct ForwardBatch {
  std::span<const int32_t> tokens;     // [T]
  std::span<const int64_t> positions;  // [T]
  std::span<const int64_t> slots;      // [T] the KV slot each row writes: block * block_size + offset
  std::span<const BatchSeq> seqs;
  std::span<const int64_t> logit_rows;  // rows whose logits are wanted, ascending
  int64_t num_decodes = 0;
};

// One logit row's sampling in forward_batch_sample: the request's parameters (the seed resolved), and beside them
// the row's place in its request (which token it draws) and the penalty statistics its Sampler keeps
// (runtime/sampler.h; read only when a penalty is on: leave it empty otherwise).
struct RowSampling {
  SamplingParams params;
  uint64_t step = 0;  // tokens the request generated before this one (Sampler::step): a fresh draw each
  std::span<const SamplePenalty> penalties;
};
// What forward_batch_sample gives per logit row: the chosen token, its log-prob under the raw (temperature 1,
// unpenalized) distribution, and the best top_stride log-probs (row r's first rows[r].params.logprobs are valid).
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
  // with LoadOptions::time_steps; -1 otherwise.
  double last_step_gpu_ms = -1;
};

// How the weights of the linear layers are stored, when a checkpoint holds 16- or 32-bit weights (a checkpoint
// that is already quantized keeps its own format, e.g. a GGUF file's blocks).
enum class Quantization : uint8_t {
  None,     // as the checkpoint holds them (the CPU computes in f32, the GPU in its compute type)
  Fp8,      // fp8 e4m3 weights with a scale per output channel, activations fp8 per token (dynamic)
  Fp8WeightOnly,   // fp8 e4m3 weights with a scale per output channel; activations stay in the compute type
  Int8WeightOnly,  // int8 weights with a scale per output channel; activations stay in the compute type
  Int4WeightOnly,  // 4-bit weights in groups of 128 along the input, each with a scale and a zero point
};
// "none", "fp8", "fp8-wo", "int8-wo", "int4-wo".
const char* quantization_name(Quantization q);
// The inverse of quantization_name; throws kiln::Error listing the accepted names.
Quantization parse_quantization(const std::string& name);

struct LoadOptions {
  // Print loading progress on stderr.
  bool progress = false;
  // CPU, or CUDA: the decoder on GPU `device_ordinal` (CUDA builds only, refused by name otherwise).
  Device device = Device::CPU;
  int device_ordinal = 0;
  // CPU: the threads of the process-wide pool the CPU kernels share (0: one per hardware thread). It is made once,
  // at the first model's load; a later load asking for another count is refused.
  int cpu_threads = 0;
  // CUDA: what activations, the KV cache and unquantized weights are stored as (BF16 or F16); unset: F16 (BF16
  // when a weight is outside the f16 range). The CPU backend computes in f32 whatever this says.
  std::optional<DType> compute_dtype;
  // Quantize the linear layers' weights as they are loaded (embeddings and lm_head stay as they are).
  Quantization quantization = Quantization::None;
  // Build the model from an HF config.json (the path is the file, or a folder holding it) with
  // deterministic random weights instead of reading a checkpoint: matrices and embeddings normal(0, 0.02),
  // norm scales 1, biases 0, the same for the same seed on every machine and thread count.
  bool random_weights = false;
  uint64_t random_seed = 0;
  // What the random values are rounded to (F32, F16 or BF16); unset: the config's torch_dtype.
  std::optional<DType> random_dtype;
  // CUDA: replay CUDA graphs for pure-decode steps of forward_batch_sample (captured per batch bucket).
  bool cuda_graphs = true;
  // CUDA: time the GEMM algorithms cuBLASLt offers for the prefill GEMMs (1024 rows and more) when a workspace
  // is made, and keep the fastest (as TensorRT-LLM profiles its GEMMs at engine build); off: cuBLASLt's heuristic.
  bool gemm_tuning = true;
  // CUDA: time every op of every step with CUDA events (graphs off) and print the per-op totals on stderr when
  // the model is destroyed. For finding where a step's time goes; costs a few microseconds per op.
  bool profile = false;
  // CUDA: measure each sampled step's GPU time (ModelStats::last_step_gpu_ms), for the executor's step log.
  bool time_steps = false;
  // Store the KV cache as fp8 e4m3 (one byte per value instead of two: twice the tokens per byte, half the
  // bytes decode attention reads), each K and V value rounded to nearest even and saturated at +-448, without
  // a scale (kiln::round_to_fp8_e4m3). The CPU backend keeps f32 storage but stores the same rounded values, so
  // both backends compute with the same K and V.
  bool kv_cache_fp8 = false;
  // Testing: after this many forward passes the backend has a device fault (the CPU throws DeviceFault; CUDA
  // launches a kernel that reads out of bounds, a real sticky fault). 0: never.
  int64_t fault_after_steps = 0;
};

// The format of one linear layer as loaded (for `kiln info`): its name, shape and storage.
struct LinearInfo {
  std::string name;    // e.g. "layers.0.qkv"
  int64_t out = 0, in = 0;
  std::string format;  // e.g. "bf16", "q4_1", "fp8 per-channel, fp8 activations per token"
  int64_t bytes = 0;   // as stored on the device (weights, scales, zeros)
};

class Model {
 public:
  virtual ~Model() = default;

  // Loads an HF checkpoint folder (config.json + safetensors), a .gguf file, or a llama2.c .bin; with
  // options.random_weights, an HF config.json with random weights.
  // Throws kiln::Error naming the file and problem (missing file, unknown architecture, bad tensor).
  static std::unique_ptr<Model> load(const std::string& path, const LoadOptions& options = {});

  virtual const ModelConfig& config() const = 0;
  virtual Device device() const = 0;
  // What the forward pass computes in: F32 on the CPU, the CUDA backend's BF16 or F16.
  virtual DType compute_dtype() const = 0;
  virtual int64_t num_parameters() const = 0;
  virtual size_t weight_bytes() const = 0;  // in the backend's memory, as computed with
  // Every linear layer's storage, in layer order.
  virtual std::vector<LinearInfo> linears() const = 0;

  // A contiguous KV cache for one sequence (with the workspace forward needs).
  virtual std::unique_ptr<KvState> new_state(int64_t capacity) const = 0;
  // Runs `tokens` at positions state.length() .. + tokens.size(), appending their K/V to the state.
  // Writes logits [vocab] of the last token into `logits` (or [tokens.size(), vocab] when all_logits).
  // Throws kiln::Error when the state would exceed its capacity or an id is out of range (the state is
  // then unchanged). Call from one thread at a time: the CPU kernels share ThreadPool::global().
  virtual void forward(KvState& state, std::span<const int32_t> tokens, std::vector<float>& logits,
                       bool all_logits = false) const = 0;

  // Paged KV (the runtime's path). Bytes of one block of `block_size` tokens (all layers, K and V).
  virtual int64_t kv_block_bytes(int32_t block_size) const = 0;
  // A pool of num_blocks blocks. On the CPU its memory is reserved, not touched: pages are committed as blocks
  // are first written.
  virtual std::unique_ptr<KvPool> new_kv_pool(int64_t num_blocks, int32_t block_size) const = 0;
  // Bytes a workspace for batches of up to max_tokens rows takes (for planning memory before making one).
  virtual int64_t workspace_bytes(int64_t max_tokens) const = 0;
  virtual std::unique_ptr<Workspace> new_workspace(int64_t max_tokens) const = 0;
  // Runs one packed batch: each row's K/V is written to its slot (after RoPE), attention reads each
  // sequence's keys through its block table, and `logits` becomes [logit_rows.size(), vocab]. A row's
  // result depends only on its sequence's tokens, never on the rest of the batch (bitwise on the CPU).
  // Throws kiln::Error for an id out of range or a malformed batch; the pool's blocks not written by this
  // batch are unchanged. Same threading contract as forward.
  virtual void forward_batch(KvPool& pool, Workspace& ws, const ForwardBatch& batch,
                             std::vector<float>& logits) const = 0;
  // Whether forward_batch_sample samples where the logits are (the GPU), so that they never travel.
  virtual bool samples_on_device() const { return false; }
  // forward_batch, then each logit row sampled with rows[i] (one per logit row) into `out`: the CPU Sampler's
  // sampling (penalties, then greedy or a draw through top-k, top-p and min-p; log-probs of the raw distribution)
  // in the same arithmetic and with the same counter-based draws (core/sampling_math.h), so equal logits give the
  // CPU Sampler's tokens up to libm rounding near a tie, whatever the batch. Backends without device sampling
  // throw (callers check samples_on_device() and sample forward_batch's logits themselves).
  virtual void forward_batch_sample(KvPool& pool, Workspace& ws, const ForwardBatch& batch,
                                    std::span<const RowSampling> rows, BatchSamples& out) const;
  virtual ModelStats stats() const { return {}; }
  // The memory the pool and workspace would come from: the device's total and free bytes now for a device
  // backend; for the CPU, MemTotal and MemAvailable.
  struct Memory {
    int64_t total = 0;
    int64_t free = 0;
  };
  virtual Memory memory() const = 0;
};

}  // namespace kiln
