// Model: a loaded decoder-only LLM and its forward pass on the CPU backend.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

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

struct LoadOptions {
  // Print loading progress on stderr.
  bool progress = false;
};

class Model {
 public:
  virtual ~Model() = default;

  // Loads an HF checkpoint folder (config.json + safetensors), a .gguf file, or a llama2.c .bin.
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
};

}  // namespace kiln
