// Shared CLI helpers.
#include "cli/common.h"

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/thread_pool.h"
#include "kiln/error.h"
#ifdef KILN_HAVE_CUDA
#include "kernels/cuda/cuda_ops.h"
#endif

namespace kiln::cli {

namespace fs = std::filesystem;

std::string default_model_path() {
  fs::path dir;
  if (const char* c = std::getenv("KILN_CACHE_DIR"); c && *c) {
    dir = c;
  } else if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) {
    dir = fs::path(x) / "kiln";
  } else if (const char* h = std::getenv("HOME"); h && *h) {
    dir = fs::path(h) / ".cache" / "kiln";
  } else {
    dir = fs::path(".cache") / "kiln";
  }
  return (dir / "SmolLM2-135M-Instruct.Q4_1.gguf").string();
}

std::string resolve_model_path(const std::string& flag_value) {
  if (!flag_value.empty()) return flag_value;
  const std::string p = default_model_path();
  KILN_CHECK(fs::exists(p), "no --model given and the default model {} is absent; fetch it with scripts/fetch-default-model.sh",
             p);
  return p;
}

void set_num_threads(int n) {
  KILN_CHECK(n >= 0, "--threads must be >= 0 (0: one per hardware thread), got {}", n);
  ThreadPool::set_global_threads(n);
}

void add_threads_option(CLI::App& app, int& value) {
  app.add_option("--threads", value, "CPU threads (0: one per hardware thread)")->capture_default_str();
}

std::string token_piece(const Tokenizer& tok, int32_t prev, int32_t id) {
  const int32_t one[1] = {id};
  if (prev < 0) return tok.decode(one, /*skip_special=*/false);
  const int32_t ctx[1] = {prev};
  const int32_t both[2] = {prev, id};
  const std::string a = tok.decode(ctx, false);
  const std::string b = tok.decode(both, false);
  if (b.size() >= a.size() && b.compare(0, a.size(), a) == 0) return b.substr(a.size());
  return tok.decode(one, false);
}

std::unique_ptr<Tokenizer> load_tokenizer_if_any(const std::string& model_path) {
  const fs::path p(model_path);
  if (fs::is_directory(p)) {
    if (!fs::exists(p / "tokenizer.json")) return nullptr;
    return Tokenizer::from_path(model_path);
  }
  if (p.extension() == ".gguf") {
    auto tok = Tokenizer::from_path(model_path);
    return tok;
  }
  if (p.extension() == ".bin") {
    // llama2.c models keep their tokenizer beside them: tokenizer.bin, or tok<N>.bin for vocab N.
    for (const auto& entry : fs::directory_iterator(p.parent_path().empty() ? fs::path(".") : p.parent_path())) {
      const std::string name = entry.path().filename().string();
      if (entry.path() != p && (name == "tokenizer.bin" || (name.rfind("tok", 0) == 0 && entry.path().extension() == ".bin")))
        return Tokenizer::from_path(entry.path().string());
    }
  }
  return nullptr;
}

std::vector<int32_t> parse_id_list(const std::string& text) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find(',', pos);
    if (end == std::string::npos) end = text.size();
    std::string item = text.substr(pos, end - pos);
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    int32_t v = 0;
    auto [ptr, ec] = std::from_chars(item.data(), item.data() + item.size(), v);
    KILN_CHECK(!item.empty() && ec == std::errc() && ptr == item.data() + item.size() && v >= 0,
               "--prompt-ids: '{}' is not a non-negative token id", item);
    ids.push_back(v);
    pos = end + 1;
  }
  return ids;
}

int device_ordinal(const std::string& device) {
  if (device.rfind("cuda:", 0) != 0) return 0;
  const std::string n = device.substr(5);
  int v = -1;
  auto [ptr, ec] = std::from_chars(n.data(), n.data() + n.size(), v);
  KILN_CHECK(!n.empty() && ec == std::errc() && ptr == n.data() + n.size() && v >= 0,
             "--device: '{}' is not cuda:N with N a GPU number", device);
  return v;
}

Device check_device(const std::string& device) {
  KILN_CHECK(device == "cpu" || device == "cuda" || device.rfind("cuda:", 0) == 0,
             "--device must be cpu, cuda or cuda:N, got '{}'", device);
  if (device == "cpu") return Device::CPU;
  const int ordinal = device_ordinal(device);
#ifdef KILN_HAVE_CUDA
  const int n = cuda::device_count();
  KILN_CHECK(n > 0, "--device {}: the CUDA backend found no GPU (no device or driver visible); use --device cpu",
             device);
  KILN_CHECK(ordinal < n, "--device {}: there is no GPU {} ({} visible)", device, ordinal, n);
  return Device::CUDA;
#else
  (void)ordinal;
  KILN_THROW("--device {}: this kiln was built without the CUDA backend (no nvcc when configured); use --device cpu",
             device);
#endif
}

std::string compute_dtype(const Model& model) { return std::string(dtype_name(model.compute_dtype())); }

std::optional<DType> parse_compute_dtype(const std::string& dtype, Device device) {
  KILN_CHECK(dtype == "auto" || dtype == "bf16" || dtype == "f16", "--dtype must be auto, bf16 or f16, got '{}'",
             dtype);
  if (dtype == "auto") return std::nullopt;
  KILN_CHECK(device == Device::CUDA, "--dtype {} applies to --device cuda; the CPU backend computes in f32", dtype);
  return dtype == "bf16" ? DType::BF16 : DType::F16;
}

void add_kv_cache_dtype_option(CLI::App& app, std::string& value) {
  app.add_option("--kv-cache-dtype", value,
                 "KV cache storage: auto (the compute type; f32 on the CPU) or fp8 (e4m3, one byte per value, no "
                 "scale: twice the tokens per byte, half the bytes decode attention reads; the CPU backend stores the "
                 "same rounded values in f32)")
      ->check(CLI::IsMember({"auto", "fp8"}))
      ->capture_default_str();
}

std::vector<int32_t> stop_ids(const Tokenizer* tokenizer, const ModelConfig& config) {
  std::vector<int32_t> ids;
  if (tokenizer) ids = tokenizer->eos_ids();
  for (int64_t e : config.eos_token_ids) ids.push_back(static_cast<int32_t>(e));
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

std::string read_chat_template(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  KILN_CHECK(f.good(), "--chat-template: cannot read {}", path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace kiln::cli
