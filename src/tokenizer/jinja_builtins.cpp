// Jinja builtins used by chat templates: filters, tests, global functions and the Python methods
// of str, dict and list, each written to behave as jinja2 3.1 / Python 3 do.
#include <utf8proc.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "tokenizer/jinja_ast.h"
#include "tokenizer/unicode.h"

namespace kiln::jinja {

namespace {

// ---- argument helpers --------------------------------------------------------------------------

const Value* arg(const Args& a, size_t i, std::string_view name) {
  return a.get(i, name);
}

std::string arg_str(const Args& a, size_t i, std::string_view name, std::string def) {
  const Value* v = arg(a, i, name);
  if (!v || v->is_none() || v->is_undefined()) return def;
  return v->str();
}

bool arg_bool(const Args& a, size_t i, std::string_view name, bool def) {
  const Value* v = arg(a, i, name);
  return v ? v->truthy() : def;
}

int64_t arg_int(const Args& a, size_t i, std::string_view name, int64_t def) {
  const Value* v = arg(a, i, name);
  if (!v || v->is_none()) return def;
  if (!v->to_int()) throw TemplateError(fmt::format("argument '{}' must be an integer, got {}", name, v->type_name()));
  return *v->to_int();
}

const Value& need(const Args& a, size_t i, std::string_view name) {
  const Value* v = arg(a, i, name);
  if (!v) throw TemplateError(fmt::format("missing argument '{}'", name));
  return *v;
}

const std::string& need_string(const Value& v, std::string_view what) {
  if (!v.is_string()) throw TemplateError(fmt::format("{} expects a string, got {}", what, v.type_name()));
  return v.as_string();
}

// ---- string helpers (Python semantics over code points) ----------------------------------------

bool py_isspace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// Python's str.strip/lstrip/rstrip: whitespace, or any of the characters in `chars`.
std::string py_strip(const std::string& s, const Value* chars, bool left, bool right) {
  std::vector<std::string> cps = code_points(s);
  std::vector<std::string> set;
  const bool by_space = !chars || chars->is_none() || chars->is_undefined();
  if (!by_space) set = code_points(chars->str());
  auto strip_it = [&](const std::string& cp) {
    if (by_space) {
      size_t p = 0;
      return py_isspace(tok::next_code_point(cp, p));
    }
    return std::find(set.begin(), set.end(), cp) != set.end();
  };
  size_t b = 0, e = cps.size();
  if (left)
    while (b < e && strip_it(cps[b])) ++b;
  if (right)
    while (e > b && strip_it(cps[e - 1])) --e;
  std::string out;
  for (size_t i = b; i < e; ++i) out += cps[i];
  return out;
}

char32_t first_cp(const std::string& s) {
  size_t p = 0;
  return tok::next_code_point(s, p);
}

std::string map_case(const std::string& s, bool upper) {
  std::string out;
  size_t pos = 0;
  while (pos < s.size()) {
    const char32_t cp = tok::next_code_point(s, pos);
    const utf8proc_int32_t m = upper ? utf8proc_toupper(static_cast<utf8proc_int32_t>(cp))
                                     : utf8proc_tolower(static_cast<utf8proc_int32_t>(cp));
    tok::append_utf8(out, static_cast<char32_t>(m));
  }
  return out;
}

bool is_cased_letter(char32_t cp) {
  const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
  return cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT;
}

// Python's str.title(): a cased letter after an uncased character starts a word.
std::string py_title(const std::string& s) {
  std::string out;
  bool prev_cased = false;
  for (const std::string& cp : code_points(s)) {
    const char32_t c = first_cp(cp);
    if (is_cased_letter(c)) {
      out += map_case(cp, !prev_cased);
      prev_cased = true;
    } else {
      out += cp;
      prev_cased = false;
    }
  }
  return out;
}

std::string py_capitalize(const std::string& s) {
  std::vector<std::string> cps = code_points(s);
  std::string out;
  for (size_t i = 0; i < cps.size(); ++i) out += map_case(cps[i], i == 0);
  return out;
}

std::string py_replace(const std::string& s, const std::string& from, const std::string& to, int64_t count) {
  std::string out;
  if (from.empty()) {
    std::vector<std::string> cps = code_points(s);
    int64_t n = 0;
    for (size_t i = 0; i <= cps.size(); ++i) {
      if (count < 0 || n < count) {
        out += to;
        ++n;
      }
      if (i < cps.size()) out += cps[i];
    }
    return out;
  }
  size_t pos = 0;
  int64_t n = 0;
  while (count < 0 || n < count) {
    const size_t f = s.find(from, pos);
    if (f == std::string::npos) break;
    out.append(s, pos, f - pos);
    out += to;
    pos = f + from.size();
    ++n;
  }
  out.append(s, pos, std::string::npos);
  return out;
}

List py_split(const std::string& s, const Value* sep_v, int64_t maxsplit) {
  List out;
  if (!sep_v || sep_v->is_none()) {
    // Runs of whitespace separate; leading and trailing whitespace make no empty strings.
    std::vector<std::string> cps = code_points(s);
    size_t i = 0;
    int64_t splits = 0;
    while (i < cps.size()) {
      while (i < cps.size() && py_isspace(first_cp(cps[i]))) ++i;
      if (i == cps.size()) break;
      std::string word;
      if (maxsplit >= 0 && splits >= maxsplit) {
        for (; i < cps.size(); ++i) word += cps[i];
        // Python keeps the remainder as is, trailing whitespace stripped.
        out.emplace_back(py_strip(word, nullptr, false, true));
        break;
      }
      while (i < cps.size() && !py_isspace(first_cp(cps[i]))) word += cps[i++];
      out.emplace_back(std::move(word));
      ++splits;
    }
    return out;
  }
  const std::string& sep = need_string(*sep_v, "split");
  if (sep.empty()) throw TemplateError("empty separator");
  size_t pos = 0;
  int64_t n = 0;
  while (maxsplit < 0 || n < maxsplit) {
    const size_t f = s.find(sep, pos);
    if (f == std::string::npos) break;
    out.emplace_back(s.substr(pos, f - pos));
    pos = f + sep.size();
    ++n;
  }
  out.emplace_back(s.substr(pos));
  return out;
}

List py_splitlines(const std::string& s, bool keepends) {
  List out;
  std::string line;
  std::vector<std::string> cps = code_points(s);
  for (size_t i = 0; i < cps.size(); ++i) {
    const char32_t c = first_cp(cps[i]);
    const bool brk = c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || c == 0x1C || c == 0x1D || c == 0x1E ||
                     c == 0x85 || c == 0x2028 || c == 0x2029;
    if (!brk) {
      line += cps[i];
      continue;
    }
    std::string end = cps[i];
    if (c == '\r' && i + 1 < cps.size() && cps[i + 1] == "\n") end += cps[++i];
    if (keepends) line += end;
    out.emplace_back(std::move(line));
    line.clear();
  }
  if (!line.empty()) out.emplace_back(std::move(line));
  return out;
}

bool starts_or_ends(const std::string& s, const Value& what, bool starts) {
  auto one = [&](const Value& v) {
    const std::string& p = need_string(v, starts ? "startswith" : "endswith");
    if (p.size() > s.size()) return false;
    return starts ? s.compare(0, p.size(), p) == 0 : s.compare(s.size() - p.size(), p.size(), p) == 0;
  };
  if (what.is_list()) {
    for (const Value& v : what.as_list())
      if (one(v)) return true;
    return false;
  }
  return one(what);
}

// str.format with {}, {0} and {name} fields (no format specs or conversions).
std::string py_format(const std::string& fmtstr, const Args& a) {
  std::string out;
  size_t auto_index = 0;
  for (size_t i = 0; i < fmtstr.size(); ++i) {
    const char c = fmtstr[i];
    if (c == '{' && i + 1 < fmtstr.size() && fmtstr[i + 1] == '{') {
      out += '{';
      ++i;
    } else if (c == '}' && i + 1 < fmtstr.size() && fmtstr[i + 1] == '}') {
      out += '}';
      ++i;
    } else if (c == '{') {
      const size_t e = fmtstr.find('}', i);
      if (e == std::string::npos) throw TemplateError("Single '{' encountered in format string");
      const std::string field = fmtstr.substr(i + 1, e - i - 1);
      if (field.find_first_of(":!") != std::string::npos) throw TemplateError("format specs are not supported");
      const Value* v = nullptr;
      if (field.empty()) {
        v = auto_index < a.positional.size() ? &a.positional[auto_index] : nullptr;
        ++auto_index;
      } else if (std::all_of(field.begin(), field.end(), ::isdigit)) {
        const size_t k = std::stoul(field);
        v = k < a.positional.size() ? &a.positional[k] : nullptr;
      } else {
        for (const auto& [k, x] : a.keyword)
          if (k == field) v = &x;
      }
      if (!v) throw TemplateError(fmt::format("format: no argument for '{{{}}}'", field));
      out += v->str();
      i = e;
    } else {
      out += c;
    }
  }
  return out;
}

Value bound(std::function<Value(const Args&)> f) {
  return Value(Function(std::move(f)));
}

// ---- attribute paths for selectattr/map/sort/... -------------------------------------------------

Value attr_path(const Value& item, const std::string& path) {
  Value v = item;
  size_t pos = 0;
  while (true) {
    const size_t dot = path.find('.', pos);
    const std::string part = path.substr(pos, dot == std::string::npos ? std::string::npos : dot - pos);
    if (v.is_undefined()) return v;
    if (!part.empty() && std::all_of(part.begin(), part.end(), ::isdigit))
      v = get_item(v, Value(static_cast<int64_t>(std::stoll(part))));
    else
      v = get_item(v, Value(part));
    if (dot == std::string::npos) return v;
    pos = dot + 1;
  }
}

Value sort_key(const Value& v, bool case_sensitive) {
  if (!case_sensitive && v.is_string()) return Value(map_case(v.as_string(), false));
  return v;
}

// ---- filters -----------------------------------------------------------------------------------

Value f_abs(const Value& v, const Args&) {
  if (auto i = v.to_int()) return Value(static_cast<int64_t>(std::llabs(*i)));
  if (v.is_float()) return Value(std::fabs(v.as_float()));
  throw TemplateError(fmt::format("bad operand type for abs(): '{}'", v.type_name()));
}
Value f_attr(const Value& v, const Args& a) {
  return get_attr(v, need(a, 0, "name").str());
}
Value f_capitalize(const Value& v, const Args&) {
  return Value(py_capitalize(v.str()));
}
Value f_length(const Value& v, const Args&) {
  return Value(v.length());
}
Value f_default(const Value& v, const Args& a) {
  const bool boolean = arg_bool(a, 1, "boolean", false);
  if (v.is_undefined() || (boolean && !v.truthy())) {
    const Value* d = arg(a, 0, "default_value");
    return d ? *d : Value("");
  }
  return v;
}
Value f_dictsort(const Value& v, const Args& a) {
  if (!v.is_dict()) throw TemplateError("dictsort expects a dict");
  const bool cs = arg_bool(a, 0, "case_sensitive", false);
  const bool by_value = arg_str(a, 1, "by", "key") == "value";
  const bool rev = arg_bool(a, 2, "reverse", false);
  List items;
  for (const auto& [k, x] : v.as_dict().entries) items.emplace_back(List{Value(k), x});
  std::stable_sort(items.begin(), items.end(), [&](const Value& p, const Value& q) {
    const Value& x = p.as_list()[by_value ? 1 : 0];
    const Value& y = q.as_list()[by_value ? 1 : 0];
    return rev ? less_than(sort_key(y, cs), sort_key(x, cs)) : less_than(sort_key(x, cs), sort_key(y, cs));
  });
  return Value(std::move(items));
}
std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}
Value f_escape(const Value& v, const Args&) {
  return Value(html_escape(v.str()));
}
Value f_first(const Value& v, const Args&) {
  List items = v.iterate();
  return items.empty() ? Value::undefined("first") : items.front();
}
Value f_last(const Value& v, const Args&) {
  if (v.is_generator()) throw TemplateError("'generator' object is not reversible");
  List items = v.iterate();
  return items.empty() ? Value::undefined("last") : items.back();
}
Value f_float(const Value& v, const Args& a) {
  const Value* d = arg(a, 0, "default");
  const Value def = d ? *d : Value(0.0);
  if (v.is_number()) return Value(v.to_double());
  if (v.is_string()) {
    try {
      size_t used = 0;
      const std::string s = py_strip(v.as_string(), nullptr, true, true);
      const double x = std::stod(s, &used);
      if (used == s.size()) return Value(x);
    } catch (const std::exception&) {
    }
  }
  return def;
}
Value f_int(const Value& v, const Args& a) {
  const Value* d = arg(a, 0, "default");
  const Value def = d ? *d : Value(0);
  const int base = static_cast<int>(arg_int(a, 1, "base", 10));
  if (auto i = v.to_int()) return Value(*i);
  if (v.is_float()) return Value(static_cast<int64_t>(v.as_float()));
  if (v.is_string()) {
    const std::string s = py_strip(v.as_string(), nullptr, true, true);
    try {
      size_t used = 0;
      const long long x = std::stoll(s, &used, base);
      if (used == s.size()) return Value(static_cast<int64_t>(x));
      const double f = std::stod(s, &used);
      if (used == s.size()) return Value(static_cast<int64_t>(f));
    } catch (const std::exception&) {
    }
  }
  return def;
}
Value f_indent(const Value& v, const Args& a) {
  const Value* w = arg(a, 0, "width");
  std::string ind = w && w->is_string() ? w->as_string() : std::string(w ? *w->to_int() : 4, ' ');
  const bool first = arg_bool(a, 1, "first", false);
  const bool blank = arg_bool(a, 2, "blank", false);
  List lines = py_splitlines(v.str() + "\n", false);
  std::string rv;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string& l = lines[i].as_string();
    if (i == 0) {
      rv = l;
      continue;
    }
    rv += "\n";
    if (blank || !l.empty()) rv += ind;
    rv += l;
  }
  if (first) rv = ind + rv;
  return Value(rv);
}
Value f_items(const Value& v, const Args&) {
  if (v.is_undefined()) return Value::generator({});
  if (!v.is_dict()) throw TemplateError(fmt::format("can only get item pairs from a mapping, not {}", v.type_name()));
  List out;
  for (const auto& [k, x] : v.as_dict().entries) out.emplace_back(List{Value(k), x});
  return Value::generator(std::move(out));
}
Value f_join(const Value& v, const Args& a) {
  const std::string sep = arg_str(a, 0, "d", "");
  const Value* attribute = arg(a, 1, "attribute");
  std::string out;
  bool firstv = true;
  for (const Value& x : v.iterate()) {
    if (!firstv) out += sep;
    firstv = false;
    out += (attribute && !attribute->is_none() ? attr_path(x, attribute->str()) : x).str();
  }
  return Value(std::move(out));
}
Value f_list(const Value& v, const Args&) {
  return Value(v.iterate());
}
Value f_lower(const Value& v, const Args&) {
  return Value(map_case(v.str(), false));
}
Value f_upper(const Value& v, const Args&) {
  return Value(map_case(v.str(), true));
}
Value f_map(const Value& v, const Args& a) {
  List out;
  if (!v.truthy()) return Value::generator({});
  const Value* attribute = nullptr;
  for (const auto& [k, x] : a.keyword)
    if (k == "attribute") attribute = &x;
  if (attribute) {
    const Value* def = nullptr;
    for (const auto& [k, x] : a.keyword)
      if (k == "default") def = &x;
    for (const Value& x : v.iterate()) {
      Value r = attr_path(x, attribute->str());
      out.push_back(r.is_undefined() && def ? *def : r);
    }
    return Value::generator(std::move(out));
  }
  if (a.positional.empty()) throw TemplateError("map needs a filter name or attribute=");
  const std::string name = a.positional[0].str();
  FilterFn f = find_filter(name);
  if (!f) throw TemplateError(fmt::format("no filter named '{}'", name));
  Args rest;
  rest.positional.assign(a.positional.begin() + 1, a.positional.end());
  rest.keyword = a.keyword;
  for (const Value& x : v.iterate()) out.push_back(f(x, rest));
  return Value::generator(std::move(out));
}
Value min_max(const Value& v, const Args& a, bool want_max) {
  const bool cs = arg_bool(a, 0, "case_sensitive", false);
  const Value* attribute = arg(a, 1, "attribute");
  List items = v.iterate();
  if (items.empty()) return Value::undefined(want_max ? "max" : "min");
  size_t best = 0;
  auto key = [&](const Value& x) { return sort_key(attribute ? attr_path(x, attribute->str()) : x, cs); };
  for (size_t i = 1; i < items.size(); ++i) {
    const bool better =
        want_max ? less_than(key(items[best]), key(items[i])) : less_than(key(items[i]), key(items[best]));
    if (better) best = i;
  }
  return items[best];
}
Value f_max(const Value& v, const Args& a) {
  return min_max(v, a, true);
}
Value f_min(const Value& v, const Args& a) {
  return min_max(v, a, false);
}
Value select_impl(const Value& v, const Args& a, bool by_attr, bool keep) {
  if (!v.truthy()) return Value::generator({});
  size_t i = 0;
  std::string attribute;
  if (by_attr) attribute = need(a, i++, "attribute").str();
  std::string test;
  if (i < a.positional.size()) test = a.positional[i++].str();
  Args targs;
  targs.positional.assign(a.positional.begin() + std::min(i, a.positional.size()), a.positional.end());
  TestFn t = test.empty() ? nullptr : find_test(test);
  if (!test.empty() && !t) throw TemplateError(fmt::format("no test named '{}'", test));
  List out;
  for (const Value& x : v.iterate()) {
    const Value subject = by_attr ? attr_path(x, attribute) : x;
    const bool r = t ? t(subject, targs) : subject.truthy();
    if (r == keep) out.push_back(x);
  }
  return Value::generator(std::move(out));
}
Value f_select(const Value& v, const Args& a) {
  return select_impl(v, a, false, true);
}
Value f_reject(const Value& v, const Args& a) {
  return select_impl(v, a, false, false);
}
Value f_selectattr(const Value& v, const Args& a) {
  return select_impl(v, a, true, true);
}
Value f_rejectattr(const Value& v, const Args& a) {
  return select_impl(v, a, true, false);
}
Value f_replace(const Value& v, const Args& a) {
  return Value(py_replace(v.str(), need(a, 0, "old").str(), need(a, 1, "new").str(), arg_int(a, 2, "count", -1)));
}
Value f_reverse(const Value& v, const Args&) {
  List items = v.iterate();
  std::reverse(items.begin(), items.end());
  if (v.is_string()) {
    std::string s;
    for (const Value& c : items) s += c.as_string();
    return Value(std::move(s));
  }
  return Value(std::move(items));
}
Value f_round(const Value& v, const Args& a) {
  const int64_t precision = arg_int(a, 0, "precision", 0);
  const std::string method = arg_str(a, 1, "method", "common");
  const double m = std::pow(10.0, static_cast<double>(precision));
  const double x = v.to_double() * m;
  double r;
  if (method == "ceil")
    r = std::ceil(x);
  else if (method == "floor")
    r = std::floor(x);
  else
    r = std::round(x);  // half away from zero, as jinja's "common"
  return Value(r / m);
}
Value f_safe(const Value& v, const Args&) {
  return v;
}
Value f_sort(const Value& v, const Args& a) {
  const bool rev = arg_bool(a, 0, "reverse", false);
  const bool cs = arg_bool(a, 1, "case_sensitive", false);
  const Value* attribute = arg(a, 2, "attribute");
  List items = v.iterate();
  auto key = [&](const Value& x) { return sort_key(attribute ? attr_path(x, attribute->str()) : x, cs); };
  std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
    return rev ? less_than(key(y), key(x)) : less_than(key(x), key(y));
  });
  return Value(std::move(items));
}
Value f_string(const Value& v, const Args&) {
  return Value(v.str());
}
Value f_sum(const Value& v, const Args& a) {
  const Value* attribute = arg(a, 0, "attribute");
  const Value* start = arg(a, 1, "start");
  Value total = start ? *start : Value(0);
  for (const Value& x : v.iterate()) {
    const Value y = attribute && !attribute->is_none() ? attr_path(x, attribute->str()) : x;
    if (total.to_int() && y.to_int())
      total = Value(*total.to_int() + *y.to_int());
    else
      total = Value(total.to_double() + y.to_double());
  }
  return total;
}
Value f_title(const Value& v, const Args&) {
  // jinja's title: words start after whitespace, '-', '(', '{', '[' or '<'.
  std::string out;
  bool start = true;
  for (const std::string& cp : code_points(v.str())) {
    const char32_t c = first_cp(cp);
    const bool sep = py_isspace(c) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<';
    if (sep) {
      out += cp;
      start = true;
    } else {
      out += map_case(cp, start);
      start = false;
    }
  }
  return Value(std::move(out));
}
Value f_tojson(const Value& v, const Args& a) {
  const Value* ind = arg(a, 0, "indent");
  std::optional<int> indent;
  if (ind && !ind->is_none()) indent = static_cast<int>(ind->to_int().value_or(0));
  bool sort_keys = false;
  for (const auto& [k, x] : a.keyword)
    if (k == "sort_keys") sort_keys = x.truthy();
  return Value(v.to_json(indent, sort_keys));
}
Value f_trim(const Value& v, const Args& a) {
  return Value(py_strip(v.str(), arg(a, 0, "chars"), true, true));
}
Value f_unique(const Value& v, const Args& a) {
  const bool cs = arg_bool(a, 0, "case_sensitive", false);
  const Value* attribute = arg(a, 1, "attribute");
  List out, keys;
  for (const Value& x : v.iterate()) {
    Value k = sort_key(attribute ? attr_path(x, attribute->str()) : x, cs);
    if (std::none_of(keys.begin(), keys.end(), [&](const Value& y) { return equals(y, k); })) {
      keys.push_back(k);
      out.push_back(x);
    }
  }
  return Value::generator(std::move(out));
}
Value f_wordcount(const Value& v, const Args&) {
  int64_t n = 0;
  bool in_word = false;
  for (const std::string& cp : code_points(v.str())) {
    const char32_t c = first_cp(cp);
    const bool w = c == '_' || tok::is_alphanumeric(c);
    if (w && !in_word) ++n;
    in_word = w;
  }
  return Value(n);
}

struct NamedFilter {
  const char* name;
  FilterFn fn;
};
const NamedFilter kFilters[] = {
    {"abs", f_abs},
    {"attr", f_attr},
    {"capitalize", f_capitalize},
    {"count", f_length},
    {"d", f_default},
    {"default", f_default},
    {"dictsort", f_dictsort},
    {"e", f_escape},
    {"escape", f_escape},
    {"first", f_first},
    {"float", f_float},
    {"forceescape", f_escape},
    {"indent", f_indent},
    {"int", f_int},
    {"items", f_items},
    {"join", f_join},
    {"last", f_last},
    {"length", f_length},
    {"list", f_list},
    {"lower", f_lower},
    {"map", f_map},
    {"max", f_max},
    {"min", f_min},
    {"reject", f_reject},
    {"rejectattr", f_rejectattr},
    {"replace", f_replace},
    {"reverse", f_reverse},
    {"round", f_round},
    {"safe", f_safe},
    {"select", f_select},
    {"selectattr", f_selectattr},
    {"sort", f_sort},
    {"string", f_string},
    {"sum", f_sum},
    {"title", f_title},
    {"tojson", f_tojson},
    {"trim", f_trim},
    {"unique", f_unique},
    {"upper", f_upper},
    {"wordcount", f_wordcount},
};

// ---- tests -------------------------------------------------------------------------------------

bool t_defined(const Value& v, const Args&) {
  return !v.is_undefined();
}
bool t_undefined(const Value& v, const Args&) {
  return v.is_undefined();
}
bool t_none(const Value& v, const Args&) {
  return v.is_none();
}
bool t_boolean(const Value& v, const Args&) {
  return v.is_bool();
}
bool t_true(const Value& v, const Args&) {
  return v.is_bool() && v.as_bool();
}
bool t_false(const Value& v, const Args&) {
  return v.is_bool() && !v.as_bool();
}
bool t_integer(const Value& v, const Args&) {
  return v.is_int();
}
bool t_float(const Value& v, const Args&) {
  return v.is_float();
}
bool t_number(const Value& v, const Args&) {
  return v.is_number();
}
bool t_string(const Value& v, const Args&) {
  return v.is_string();
}
bool t_mapping(const Value& v, const Args&) {
  return v.is_dict();
}
bool t_iterable(const Value& v, const Args&) {
  return v.is_undefined() || v.is_string() || v.is_list() || v.is_dict();
}
bool t_sequence(const Value& v, const Args&) {
  return v.is_undefined() || v.is_string() || v.is_list() || v.is_dict();
}
bool t_callable(const Value& v, const Args&) {
  return v.is_callable();
}
bool t_eq(const Value& v, const Args& a) {
  return equals(v, need(a, 0, "other"));
}
bool t_ne(const Value& v, const Args& a) {
  return !equals(v, need(a, 0, "other"));
}
bool t_lt(const Value& v, const Args& a) {
  return less_than(v, need(a, 0, "other"));
}
bool t_gt(const Value& v, const Args& a) {
  return less_than(need(a, 0, "other"), v);
}
bool t_le(const Value& v, const Args& a) {
  return !less_than(need(a, 0, "other"), v);
}
bool t_ge(const Value& v, const Args& a) {
  return !less_than(v, need(a, 0, "other"));
}
bool t_in(const Value& v, const Args& a) {
  const Value& seq = need(a, 0, "seq");
  if (seq.is_string()) return v.is_string() && seq.as_string().find(v.as_string()) != std::string::npos;
  if (seq.is_dict()) return v.is_string() && seq.as_dict().find(v.as_string());
  for (const Value& x : seq.iterate())
    if (equals(x, v)) return true;
  return false;
}
bool t_odd(const Value& v, const Args&) {
  return v.to_int() && (*v.to_int() % 2 != 0);
}
bool t_even(const Value& v, const Args&) {
  return v.to_int() && (*v.to_int() % 2 == 0);
}
bool t_divisibleby(const Value& v, const Args& a) {
  const int64_t d = arg_int(a, 0, "num", 1);
  return d != 0 && v.to_int() && *v.to_int() % d == 0;
}
bool t_sameas(const Value& v, const Args& a) {
  const Value& o = need(a, 0, "other");
  if (v.is_none() || o.is_none()) return v.is_none() && o.is_none();
  if (v.is_bool() || o.is_bool()) return v.is_bool() && o.is_bool() && v.as_bool() == o.as_bool();
  if (v.is_list() && o.is_list()) return &v.as_list() == &o.as_list();
  if (v.is_dict() && o.is_dict()) return &v.as_dict() == &o.as_dict();
  return equals(v, o) && std::strcmp(v.type_name(), o.type_name()) == 0;
}
bool t_lower(const Value& v, const Args&) {
  return v.is_string() && map_case(v.as_string(), false) == v.as_string();
}
bool t_upper(const Value& v, const Args&) {
  return v.is_string() && map_case(v.as_string(), true) == v.as_string();
}
bool t_escaped(const Value&, const Args&) {
  return false;
}

struct NamedTest {
  const char* name;
  TestFn fn;
};
const NamedTest kTests[] = {
    {"!=", t_ne},
    {"<", t_lt},
    {"<=", t_le},
    {"==", t_eq},
    {">", t_gt},
    {">=", t_ge},
    {"boolean", t_boolean},
    {"callable", t_callable},
    {"defined", t_defined},
    {"divisibleby", t_divisibleby},
    {"eq", t_eq},
    {"equalto", t_eq},
    {"escaped", t_escaped},
    {"even", t_even},
    {"false", t_false},
    {"float", t_float},
    {"ge", t_ge},
    {"greaterthan", t_gt},
    {"gt", t_gt},
    {"in", t_in},
    {"integer", t_integer},
    {"iterable", t_iterable},
    {"le", t_le},
    {"lessthan", t_lt},
    {"lower", t_lower},
    {"lt", t_lt},
    {"mapping", t_mapping},
    {"ne", t_ne},
    {"none", t_none},
    {"number", t_number},
    {"odd", t_odd},
    {"sameas", t_sameas},
    {"sequence", t_sequence},
    {"string", t_string},
    {"true", t_true},
    {"undefined", t_undefined},
    {"upper", t_upper},
};

// ---- globals -----------------------------------------------------------------------------------

Value g_range(const Args& a) {
  int64_t start = 0, stop, step = 1;
  if (a.positional.size() == 1) {
    stop = arg_int(a, 0, "stop", 0);
  } else {
    start = arg_int(a, 0, "start", 0);
    stop = arg_int(a, 1, "stop", 0);
    step = arg_int(a, 2, "step", 1);
  }
  if (step == 0) throw TemplateError("range() arg 3 must not be zero");
  List out;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
    // jinja's sandbox refuses ranges over 100000 items.
    if (out.size() >= 100000) throw TemplateError("range too big (the sandbox allows 100000 items)");
    out.emplace_back(i);
  }
  return Value(std::move(out));
}

Value g_namespace(const Args& a) {
  Dict d;
  d.is_namespace = true;
  for (const Value& p : a.positional) {
    if (!p.is_dict()) throw TemplateError("namespace() takes dicts and keyword arguments");
    for (const auto& [k, v] : p.as_dict().entries) d.set(k, v);
  }
  for (const auto& [k, v] : a.keyword) d.set(k, v);
  return Value(std::move(d));
}

Value g_dict(const Args& a) {
  Dict d;
  for (const Value& p : a.positional)
    if (p.is_dict())
      for (const auto& [k, v] : p.as_dict().entries) d.set(k, v);
  for (const auto& [k, v] : a.keyword) d.set(k, v);
  return Value(std::move(d));
}

Value g_raise_exception(const Args& a) {
  throw TemplateError(a.positional.empty() ? std::string("raise_exception called") : a.positional[0].str(), true);
}

}  // namespace

FilterFn find_filter(std::string_view name) {
  for (const auto& f : kFilters)
    if (name == f.name) return f.fn;
  return nullptr;
}

TestFn find_test(std::string_view name) {
  for (const auto& t : kTests)
    if (name == t.name) return t.fn;
  return nullptr;
}

Value builtin_global(std::string_view name, const Context& ctx) {
  if (name == "range") return bound(g_range);
  if (name == "namespace") return bound(g_namespace);
  if (name == "dict") return bound(g_dict);
  if (name == "raise_exception") return bound(g_raise_exception);
  if (name == "strftime_now") {
    const RenderOptions* opts = ctx.options;
    return bound([opts](const Args& a) {
      std::tm tm{};
      if (opts && opts->now) {
        tm = *opts->now;
      } else {
        const std::time_t t = std::time(nullptr);
        localtime_r(&t, &tm);
      }
      const std::string f = need(a, 0, "format").str();
      char buf[256];
      const size_t n = std::strftime(buf, sizeof buf, f.c_str(), &tm);
      return Value(std::string(buf, n));
    });
  }
  return Value::undefined(std::string(name));
}

Value method_of(const Value& obj, std::string_view name) {
  if (obj.is_string()) {
    const std::string s = obj.as_string();
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      const bool l = name != "rstrip", r = name != "lstrip";
      return bound([s, l, r](const Args& a) { return Value(py_strip(s, arg(a, 0, "chars"), l, r)); });
    }
    if (name == "startswith" || name == "endswith") {
      const bool st = name == "startswith";
      return bound([s, st](const Args& a) { return Value(starts_or_ends(s, need(a, 0, "prefix"), st)); });
    }
    if (name == "split")
      return bound([s](const Args& a) { return Value(py_split(s, arg(a, 0, "sep"), arg_int(a, 1, "maxsplit", -1))); });
    if (name == "rsplit")
      return bound([s](const Args& a) {
        const int64_t maxsplit = arg_int(a, 1, "maxsplit", -1);
        if (maxsplit >= 0) throw TemplateError("rsplit with maxsplit is not supported");
        return Value(py_split(s, arg(a, 0, "sep"), -1));
      });
    if (name == "splitlines")
      return bound([s](const Args& a) { return Value(py_splitlines(s, arg_bool(a, 0, "keepends", false))); });
    if (name == "upper") return bound([s](const Args&) { return Value(map_case(s, true)); });
    if (name == "lower") return bound([s](const Args&) { return Value(map_case(s, false)); });
    if (name == "title") return bound([s](const Args&) { return Value(py_title(s)); });
    if (name == "capitalize") return bound([s](const Args&) { return Value(py_capitalize(s)); });
    if (name == "replace")
      return bound([s](const Args& a) {
        return Value(py_replace(s, need(a, 0, "old").str(), need(a, 1, "new").str(), arg_int(a, 2, "count", -1)));
      });
    if (name == "find" || name == "rfind" || name == "index" || name == "count") {
      const std::string n(name);
      return bound([s, n](const Args& a) -> Value {
        const std::string& sub = need_string(need(a, 0, "sub"), n);
        if (n == "count") {
          if (sub.empty()) return Value(static_cast<int64_t>(code_points(s).size() + 1));
          int64_t c = 0;
          for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size())) ++c;
          return Value(c);
        }
        const size_t p = n == "rfind" ? s.rfind(sub) : s.find(sub);
        if (p == std::string::npos) {
          if (n == "index") throw TemplateError("substring not found");
          return Value(-1);
        }
        return Value(static_cast<int64_t>(code_points(s.substr(0, p)).size()));
      });
    }
    if (name == "join")
      return bound([s](const Args& a) {
        std::string out;
        bool first = true;
        for (const Value& x : need(a, 0, "iterable").iterate()) {
          if (!first) out += s;
          first = false;
          out += need_string(x, "join");
        }
        return Value(std::move(out));
      });
    if (name == "format") return bound([s](const Args& a) { return Value(py_format(s, a)); });
    if (name == "isdigit" || name == "isalpha" || name == "isalnum" || name == "isspace" || name == "islower" ||
        name == "isupper") {
      const std::string n(name);
      return bound([s, n](const Args&) {
        if (s.empty()) return Value(false);
        if (n == "islower" || n == "isupper") {
          bool cased = false;
          for (const std::string& cp : code_points(s)) {
            const char32_t c = first_cp(cp);
            if (is_cased_letter(c)) {
              cased = true;
              if (map_case(cp, n == "isupper") != cp) return Value(false);
            }
          }
          return Value(cased);
        }
        for (const std::string& cp : code_points(s)) {
          const char32_t c = first_cp(cp);
          const bool ok = n == "isdigit"   ? (c >= '0' && c <= '9') || tok::is_numeric(c)
                          : n == "isalpha" ? tok::is_alphabetic(c)
                          : n == "isalnum" ? tok::is_alphanumeric(c)
                                           : py_isspace(c);
          if (!ok) return Value(false);
        }
        return Value(true);
      });
    }
    return Value::undefined(std::string(name));
  }
  if (obj.is_dict() && !obj.as_dict().is_namespace) {
    const Value d = obj;
    if (name == "items") return bound([d](const Args&) { return Value(f_items(d, {}).as_list()); });
    if (name == "keys") return bound([d](const Args&) { return Value(d.iterate()); });
    if (name == "values")
      return bound([d](const Args&) {
        List out;
        for (const auto& e : d.as_dict().entries) out.push_back(e.second);
        return Value(std::move(out));
      });
    if (name == "get")
      return bound([d](const Args& a) {
        const Value& k = need(a, 0, "key");
        const Value* v = k.is_string() ? d.as_dict().find(k.as_string()) : nullptr;
        if (v) return *v;
        const Value* def = arg(a, 1, "default");
        return def ? *def : Value::none();
      });
    return Value::undefined(std::string(name));
  }
  if (obj.is_list()) {
    const Value l = obj;
    if (name == "index")
      return bound([l](const Args& a) {
        const Value& x = need(a, 0, "value");
        const List& items = l.as_list();
        for (size_t i = 0; i < items.size(); ++i)
          if (equals(items[i], x)) return Value(static_cast<int64_t>(i));
        throw TemplateError(fmt::format("{} is not in list", x.repr()));
      });
    if (name == "count")
      return bound([l](const Args& a) {
        const Value& x = need(a, 0, "value");
        int64_t n = 0;
        for (const Value& y : l.as_list()) n += equals(x, y);
        return Value(n);
      });
    return Value::undefined(std::string(name));
  }
  return Value::undefined(std::string(name));
}

Value get_attr(const Value& obj, std::string_view name) {
  if (obj.is_dict()) {
    if (!obj.as_dict().is_namespace) {
      Value m = method_of(obj, name);
      if (!m.is_undefined()) return m;
    }
    const Value* v = obj.as_dict().find(name);
    return v ? *v : Value::undefined(std::string(name));
  }
  return method_of(obj, name);
}

Value get_item(const Value& obj, const Value& key) {
  if (obj.is_dict()) {
    if (key.is_string()) {
      if (const Value* v = obj.as_dict().find(key.as_string())) return *v;
      return get_attr(obj, key.as_string());
    }
    return Value::undefined(key.str());
  }
  if (obj.is_generator()) return Value::undefined(key.str());
  if (obj.is_list() || obj.is_string()) {
    if (auto i = key.to_int()) {
      if (obj.is_list()) {
        const List& l = obj.as_list();
        int64_t k = *i < 0 ? *i + static_cast<int64_t>(l.size()) : *i;
        if (k < 0 || k >= static_cast<int64_t>(l.size())) return Value::undefined(key.str());
        return l[k];
      }
      std::vector<std::string> cps = code_points(obj.as_string());
      int64_t k = *i < 0 ? *i + static_cast<int64_t>(cps.size()) : *i;
      if (k < 0 || k >= static_cast<int64_t>(cps.size())) return Value::undefined(key.str());
      return Value(cps[k]);
    }
    if (key.is_string()) return get_attr(obj, key.as_string());
    return Value::undefined(key.str());
  }
  if (key.is_string()) return get_attr(obj, key.as_string());
  return Value::undefined(key.str());
}

}  // namespace kiln::jinja
