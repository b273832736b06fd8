// Pieces shared by the kiln verbs: the default model, loading with progress, flag helpers.
#pragma once

#include <CLI/CLI.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kiln/tokenizer.h"
#include "kiln/model.h"

namespace kiln::cli {

// Where the README's run command puts the default model: $KILN_CACHE_DIR, else
// $XDG_CACHE_HOME/kiln, else ~/.cache/kiln; the file is SmolLM2-135M-Instruct.Q4_1.gguf.
std::string default_model_path();

// `--model` as given, or the default model; throws kiln::Error telling how to fetch it when absent.
std::string resolve_model_path(const std::string& flag_value);

// Sets the CPU backend's thread count (0: all hardware threads); a negative count is a kiln::Error naming
// --threads. Must run before the first model op.
void set_num_threads(int n);
// --threads, as every verb that loads a model offers it.
void add_threads_option(CLI::App& app, int& value);

// The text `id` adds after `prev` (prev < 0: at the start), as a streamed reply shows it: decoded alone, a
// SentencePiece token would lose its leading space.
std::string token_piece(const Tokenizer& tok, int32_t prev, int32_t id);

// The tokenizer of a model path, or nullptr when the path holds none (a checkpoint without
// tokenizer files). A tokenizer that exists but is malformed still throws.
std::unique_ptr<Tokenizer> load_tokenizer_if_any(const std::string& model_path);

// Parses "1,2,3" into ids; throws kiln::Error on anything else.
std::vector<int32_t> parse_id_list(const std::string& text);

// Checks `--device` and returns it: cpu, or cuda when this build has the CUDA backend and a GPU is present
// (otherwise a one-line error saying which is missing).
Device check_device(const std::string& device);
// The GPU number of `--device cuda:N` (0 for cuda and cpu); throws kiln::Error for a malformed one.
int device_ordinal(const std::string& device);

// The text of a `--chat-template` file; throws kiln::Error naming it when it cannot be read.
std::string read_chat_template(const std::string& path);

// `--dtype` of generate/chat/serve: what the CUDA backend computes in. "auto" (f16, or bf16 when a weight is outside
// the f16 range), "bf16" or "f16"; anything else, or a type other than auto with --device cpu (which
// computes in f32), is a one-line kiln::Error.
std::optional<DType> parse_compute_dtype(const std::string& dtype, Device device);
// --kv-cache-dtype: the option, its help and the accepted values (auto, fp8), on every verb that loads a model.
void add_kv_cache_dtype_option(CLI::App& app, std::string& value);
// What a loaded model's forward pass computes in: f32 on the CPU backend, the CUDA backend's bf16 or f16.
std::string compute_dtype(const Model& model);

// The ids that end generation: the tokenizer's eos ids and the model config's.
std::vector<int32_t> stop_ids(const Tokenizer* tokenizer, const ModelConfig& config);

}  // namespace kiln::cli
