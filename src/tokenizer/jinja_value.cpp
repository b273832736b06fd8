// Jinja values: Python's truthiness, equality, ordering, str()/repr() and json.dumps.
#include "tokenizer/jinja_value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <nlohmann/json.hpp>

#include "tokenizer/unicode.h"

namespace kiln::jinja {

const Value* Dict::find(std::string_view key) const {
  for (const auto& [k, v] : entries)
    if (k == key) return &v;
  return nullptr;
}

void Dict::set(std::string key, Value value) {
  for (auto& [k, v] : entries)
    if (k == key) {
      v = std::move(value);
      return;
    }
  entries.emplace_back(std::move(key), std::move(value));
}

const Value* Args::get(size_t index, std::string_view name) const {
  if (index < positional.size()) return &positional[index];
  for (const auto& [k, v] : keyword)
    if (k == name) return &v;
  return nullptr;
}

namespace {

template <typename J>
Value value_from_json(const J& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null:
      return Value::none();
    case nlohmann::json::value_t::boolean:
      return Value(j.template get<bool>());
    case nlohmann::json::value_t::number_integer:
      return Value(j.template get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: {
      const uint64_t u = j.template get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) return Value(static_cast<double>(u));
      return Value(static_cast<int64_t>(u));
    }
    case nlohmann::json::value_t::number_float:
      return Value(j.template get<double>());
    case nlohmann::json::value_t::string:
      return Value(j.template get<std::string>());
    case nlohmann::json::value_t::array: {
      List l;
      l.reserve(j.size());
      for (const auto& e : j) l.push_back(value_from_json(e));
      return Value(std::move(l));
    }
    case nlohmann::json::value_t::object: {
      Dict d;
      for (auto it = j.begin(); it != j.end(); ++it) d.entries.emplace_back(it.key(), value_from_json(it.value()));
      return Value(std::move(d));
    }
    default:
      return Value::none();
  }
}

void append_hex(std::string& out, uint32_t v, int digits) {
  static const char* kHex = "0123456789abcdef";
  for (int i = digits - 1; i >= 0; --i) out += kHex[(v >> (4 * i)) & 0xF];
}

std::string repr_string(const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos;
  const bool has_double = s.find('"') != std::string::npos;
  const char quote = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, quote);
  size_t pos = 0;
  while (pos < s.size()) {
    const size_t start = pos;
    const char32_t cp = tok::next_code_point(s, pos);
    if (cp == static_cast<char32_t>(quote) || cp == U'\\') {
      out += '\\';
      out += static_cast<char>(cp);
    } else if (cp == U'\n') {
      out += "\\n";
    } else if (cp == U'\r') {
      out += "\\r";
    } else if (cp == U'\t') {
      out += "\\t";
    } else if (cp < 0x20 || (cp >= 0x7F && cp < 0xA0)) {
      out += "\\x";
      append_hex(out, cp, 2);
    } else {
      out.append(s, start, pos - start);
    }
  }
  out += quote;
  return out;
}

void json_string(std::string& out, const std::string& s) {
  out += '"';
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += "\\u";
          append_hex(out, static_cast<unsigned char>(c), 4);
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

void json_dump(std::string& out, const Value& v, std::optional<int> indent, bool sort_keys, int depth) {
  auto newline = [&](int d) {
    out += '\n';
    out.append(static_cast<size_t>(*indent) * d, ' ');
  };
  const char* item_sep = indent ? "," : ", ";
  if (v.is_none()) {
    out += "null";
  } else if (v.is_bool()) {
    out += v.as_bool() ? "true" : "false";
  } else if (v.is_int()) {
    out += std::to_string(v.as_int());
  } else if (v.is_float()) {
    const double d = v.as_float();
    if (std::isnan(d))
      out += "NaN";
    else if (std::isinf(d))
      out += d > 0 ? "Infinity" : "-Infinity";
    else
      out += float_repr(d);
  } else if (v.is_string()) {
    json_string(out, v.as_string());
  } else if (v.is_list() && !v.is_generator()) {
    const List& l = v.as_list();
    if (l.empty()) {
      out += "[]";
      return;
    }
    out += '[';
    for (size_t i = 0; i < l.size(); ++i) {
      if (i) out += item_sep;
      if (indent) newline(depth + 1);
      json_dump(out, l[i], indent, sort_keys, depth + 1);
    }
    if (indent) newline(depth);
    out += ']';
  } else if (v.is_dict()) {
    std::vector<const std::pair<std::string, Value>*> items;
    for (const auto& e : v.as_dict().entries) items.push_back(&e);
    if (items.empty()) {
      out += "{}";
      return;
    }
    if (sort_keys) std::stable_sort(items.begin(), items.end(), [](auto* a, auto* b) { return a->first < b->first; });
    out += '{';
    for (size_t i = 0; i < items.size(); ++i) {
      if (i) out += item_sep;
      if (indent) newline(depth + 1);
      json_string(out, items[i]->first);
      out += ": ";
      json_dump(out, items[i]->second, indent, sort_keys, depth + 1);
    }
    if (indent) newline(depth);
    out += '}';
  } else {
    throw TemplateError(fmt::format("Object of type {} is not JSON serializable", v.type_name()));
  }
}

}  // namespace

Value Value::from_json(const nlohmann::json& j) {
  return value_from_json(j);
}
Value Value::from_json(const nlohmann::ordered_json& j) {
  return value_from_json(j);
}

double Value::to_double() const {
  if (is_float()) return as_float();
  if (is_int()) return static_cast<double>(as_int());
  if (is_bool()) return as_bool() ? 1.0 : 0.0;
  throw TemplateError(fmt::format("expected a number, got {}", type_name()));
}

std::optional<int64_t> Value::to_int() const {
  if (is_int()) return as_int();
  if (is_bool()) return as_bool() ? 1 : 0;
  return std::nullopt;
}

bool Value::truthy() const {
  if (is_undefined() || is_none()) return false;
  if (is_bool()) return as_bool();
  if (is_int()) return as_int() != 0;
  if (is_float()) return as_float() != 0.0;
  if (is_string()) return !as_string().empty();
  if (is_generator()) return true;
  if (is_list()) return !as_list().empty();
  if (is_dict()) return !as_dict().entries.empty();
  return true;
}

const char* Value::type_name() const {
  if (is_undefined()) return "Undefined";
  if (is_none()) return "NoneType";
  if (is_bool()) return "bool";
  if (is_int()) return "int";
  if (is_float()) return "float";
  if (is_string()) return "str";
  if (is_generator()) return "generator";
  if (is_list()) return "list";
  if (is_dict()) return as_dict().is_namespace ? "Namespace" : "dict";
  return "function";
}

std::string Value::str() const {
  if (is_undefined()) return "";
  if (is_string()) return as_string();
  return repr();
}

std::string Value::repr() const {
  if (is_undefined()) return "Undefined";
  if (is_none()) return "None";
  if (is_bool()) return as_bool() ? "True" : "False";
  if (is_int()) return std::to_string(as_int());
  if (is_float()) return float_repr(as_float());
  if (is_string()) return repr_string(as_string());
  if (is_generator()) return "<generator object>";
  if (is_list()) {
    std::string out = "[";
    const List& l = as_list();
    for (size_t i = 0; i < l.size(); ++i) {
      if (i) out += ", ";
      out += l[i].repr();
    }
    return out + "]";
  }
  if (is_dict()) {
    const Dict& d = as_dict();
    std::string out = d.is_namespace ? "<Namespace {" : "{";
    for (size_t i = 0; i < d.entries.size(); ++i) {
      if (i) out += ", ";
      out += repr_string(d.entries[i].first) + ": " + d.entries[i].second.repr();
    }
    return out + (d.is_namespace ? "}>" : "}");
  }
  return "<function>";
}

std::string Value::to_json(std::optional<int> indent, bool sort_keys) const {
  std::string out;
  json_dump(out, *this, indent, sort_keys, 0);
  return out;
}

List Value::iterate() const {
  if (is_undefined()) return {};
  if (is_list()) return as_list();
  if (is_dict()) {
    List keys;
    for (const auto& e : as_dict().entries) keys.emplace_back(e.first);
    return keys;
  }
  if (is_string()) {
    List chars;
    for (auto& c : code_points(as_string())) chars.emplace_back(std::move(c));
    return chars;
  }
  throw TemplateError(fmt::format("'{}' object is not iterable", type_name()));
}

int64_t Value::length() const {
  if (is_undefined()) return 0;
  if (is_generator()) throw TemplateError("object of type 'generator' has no len()");
  if (is_list()) return static_cast<int64_t>(as_list().size());
  if (is_dict()) return static_cast<int64_t>(as_dict().entries.size());
  if (is_string()) {
    const std::string& s = as_string();
    int64_t n = 0;
    for (size_t pos = 0; pos < s.size(); ++n) tok::next_code_point(s, pos);
    return n;
  }
  throw TemplateError(fmt::format("object of type '{}' has no len()", type_name()));
}

bool equals(const Value& a, const Value& b) {
  if (a.is_undefined() || b.is_undefined()) return a.is_undefined() && b.is_undefined();
  if (a.is_none() || b.is_none()) return a.is_none() && b.is_none();
  if (a.is_number() && b.is_number()) {
    if (auto x = a.to_int(), y = b.to_int(); x && y) return *x == *y;
    return a.to_double() == b.to_double();
  }
  if (a.is_string() && b.is_string()) return a.as_string() == b.as_string();
  if (a.is_list() && b.is_list()) {
    if (a.is_generator() || b.is_generator()) return &a.as_list() == &b.as_list();
    const List& x = a.as_list();
    const List& y = b.as_list();
    if (x.size() != y.size()) return false;
    for (size_t i = 0; i < x.size(); ++i)
      if (!equals(x[i], y[i])) return false;
    return true;
  }
  if (a.is_dict() && b.is_dict()) {
    const Dict& x = a.as_dict();
    const Dict& y = b.as_dict();
    if (&x == &y) return true;
    if (x.entries.size() != y.entries.size() || x.is_namespace || y.is_namespace) return false;
    for (const auto& [k, v] : x.entries) {
      const Value* w = y.find(k);
      if (!w || !equals(v, *w)) return false;
    }
    return true;
  }
  if (a.is_callable() && b.is_callable()) return &a.as_function() == &b.as_function();
  return false;
}

bool less_than(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (auto x = a.to_int(), y = b.to_int(); x && y) return *x < *y;
    return a.to_double() < b.to_double();
  }
  // Byte order of UTF-8 is code point order, as Python compares str.
  if (a.is_string() && b.is_string()) return a.as_string() < b.as_string();
  if (a.is_list() && b.is_list()) {
    const List& x = a.as_list();
    const List& y = b.as_list();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (!equals(x[i], y[i])) return less_than(x[i], y[i]);
    }
    return x.size() < y.size();
  }
  throw TemplateError(
      fmt::format("'<' not supported between instances of '{}' and '{}'", a.type_name(), b.type_name()));
}

std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string sci(buf, r.ptr);  // "-1.2345e+05": the shortest round-trip digits
  std::string out;
  size_t i = 0;
  if (sci[0] == '-') {
    out += '-';
    i = 1;
  }
  const size_t e = sci.find('e');
  std::string digits;
  for (size_t k = i; k < e; ++k)
    if (sci[k] != '.') digits += sci[k];
  const int exp = std::stoi(sci.substr(e + 1));
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  if (exp >= -4 && exp < 16) {
    if (exp >= 0) {
      std::string int_part = digits.substr(0, std::min<size_t>(digits.size(), exp + 1));
      int_part.append(exp + 1 - int_part.size(), '0');
      std::string frac = digits.size() > static_cast<size_t>(exp + 1) ? digits.substr(exp + 1) : "0";
      out += int_part;
      out += '.';
      out += frac;
    } else {
      out += "0.";
      out.append(static_cast<size_t>(-exp - 1), '0');
      out += digits;
    }
  } else {
    out += digits.substr(0, 1);
    if (digits.size() > 1) {
      out += '.';
      out.append(digits, 1, std::string::npos);
    }
    out += exp < 0 ? "e-" : "e+";
    const std::string es = std::to_string(std::abs(exp));
    if (es.size() < 2) out += '0';
    out += es;
  }
  return out;
}

std::vector<std::string> code_points(std::string_view s) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < s.size()) {
    const size_t start = pos;
    tok::next_code_point(s, pos);
    out.emplace_back(s.substr(start, pos - start));
  }
  return out;
}

}  // namespace kiln::jinja
