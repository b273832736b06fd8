// llama2.c checkpoints: 7 int32 header fields, then fp32 weights grouped by kind across layers.
#include <fmt/format.h>

#include <cstring>
#include <map>

#include "core/mapped_file.h"
#include "kiln/error.h"
#include "model/loaders.h"
#include "model/weights.h"
#include "model/loaders.h"
#include "model/weights.h"

namespace kiln {
namespace {

struct Header {
  int32_t dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
};

class Llama2cSource final : public WeightSource {
 public:
  Llama2cSource(const std::string& path, const MappedFile& file, const Header& hd) : path_(path), file_(file) {
    const int64_t dim = hd.dim, hidden = hd.hidden_dim, L = hd.n_layers;
    const int64_t head = dim / hd.n_heads, kv_dim = head * hd.n_kv_heads;
    const int64_t vocab = hd.vocab_size < 0 ? -static_cast<int64_t>(hd.vocab_size) : hd.vocab_size;
    size_t off = sizeof(Header);
    auto global = [&](WeightRole r, const char* name, Shape shape) {
      entries_[{r, 0}] = {name, off, shape};
      off += static_cast<size_t>(shape_numel(shape)) * sizeof(float);
    };
    auto per_layer = [&](WeightRole r, const char* name, Shape shape) {
      for (int64_t l = 0; l < L; ++l) {
        entries_[{r, l}] = {fmt::format("{}[{}]", name, l), off, shape};
        off += static_cast<size_t>(shape_numel(shape)) * sizeof(float);
      }
    };
    // The order of llama2.c's export (and of run.c's memory_map_weights).
    global(WeightRole::Embed, "token_embedding_table", {vocab, dim});
    per_layer(WeightRole::AttnNorm, "rms_att_weight", {dim});
    per_layer(WeightRole::Q, "wq", {dim, dim});
    per_layer(WeightRole::K, "wk", {kv_dim, dim});
    per_layer(WeightRole::V, "wv", {kv_dim, dim});
    per_layer(WeightRole::O, "wo", {dim, dim});
    per_layer(WeightRole::MlpNorm, "rms_ffn_weight", {dim});
    per_layer(WeightRole::Gate, "w1", {hidden, dim});
    per_layer(WeightRole::Down, "w2", {dim, hidden});
    per_layer(WeightRole::Up, "w3", {hidden, dim});
    global(WeightRole::FinalNorm, "rms_final_weight", {dim});
    off += static_cast<size_t>(hd.seq_len) * static_cast<size_t>(head / 2) * 2 * sizeof(float);  // freq_cis_real/imag
    if (hd.vocab_size < 0) global(WeightRole::LmHead, "wcls", {vocab, dim});
    expected_size_ = off;
  }

  size_t expected_size() const { return expected_size_; }
  std::string path() const override { return path_; }
  std::string name(WeightRole role, int64_t layer) const override {
    const auto it = entries_.find(key(role, layer));
    return it == entries_.end() ? std::string("(none)") : it->second.name;
  }
  bool has(WeightRole role, int64_t layer) const override { return entries_.count(key(role, layer)) != 0; }
  StoredTensor read(WeightRole role, int64_t layer, const Shape& shape) const override {
    const auto it = entries_.find(key(role, layer));
    KILN_CHECK(it != entries_.end(), "{}: llama2.c checkpoints have no tensor for this role", path_);
    const Entry& e = it->second;
    KILN_CHECK(e.shape == shape, "{}: tensor '{}' has shape {}, expected {}", path_, e.name, shape_str(e.shape),
               shape_str(shape));
    const auto* p = reinterpret_cast<const uint8_t*>(file_.data()) + e.offset;
    return {DType::F32, shape, std::vector<uint8_t>(p, p + static_cast<size_t>(shape_numel(shape)) * sizeof(float))};
  }

 private:
  struct Entry {
    std::string name;
    size_t offset = 0;
    Shape shape;
  };
  static std::pair<WeightRole, int64_t> key(WeightRole role, int64_t layer) {
    switch (role) {
      case WeightRole::Embed:
      case WeightRole::FinalNorm:
      case WeightRole::LmHead:
        return {role, 0};
      default:
        return {role, layer};
    }
  }
  std::string path_;
  const MappedFile& file_;
  std::map<std::pair<WeightRole, int64_t>, Entry> entries_;
  size_t expected_size_ = 0;
};

}  // namespace

std::unique_ptr<Model> load_llama2c(const std::string& path, const LoadOptions& options) {
  MappedFile file(path);
  KILN_CHECK(file.size() >= sizeof(Header), "{}: {} bytes is too small for a llama2.c checkpoint header", path,
             file.size());
  uint32_t magic;
  std::memcpy(&magic, file.data(), sizeof(magic));
  KILN_CHECK(magic != 0x616b3432u,
             "{}: a versioned llama2.c export (magic 'ak42'); only the legacy format (version 0) is supported", path);
  Header h;
  std::memcpy(&h, file.data(), sizeof(h));
  KILN_CHECK(h.dim > 0 && h.hidden_dim > 0 && h.n_layers > 0 && h.n_heads > 0 && h.n_kv_heads > 0 &&
                 h.vocab_size != 0 && h.seq_len > 0,
             "{}: not a llama2.c checkpoint: header (dim {}, hidden_dim {}, n_layers {}, n_heads {}, n_kv_heads {}, "
             "vocab_size {}, seq_len {}) has non-positive sizes",
             path, h.dim, h.hidden_dim, h.n_layers, h.n_heads, h.n_kv_heads, h.vocab_size, h.seq_len);
  KILN_CHECK(h.dim % h.n_heads == 0 && h.n_heads % h.n_kv_heads == 0 && (h.dim / h.n_heads) % 2 == 0,
             "{}: not a llama2.c checkpoint: dim {} with {} heads and {} KV heads is not a valid split", path, h.dim,
             h.n_heads, h.n_kv_heads);
  Llama2cSource src(path, file, h);
  KILN_CHECK(file.size() == src.expected_size(),
             "{}: size {} bytes does not match a llama2.c checkpoint with dim {}, hidden_dim {}, {} layers, {} heads, "
             "{} KV heads, vocab {}, seq_len {} ({} bytes expected)",
             path, file.size(), h.dim, h.hidden_dim, h.n_layers, h.n_heads, h.n_kv_heads, h.vocab_size, h.seq_len,
             src.expected_size());

  ModelConfig c;
  c.architecture = "llama2.c";
  c.family = "llama";
  c.vocab_size = h.vocab_size < 0 ? -static_cast<int64_t>(h.vocab_size) : h.vocab_size;
  c.hidden_size = h.dim;
  c.intermediate_size = h.hidden_dim;
  c.num_layers = h.n_layers;
  c.num_heads = h.n_heads;
  c.num_kv_heads = h.n_kv_heads;
  c.head_dim = h.dim / h.n_heads;
  c.max_position_embeddings = h.seq_len;
  c.norm = NormKind::RMSNorm;
  c.norm_eps = 1e-5;
  c.act = ActKind::SiLU;
  c.gated_mlp = true;
  c.rope.theta = 10000.0;
  c.rope.rotary_dim = c.head_dim;
  c.rope.interleaved = true;  // run.c rotates (2i, 2i+1) pairs; the export keeps Meta's row order
  c.tie_word_embeddings = h.vocab_size > 0;
  c.checkpoint_dtype = DType::F32;
  c.checkpoint_storage = "f32 (llama2.c)";
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  return make_decoder_model(std::move(c), src, options);
}

}  // namespace kiln
