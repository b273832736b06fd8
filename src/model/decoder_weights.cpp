// The decoder's weights: the role list of a config (the only one), reading and fusing, quantization at load,
// placement through the backend.
#include "model/decoder_weights.h"

#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <cstring>

#include "core/thread_pool.h"
#include "kiln/error.h"

namespace kiln {

std::vector<float> StoredTensor::to_f32() const {
  std::vector<float> v(static_cast<size_t>(numel()));
  if (!v.empty()) convert_to_f32(dtype, bytes.data(), v.data(), v.size());
  return v;
}

void WeightSource::read_f32(WeightRole role, int64_t layer, const Shape& shape, float* dst) const {
  const StoredTensor t = read(role, layer, shape);
  convert_to_f32(t.dtype, t.bytes.data(), dst, static_cast<size_t>(t.numel()));
}

Linear WeightPlacer::place_linear_formula(const std::vector<std::pair<WeightFormula, int64_t>>&, int64_t,
                                          std::vector<float>&&, const std::string& name, LinearRole) {
  KILN_THROW("{}: this backend does not compute weights from formulas", name);
}

void check_decoder_config(ModelConfig& c, const std::string& path) {
  KILN_CHECK(c.vocab_size > 0 && c.hidden_size > 0 && c.intermediate_size > 0 && c.num_layers > 0 &&
                 c.num_heads > 0 && c.num_kv_heads > 0 && c.head_dim > 0,
             "{}: model sizes must be positive", path);
  KILN_CHECK(c.num_heads % c.num_kv_heads == 0, "{}: {} attention heads are not a multiple of {} KV heads", path,
             c.num_heads, c.num_kv_heads);
  if (c.rope.rotary_dim == 0) c.rope.rotary_dim = c.head_dim;
  KILN_CHECK(c.rope.rotary_dim > 0 && c.rope.rotary_dim <= c.head_dim && c.rope.rotary_dim % 2 == 0,
             "{}: rotary dimension {} must be even and at most head_dim {}", path, c.rope.rotary_dim, c.head_dim);
  KILN_CHECK(c.layer_sliding_window.empty() || static_cast<int64_t>(c.layer_sliding_window.size()) == c.num_layers,
             "{}: {} per-layer windows for {} layers", path, c.layer_sliding_window.size(), c.num_layers);
  KILN_CHECK(c.norm_layout != NormLayout::Shared || c.parallel_residual,
             "{}: one norm shared by attention and MLP needs a parallel residual", path);
  KILN_CHECK(c.norm_layout != NormLayout::PrePost || !c.parallel_residual,
             "{}: post-norms with a parallel residual are not supported", path);
  KILN_CHECK(c.position != PositionKind::Learned || c.max_position_embeddings > 0,
             "{}: learned positions need max_position_embeddings > 0", path);
}

std::optional<LinearFormat> quantized_format(Quantization q) {
  LinearFormat f;
  switch (q) {
    case Quantization::None: return std::nullopt;
    case Quantization::Fp8:
      f.weight = DType::F8E4M3, f.scale = ScaleKind::PerChannel, f.act = ActQuant::Fp8PerToken;
      return f;
    case Quantization::Fp8WeightOnly:
      f.weight = DType::F8E4M3, f.scale = ScaleKind::PerChannel;
      return f;
    case Quantization::Int8WeightOnly:
      f.weight = DType::I8, f.scale = ScaleKind::PerChannel;
      return f;
    case Quantization::Int4WeightOnly:
      f.weight = DType::U4, f.scale = ScaleKind::PerGroup, f.group_size = 128, f.zeros = true;
      return f;
  }
  return std::nullopt;
}

namespace {

// One thing to load, pointing at the field of the ModelWeights being built that receives it.
struct Item {
  enum Kind { LinearItem, VectorItem, HeadNormItem, TableItem } kind = LinearItem;
  std::string name;
  int64_t layer = 0;
  // Linear: the parts stacked by rows (role, rows) over `in` columns, and their biases (same order); layer: a
  // layer's linear (quantized as the options ask), embedding: the table.
  std::vector<std::pair<WeightRole, int64_t>> parts;
  std::vector<WeightRole> bias_roles;
  int64_t in = 0;
  bool quantizable = false;
  LinearRole role = LinearRole::Embedding;
  Linear* linear = nullptr;
  // Vectors and tables: one role and its shape.
  WeightRole vrole = WeightRole::Embed;
  Shape shape;
  VectorKind vkind = VectorKind::Norm;
  const float** vector = nullptr;
  const void** any = nullptr;
};

// The roles of a config, in load order: the only list of them.
std::vector<Item> plan(const ModelConfig& c, bool tied, ModelWeights& w) {
  const int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  const int64_t nq = c.num_heads * hd, nkv = c.num_kv_heads * hd;
  const bool norm_biases = c.norm == NormKind::LayerNorm && c.norm_bias;
  std::vector<Item> items;
  auto linear = [&](std::string name, int64_t layer, std::vector<std::pair<WeightRole, int64_t>> parts,
                    std::vector<WeightRole> biases, int64_t in, Linear* dst, LinearRole role) {
    Item it;
    it.kind = Item::LinearItem;
    it.name = std::move(name);
    it.layer = layer;
    it.parts = std::move(parts);
    it.bias_roles = std::move(biases);
    it.in = in;
    it.linear = dst;
    it.role = role;
    it.quantizable = role != LinearRole::Embedding && role != LinearRole::LmHead;
    items.push_back(std::move(it));
  };
  auto vector = [&](WeightRole role, int64_t layer, int64_t n, VectorKind kind, const float** dst) {
    Item it;
    it.kind = Item::VectorItem;
    it.vrole = role;
    it.layer = layer;
    it.shape = {n};
    it.vkind = kind;
    it.vector = dst;
    items.push_back(std::move(it));
  };
  auto norm = [&](WeightRole wr, WeightRole br, int64_t layer, NormWeights& n) {
    vector(wr, layer, H, VectorKind::Norm, &n.w);
    if (norm_biases) vector(br, layer, H, VectorKind::Bias, &n.b);
  };

  linear("embed", 0, {{WeightRole::Embed, c.vocab_size}}, {}, H, &w.embed, LinearRole::Embedding);
  norm(WeightRole::FinalNorm, WeightRole::FinalNormBias, 0, w.final_norm);
  if (!tied)
    linear("lm_head", 0, {{WeightRole::LmHead, c.vocab_size}},
           c.lm_head_bias ? std::vector<WeightRole>{WeightRole::LmHeadBias} : std::vector<WeightRole>{}, H, &w.lm_head,
           LinearRole::LmHead);
  else if (c.lm_head_bias)
    vector(WeightRole::LmHeadBias, 0, c.vocab_size, VectorKind::Bias, &w.tied_lm_head_bias);  // on the embedding
  if (c.position == PositionKind::Learned) {
    Item it;
    it.kind = Item::TableItem;
    it.vrole = WeightRole::PosEmbed;
    it.shape = {c.max_position_embeddings, H};
    it.any = &w.pos_embed;
    items.push_back(std::move(it));
  }
  if (c.embed_norm) norm(WeightRole::EmbedNorm, WeightRole::EmbedNormBias, 0, w.embed_norm);

  for (int64_t l = 0; l < c.num_layers; ++l) {
    LayerWeights& L = w.layers[static_cast<size_t>(l)];
    const std::string p = fmt::format("layers.{}.", l);
    norm(WeightRole::AttnNorm, WeightRole::AttnNormBias, l, L.attn_norm);
    linear(p + "qkv", l, {{WeightRole::Q, nq}, {WeightRole::K, nkv}, {WeightRole::V, nkv}},
           c.qkv_bias ? std::vector<WeightRole>{WeightRole::QBias, WeightRole::KBias, WeightRole::VBias}
                      : std::vector<WeightRole>{},
           H, &L.qkv, LinearRole::Qkv);
    if (c.qk_norm) {
      for (auto [role, dst] : {std::pair{WeightRole::QNorm, &L.q_norm}, std::pair{WeightRole::KNorm, &L.k_norm}}) {
        Item it;
        it.kind = Item::HeadNormItem;
        it.vrole = role;
        it.layer = l;
        it.shape = {hd};
        it.any = dst;
        items.push_back(std::move(it));
      }
    }
    linear(p + "o", l, {{WeightRole::O, H}}, c.o_bias ? std::vector<WeightRole>{WeightRole::OBias} : std::vector<WeightRole>{},
           nq, &L.o, LinearRole::AttnOut);
    if (c.norm_layout != NormLayout::Shared) norm(WeightRole::MlpNorm, WeightRole::MlpNormBias, l, L.mlp_norm);
    if (c.norm_layout == NormLayout::PrePost) {
      norm(WeightRole::PostAttnNorm, WeightRole::PostAttnNormBias, l, L.post_attn_norm);
      norm(WeightRole::PostMlpNorm, WeightRole::PostMlpNormBias, l, L.post_mlp_norm);
    }
    if (c.gated_mlp) {
      linear(p + "gate_up", l, {{WeightRole::Gate, I}, {WeightRole::Up, I}},
             c.mlp_bias ? std::vector<WeightRole>{WeightRole::GateBias, WeightRole::UpBias} : std::vector<WeightRole>{},
             H, &L.w_in, LinearRole::MlpIn);
    } else {
      linear(p + "up", l, {{WeightRole::Up, I}},
             c.mlp_bias ? std::vector<WeightRole>{WeightRole::UpBias} : std::vector<WeightRole>{}, H, &L.w_in,
             LinearRole::MlpIn);
    }
    linear(p + "down", l, {{WeightRole::Down, H}},
           c.mlp_bias ? std::vector<WeightRole>{WeightRole::DownBias} : std::vector<WeightRole>{}, I, &L.down,
           LinearRole::MlpOut);
  }
  return items;
}

// Stacks the parts' rows into one host linear of `keep`'s dtype (converting through f32 where they differ).
HostLinear stack(const std::vector<StoredTensor>& parts, int64_t in, DType keep) {
  HostLinear h;
  h.format.weight = keep;
  h.in = in;
  for (const StoredTensor& t : parts) h.out += t.shape[0];
  const size_t row = dtype_bytes(keep, in);
  h.weight.resize(static_cast<size_t>(h.out) * row);
  uint8_t* dst = h.weight.data();
  for (const StoredTensor& t : parts) {
    const size_t n = static_cast<size_t>(t.numel());
    if (t.dtype == keep) {
      std::memcpy(dst, t.bytes.data(), t.bytes.size());
      dst += t.bytes.size();
      continue;
    }
    KILN_CHECK(dtype_is_float(keep), "linear: cannot convert {} weights to {}", dtype_name(t.dtype), dtype_name(keep));
    const std::vector<float> f = t.to_f32();
    if (keep == DType::F32) {
      std::memcpy(dst, f.data(), n * sizeof(float));
    } else {
      auto* o = reinterpret_cast<uint16_t*>(dst);
      const bool bf = keep == DType::BF16;
      ThreadPool::global().parallel_for(static_cast<int64_t>(n), 1 << 16, [&](int64_t a, int64_t b) {
        for (int64_t i = a; i < b; ++i) o[i] = bf ? f32_to_bf16(f[i]) : f32_to_f16(f[i]);
      });
    }
    dst += dtype_bytes(keep, static_cast<int64_t>(n));
  }
  return h;
}

int64_t linear_bytes(const Linear& l) {
  return l.out * l.row_bytes() + l.num_scales() * static_cast<int64_t>(sizeof(float)) +
         (l.zeros ? l.num_scales() : 0);
}

}  // namespace

ModelWeights load_decoder_weights(ModelConfig& c, const WeightSource& src, const LoadOptions& options,
                                  WeightPlacer& placer, int64_t* num_parameters, std::vector<LinearInfo>* linears) {
  const auto t_start = std::chrono::steady_clock::now();
  const std::string& path = src.path();
  ModelWeights w;
  w.tied = c.tie_word_embeddings || !src.has(WeightRole::LmHead, 0);
  c.tie_word_embeddings = w.tied;
  w.layers.resize(static_cast<size_t>(c.num_layers));
  const std::vector<Item> items = plan(c, w.tied, w);

  // Missing tensors are reported before anything large is read.
  for (const Item& it : items) {
    if (it.kind == Item::LinearItem) {
      for (const auto& [role, rows] : it.parts)
        KILN_CHECK(src.has(role, it.layer), "{}: missing tensor '{}'", path, src.name(role, it.layer));
      for (WeightRole b : it.bias_roles)
        KILN_CHECK(src.has(b, it.layer), "{}: missing tensor '{}'", path, src.name(b, it.layer));
    } else {
      KILN_CHECK(src.has(it.vrole, it.layer), "{}: missing tensor '{}'", path, src.name(it.vrole, it.layer));
    }
  }
  const std::optional<LinearFormat> quant = quantized_format(options.quantization);
  if (quant)
    KILN_CHECK(placer.computes(*quant), "--quantization {}: this backend does not compute {} weights yet",
               quantization_name(options.quantization), format_name(*quant));

  int64_t params = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    const Item& it = items[i];
    switch (it.kind) {
      case Item::LinearItem: {
        // The biases of the parts, stacked (read after the weights, whose errors come first).
        auto read_bias = [&] {
          std::vector<float> bias;
          for (size_t b = 0; b < it.bias_roles.size(); ++b) {
            const int64_t rows = it.parts[b].second;
            const size_t at = bias.size();
            bias.resize(at + static_cast<size_t>(rows));
            src.read_f32(it.bias_roles[b], it.layer, {rows}, bias.data() + at);
          }
          return bias;
        };
        int64_t out = 0;
        for (const auto& [role, rows] : it.parts) out += rows;
        params += out * it.in;
        const bool quantize = it.quantizable && quant.has_value();
        // Random weights on a device that computes them: no host values at all.
        std::vector<std::pair<WeightFormula, int64_t>> formulas;
        if (placer.computes_formulas() && !quantize) {
          for (const auto& [role, rows] : it.parts)
            if (const std::optional<WeightFormula> f = src.formula(role, it.layer)) formulas.emplace_back(*f, rows);
        }
        if (!formulas.empty() && formulas.size() == it.parts.size()) {
          std::vector<float> bias = read_bias();
          params += static_cast<int64_t>(bias.size());
          *it.linear = placer.place_linear_formula(formulas, it.in, std::move(bias), it.name, it.role);
        } else {
          std::vector<StoredTensor> parts;
          for (const auto& [role, rows] : it.parts) parts.push_back(src.read(role, it.layer, {rows, it.in}));
          DType stored = parts[0].dtype;
          for (const StoredTensor& t : parts)
            if (t.dtype != stored) stored = DType::F32;  // mixed types (a GGUF q4_k q with a q6_k v): through f32
          HostLinear h;
          if (quantize) {
            HostLinear f32 = stack(parts, it.in, DType::F32);
            h = quantize_linear(reinterpret_cast<const float*>(f32.weight.data()), f32.out, it.in, *quant);
          } else {
            h = stack(parts, it.in, placer.keep_format(stored).weight);
          }
          h.bias = read_bias();
          params += static_cast<int64_t>(h.bias.size());
          *it.linear = placer.place_linear(std::move(h), it.name, it.role);
        }
        if (linears && it.role != LinearRole::Embedding)
          linears->push_back({it.name, it.linear->out, it.linear->in, format_name(it.linear->format),
                              linear_bytes(*it.linear)});
        break;
      }
      case Item::VectorItem: {
        std::vector<float> v(static_cast<size_t>(shape_numel(it.shape)));
        src.read_f32(it.vrole, it.layer, it.shape, v.data());
        params += static_cast<int64_t>(v.size());
        *it.vector = placer.place_vector(std::move(v), it.vkind);
        break;
      }
      case Item::HeadNormItem: {
        std::vector<float> v(static_cast<size_t>(shape_numel(it.shape)));
        src.read_f32(it.vrole, it.layer, it.shape, v.data());
        params += static_cast<int64_t>(v.size());
        *it.any = placer.place_head_norm(std::move(v));
        break;
      }
      case Item::TableItem: {
        const StoredTensor t = src.read(it.vrole, it.layer, it.shape);
        params += t.numel();
        *it.any = placer.place_table(t);
        break;
      }
    }
    if (options.progress && (i + 1 == items.size() || i % 8 == 0))
      std::fprintf(stderr, "\rkiln: loading %s: %zu/%zu tensors", path.c_str(), i + 1, items.size());
  }
  if (w.tied) {
    w.lm_head = w.embed;
    w.lm_head.bias = w.tied_lm_head_bias;
    w.lm_head.bias_dtype = DType::F32;
  }
  if (options.progress) {
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    std::fprintf(stderr, "\rkiln: loaded %s: %lld parameters in %.2f s%20s\n", path.c_str(),
                 static_cast<long long>(params), secs, "");
  }
  *num_parameters = params;
  return w;
}

const char* quantization_name(Quantization q) {
  switch (q) {
    case Quantization::None: return "none";
    case Quantization::Fp8: return "fp8";
    case Quantization::Fp8WeightOnly: return "fp8-wo";
    case Quantization::Int8WeightOnly: return "int8-wo";
    case Quantization::Int4WeightOnly: return "int4-wo";
  }
  return "none";
}

Quantization parse_quantization(const std::string& name) {
  for (Quantization q : {Quantization::None, Quantization::Fp8, Quantization::Fp8WeightOnly,
                         Quantization::Int8WeightOnly, Quantization::Int4WeightOnly})
    if (name == quantization_name(q)) return q;
  KILN_THROW("unknown quantization '{}' (known: none, fp8, fp8-wo, int8-wo, int4-wo)", name);
}

}  // namespace kiln
