// config.json fields shared by the families: typed access, rope, activations and the Llama-like fields.
#include <fmt/format.h>

#include <cmath>

#include "kiln/error.h"
#include "model/families/family.h"

namespace kiln::hf {
namespace {

using nlohmann::json;

const json* field(const json& j, const char* key) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}

int64_t as_int(const json& v, const char* key, const std::string& path) {
  if (v.is_number_integer() || v.is_number_unsigned()) return v.get<int64_t>();
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (std::floor(d) == d && std::abs(d) < 9e15) return static_cast<int64_t>(d);
  }
  KILN_THROW("{}: field '{}' must be an integer, found {}", path, key, v.dump());
}

double as_float(const json& v, const char* key, const std::string& path) {
  KILN_CHECK(v.is_number(), "{}: field '{}' must be a number, found {}", path, key, v.dump());
  return v.get<double>();
}

DType parse_dtype(const json& j) {
  const json* d = field(j, "torch_dtype");
  if (!d) d = field(j, "dtype");
  if (!d || !d->is_string()) return DType::F32;
  const std::string s = d->get<std::string>();
  if (s == "bfloat16") return DType::BF16;
  if (s == "float16") return DType::F16;
  return DType::F32;
}

}  // namespace

// rope_theta and scaling: HF 4.x writes `rope_theta` and `rope_scaling` at the top level, HF 5.x a
// `rope_parameters` object holding rope_type, rope_theta and the scaling fields.
void parse_rope(const json& j, const std::string& path, ModelConfig& c, double default_partial) {
  const json* params = field(j, "rope_parameters");
  const json* scaling = field(j, "rope_scaling");
  if (params && !params->is_object()) KILN_THROW("{}: field 'rope_parameters' must be an object", path);
  if (scaling && !scaling->is_object()) KILN_THROW("{}: field 'rope_scaling' must be an object", path);
  c.rope.theta = 10000.0;
  if (const json* t = field(j, "rope_theta")) c.rope.theta = as_float(*t, "rope_theta", path);
  else if (params && field(*params, "rope_theta")) c.rope.theta = as_float((*params)["rope_theta"], "rope_parameters.rope_theta", path);
  KILN_CHECK(c.rope.theta > 0, "{}: rope_theta must be positive, found {}", path, c.rope.theta);

  const json* s = scaling ? scaling : params;
  const char* where = scaling ? "rope_scaling" : "rope_parameters";
  std::string type = "default";
  if (s) {
    if (const json* t = field(*s, "rope_type")) type = t->get<std::string>();
    else if (const json* t2 = field(*s, "type")) type = t2->get<std::string>();
  }
  auto need = [&](const char* key) {
    const json* v = s ? field(*s, key) : nullptr;
    KILN_CHECK(v != nullptr, "{}: {} of type '{}' needs field '{}'", path, where, type, key);
    return as_float(*v, key, path);
  };
  if (type == "default") {
    c.rope.scaling = RopeScaling::None;
  } else if (type == "linear") {
    c.rope.scaling = RopeScaling::Linear;
    c.rope.factor = need("factor");
  } else if (type == "llama3") {
    c.rope.scaling = RopeScaling::Llama3;
    c.rope.factor = need("factor");
    c.rope.low_freq_factor = need("low_freq_factor");
    c.rope.high_freq_factor = need("high_freq_factor");
    c.rope.original_max_position = static_cast<int64_t>(need("original_max_position_embeddings"));
    KILN_CHECK(c.rope.high_freq_factor > c.rope.low_freq_factor,
               "{}: {}: high_freq_factor ({}) must exceed low_freq_factor ({})", path, where,
               c.rope.high_freq_factor, c.rope.low_freq_factor);
  } else {
    KILN_THROW("{}: {}.rope_type '{}' is not supported (supported: default, linear, llama3)", path, where, type);
  }
  if (c.rope.scaling != RopeScaling::None)
    KILN_CHECK(c.rope.factor > 0, "{}: {}.factor must be positive, found {}", path, where, c.rope.factor);

  double partial = default_partial;
  if (const json* p = field(j, "partial_rotary_factor")) partial = as_float(*p, "partial_rotary_factor", path);
  else if (params && field(*params, "partial_rotary_factor"))
    partial = as_float((*params)["partial_rotary_factor"], "rope_parameters.partial_rotary_factor", path);
  KILN_CHECK(partial > 0 && partial <= 1, "{}: partial_rotary_factor must be in (0, 1], found {}", path, partial);
  c.rope.rotary_dim = static_cast<int64_t>(static_cast<double>(c.head_dim) * partial);
  KILN_CHECK(c.rope.rotary_dim > 0 && c.rope.rotary_dim % 2 == 0,
             "{}: rotary dimension {} (head_dim {} x partial_rotary_factor {}) must be positive and even", path,
             c.rope.rotary_dim, c.head_dim, partial);
}

ActKind parse_activation(const std::string& name, const char* key, const std::string& path) {
  if (name == "silu" || name == "swish") return ActKind::SiLU;
  if (name == "gelu_pytorch_tanh" || name == "gelu_new" || name == "gelu_fast") return ActKind::GeluTanh;
  if (name == "gelu") return ActKind::GeluErf;
  KILN_THROW("{}: {} '{}' is not supported (supported: silu, gelu, gelu_new, gelu_fast, gelu_pytorch_tanh)", path, key,
             name);
}

ActKind get_activation(const json& j, const char* key, const std::string& path, const char* def) {
  const json* v = field(j, key);
  return parse_activation(v && v->is_string() ? v->get<std::string>() : def, key, path);
}

bool has_field(const json& j, const char* key) { return field(j, key) != nullptr; }

int64_t get_int_any(const json& j, std::initializer_list<const char*> keys, const std::string& path) {
  for (const char* k : keys)
    if (const json* v = field(j, k)) return as_int(*v, k, path);
  KILN_THROW("{}: missing field '{}'", path, *keys.begin());
}

int64_t get_int_any(const json& j, std::initializer_list<const char*> keys, const std::string& path, int64_t def) {
  for (const char* k : keys)
    if (const json* v = field(j, k)) return as_int(*v, k, path);
  return def;
}

void parse_common(const json& j, const std::string& path, ModelConfig& c, bool tie) {
  c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", path, tie);
  c.checkpoint_dtype = parse_dtype(j);
  c.bos_token_id = get_int(j, "bos_token_id", path, -1);
  c.eos_token_ids.clear();
  if (const json* e = field(j, "eos_token_id")) {
    if (e->is_array()) {
      for (const json& v : *e) c.eos_token_ids.push_back(as_int(v, "eos_token_id", path));
    } else {
      c.eos_token_ids.push_back(as_int(*e, "eos_token_id", path));
    }
  }
}

int64_t get_int(const json& j, const char* key, const std::string& path) {
  const json* v = field(j, key);
  KILN_CHECK(v != nullptr, "{}: missing field '{}'", path, key);
  return as_int(*v, key, path);
}

int64_t get_int(const json& j, const char* key, const std::string& path, int64_t def) {
  const json* v = field(j, key);
  return v ? as_int(*v, key, path) : def;
}

double get_float(const json& j, const char* key, const std::string& path, double def) {
  const json* v = field(j, key);
  return v ? as_float(*v, key, path) : def;
}

bool get_bool(const json& j, const char* key, const std::string& path, bool def) {
  const json* v = field(j, key);
  if (!v) return def;
  KILN_CHECK(v->is_boolean(), "{}: field '{}' must be true or false, found {}", path, key, v->dump());
  return v->get<bool>();
}

ModelConfig parse_llama_like(const json& j, const std::string& path, const std::string& family) {
  KILN_CHECK(j.is_object(), "{}: not a JSON object", path);
  ModelConfig c;
  c.family = family;
  c.vocab_size = get_int(j, "vocab_size", path);
  c.hidden_size = get_int(j, "hidden_size", path);
  c.intermediate_size = get_int(j, "intermediate_size", path);
  c.num_layers = get_int(j, "num_hidden_layers", path);
  c.num_heads = get_int(j, "num_attention_heads", path);
  c.num_kv_heads = get_int(j, "num_key_value_heads", path, c.num_heads);
  KILN_CHECK(c.vocab_size > 0 && c.hidden_size > 0 && c.intermediate_size > 0 && c.num_layers > 0 &&
                 c.num_heads > 0 && c.num_kv_heads > 0,
             "{}: vocab_size, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads and "
             "num_key_value_heads must be positive",
             path);
  KILN_CHECK(c.num_heads % c.num_kv_heads == 0,
             "{}: num_attention_heads ({}) must be a multiple of num_key_value_heads ({})", path, c.num_heads,
             c.num_kv_heads);
  c.head_dim = get_int(j, "head_dim", path, 0);
  if (c.head_dim == 0) {
    KILN_CHECK(c.hidden_size % c.num_heads == 0,
               "{}: hidden_size ({}) is not a multiple of num_attention_heads ({}) and head_dim is not given", path,
               c.hidden_size, c.num_heads);
    c.head_dim = c.hidden_size / c.num_heads;
  }
  KILN_CHECK(c.head_dim > 0, "{}: head_dim must be positive", path);
  c.max_position_embeddings = get_int(j, "max_position_embeddings", path, 0);
  c.norm = NormKind::RMSNorm;
  c.norm_eps = get_float(j, "rms_norm_eps", path, 1e-6);
  c.act = get_activation(j, "hidden_act", path, "silu");
  c.gated_mlp = true;
  parse_rope(j, path, c);
  parse_common(j, path, c, false);
  return c;
}

ModelConfig parse_gpt_like(const json& j, const std::string& path, const std::string& family, const GptFields& fields) {
  KILN_CHECK(j.is_object(), "{}: not a JSON object", path);
  ModelConfig c;
  c.family = family;
  c.vocab_size = get_int(j, "vocab_size", path);
  c.hidden_size = get_int_any(j, fields.hidden, path);
  c.num_layers = get_int_any(j, fields.layers, path);
  c.num_heads = get_int_any(j, fields.heads, path);
  const char *hidden = *fields.hidden.begin(), *heads = *fields.heads.begin();
  KILN_CHECK(c.vocab_size > 0 && c.hidden_size > 0 && c.num_layers > 0 && c.num_heads > 0,
             "{}: vocab_size, {}, {} and {} must be positive", path, hidden, *fields.layers.begin(), heads);
  KILN_CHECK(c.hidden_size % c.num_heads == 0, "{}: {} ({}) is not a multiple of {} ({})", path, hidden,
             c.hidden_size, heads, c.num_heads);
  c.num_kv_heads = c.num_heads;
  c.head_dim = c.hidden_size / c.num_heads;
  c.norm = NormKind::LayerNorm;
  c.norm_eps = get_float(j, fields.norm_eps, path, 1e-5);
  c.gated_mlp = false;
  parse_common(j, path, c, fields.tie);
  return c;
}

void parse_sliding_window(const json& j, const std::string& path, ModelConfig& c, int64_t window) {
  KILN_CHECK(window >= 0, "{}: sliding_window must not be negative", path);
  c.sliding_window = window;
  c.layer_sliding_window.clear();
  const json* types = field(j, "layer_types");
  if (!types) return;
  KILN_CHECK(types->is_array() && static_cast<int64_t>(types->size()) == c.num_layers,
             "{}: layer_types must be a list of num_hidden_layers ({}) entries", path, c.num_layers);
  for (const json& t : *types) {
    const std::string s = t.is_string() ? t.get<std::string>() : t.dump();
    if (s == "full_attention") {
      c.layer_sliding_window.push_back(0);
    } else if (s == "sliding_attention") {
      c.layer_sliding_window.push_back(window);
    } else {
      KILN_THROW("{}: layer_types entry '{}' is not supported (supported: full_attention, sliding_attention)", path, s);
    }
  }
}

ModelConfig parse_mistral_like(const json& j, const std::string& path, const std::string& family) {
  ModelConfig c = parse_llama_like(j, path, family);
  parse_sliding_window(j, path, c, get_int(j, "sliding_window", path, 0));
  return c;
}

}  // namespace kiln::hf
