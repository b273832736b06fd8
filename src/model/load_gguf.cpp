// GGUF files of architecture "llama": llama.* metadata, blk.N.* tensors, q/k rows restored to HF order.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <map>

#include "io/gguf.h"
#include "kiln/error.h"
#include "model/families/family.h"
#include "model/loaders.h"
#include "model/weights.h"

namespace kiln {
namespace {

std::string gguf_llama_name(WeightRole role, int64_t layer) { return tensor_name(gguf_llama_tensors(), role, layer); }

class GgufSource final : public WeightSource {
 public:
  GgufSource(const io::GgufFile& file, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim)
      : file_(file), n_heads_(n_heads), n_kv_heads_(n_kv_heads), head_dim_(head_dim) {}
  std::string path() const override { return file_.path(); }
  std::string name(WeightRole role, int64_t layer) const override { return gguf_llama_name(role, layer); }
  bool has(WeightRole role, int64_t layer) const override {
    return file_.find_tensor(name(role, layer)) != nullptr;
  }
  StoredTensor read(WeightRole role, int64_t layer, const Shape& shape) const override {
    const std::string n = name(role, layer);
    const io::GgufTensorInfo* t = file_.find_tensor(n);
    KILN_CHECK(t != nullptr, "{}: missing tensor '{}'", file_.path(), n);
    const Shape got = t->shape();
    KILN_CHECK(got == shape, "{}: tensor '{}' has shape {}, expected {}", file_.path(), n, shape_str(got),
               shape_str(shape));
    StoredTensor out;
    out.dtype = file_.tensor_dtype(*t);
    out.shape = shape;
    const bool is_q = role == WeightRole::Q || role == WeightRole::QBias;
    const bool is_k = role == WeightRole::K || role == WeightRole::KBias;
    if (!is_q && !is_k) {
      out.bytes.assign(t->data, t->data + t->nbytes);
      return out;
    }
    // llama.cpp's converter reorders each head's rows from HF's half-split RoPE order to interleaved
    // pairs: GGUF row 2i + s holds HF row s * head_dim/2 + i. Undo it so the half-split RoPE applies (whole rows
    // move, so block-quantized rows move as they are).
    const int64_t heads = is_q ? n_heads_ : n_kv_heads_;
    const int64_t cols = shape.size() == 2 ? shape[1] : 1;
    const int64_t half = head_dim_ / 2;
    KILN_CHECK(shape[0] == heads * head_dim_, "{}: tensor '{}' has {} rows, expected {} heads of {}", file_.path(), n,
               shape[0], heads, head_dim_);
    const size_t row = dtype_bytes(out.dtype, cols);
    out.bytes.resize(t->nbytes);
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < half; ++i)
        for (int64_t s = 0; s < 2; ++s) {
          const int64_t hf_row = h * head_dim_ + s * half + i;
          const int64_t gguf_row = h * head_dim_ + 2 * i + s;
          std::memcpy(out.bytes.data() + hf_row * row, t->data + gguf_row * row, row);
        }
    return out;
  }

 private:
  const io::GgufFile& file_;
  int64_t n_heads_, n_kv_heads_, head_dim_;
};

}  // namespace

std::unique_ptr<Model> load_gguf(const std::string& path, const LoadOptions& options) {
  const io::GgufFile g(path);
  const std::string arch = g.get_string("general.architecture");
  KILN_CHECK(arch == "llama", "{}: GGUF architecture '{}' (general.architecture) is not supported; supported: llama",
             path, arch);
  const std::string p = "llama.";
  ModelConfig c;
  c.architecture = arch;
  c.family = "llama";
  c.hidden_size = g.get_int(p + "embedding_length");
  c.num_layers = g.get_int(p + "block_count");
  c.intermediate_size = g.get_int(p + "feed_forward_length");
  c.num_heads = g.get_int(p + "attention.head_count");
  c.num_kv_heads = g.get_int(p + "attention.head_count_kv", c.num_heads);
  KILN_CHECK(c.hidden_size > 0 && c.num_layers > 0 && c.intermediate_size > 0 && c.num_heads > 0 &&
                 c.num_kv_heads > 0,
             "{}: llama.embedding_length, block_count, feed_forward_length and attention.head_count(_kv) must be "
             "positive",
             path);
  c.head_dim = g.get_int(p + "attention.key_length", 0);
  if (c.head_dim == 0) {
    KILN_CHECK(c.hidden_size % c.num_heads == 0, "{}: embedding_length {} is not a multiple of head_count {}", path,
               c.hidden_size, c.num_heads);
    c.head_dim = c.hidden_size / c.num_heads;
  }
  c.max_position_embeddings = g.get_int(p + "context_length", 0);
  c.norm = NormKind::RMSNorm;
  c.norm_eps = g.get_float(p + "attention.layer_norm_rms_epsilon", 1e-5);
  c.act = ActKind::SiLU;
  c.gated_mlp = true;
  c.rope.theta = g.get_float(p + "rope.freq_base", 10000.0);
  c.rope.rotary_dim = g.get_int(p + "rope.dimension_count", c.head_dim);
  const std::string scaling = g.get_string(p + "rope.scaling.type", "none");
  if (scaling == "linear") {
    c.rope.scaling = RopeScaling::Linear;
    c.rope.factor = g.get_float(p + "rope.scaling.factor");
  } else {
    KILN_CHECK(scaling == "none", "{}: llama.rope.scaling.type '{}' is not supported (supported: none, linear)", path,
               scaling);
  }
  if (const io::GgufTensorInfo* ff = g.find_tensor("rope_freqs.weight")) {
    const std::vector<float> f = g.dequantize(*ff);
    c.rope.freq_factors.assign(f.begin(), f.end());
  }

  const io::GgufTensorInfo* embd = g.find_tensor("token_embd.weight");
  KILN_CHECK(embd != nullptr, "{}: missing tensor 'token_embd.weight'", path);
  const Shape embd_shape = embd->shape();
  if (g.has(p + "vocab_size")) {
    c.vocab_size = g.get_int(p + "vocab_size");
  } else if (embd_shape.size() == 2) {
    c.vocab_size = embd_shape[0];
  } else {
    c.vocab_size = static_cast<int64_t>(g.get_string_array("tokenizer.ggml.tokens").size());
  }
  c.checkpoint_dtype = io::ggml_type_dtype(embd->type).value_or(DType::F32);
  {
    std::map<std::string, int> counts;
    for (const io::GgufTensorInfo& t : g.tensors()) counts[io::ggml_type_name(t.type)]++;
    for (const auto& [name, n] : counts)
      c.checkpoint_storage += fmt::format("{}{} x{}", c.checkpoint_storage.empty() ? "" : ", ", name, n);
  }
  c.tie_word_embeddings = g.find_tensor("output.weight") == nullptr;
  c.bos_token_id = g.get_int("tokenizer.ggml.bos_token_id", -1);
  if (g.has("tokenizer.ggml.eos_token_id")) c.eos_token_ids = {g.get_int("tokenizer.ggml.eos_token_id")};

  const GgufSource src(g, c.num_heads, c.num_kv_heads, c.head_dim);
  return make_decoder_model(std::move(c), src, options);
}

}  // namespace kiln
