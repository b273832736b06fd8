// Values of the Jinja-subset chat template engine: Python's object model as far as chat templates
// use it (undefined, None, bool, int, float, str, list, dict, callables), with Python's semantics
// for truthiness, equality, ordering, str()/repr() and json.dumps.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "kiln/error.h"

namespace kiln::jinja {

// A template that cannot be parsed or fails while rendering (undefined attribute of an undefined
// value, a type error, raise_exception). raised() is true for raise_exception(), whose message is
// the template author's.
class TemplateError : public Error {
 public:
  explicit TemplateError(const std::string& message, bool raised = false) : Error(message), raised_(raised) {}
  bool raised() const { return raised_; }

 private:
  bool raised_;
};

class Value;
using List = std::vector<Value>;

// A dict with string keys in insertion order (what JSON objects and template dict literals need).
// A namespace() object is a Dict whose attributes may be assigned with `set ns.attr = ..`.
struct Dict {
  std::vector<std::pair<std::string, Value>> entries;
  bool is_namespace = false;

  const Value* find(std::string_view key) const;
  void set(std::string key, Value value);
};

struct Args {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;

  // The argument at `index` or named `name`, if given.
  const Value* get(size_t index, std::string_view name) const;
};

using Function = std::function<Value(const Args&)>;

class Value {
 public:
  struct Undefined {
    std::string hint;  // what was looked up, for error messages
  };
  struct None {};

  Value() : v_(Undefined{}) {}
  static Value undefined(std::string hint = {}) { return Value(Undefined{std::move(hint)}); }
  static Value none() { return Value(None{}); }
  // What jinja2's map/select/reject/selectattr/rejectattr/items filters return: a one-shot
  // iterator, which is always true, has no len() and cannot be serialized or indexed.
  static Value generator(List l) {
    Value v(std::move(l));
    v.generator_ = true;
    return v;
  }
  Value(bool b) : v_(b) {}
  Value(int v) : v_(static_cast<int64_t>(v)) {}
  Value(int64_t v) : v_(v) {}
  Value(double v) : v_(v) {}
  Value(std::string s) : v_(std::move(s)) {}
  Value(const char* s) : v_(std::string(s)) {}
  Value(List l) : v_(std::make_shared<List>(std::move(l))) {}
  Value(Dict d) : v_(std::make_shared<Dict>(std::move(d))) {}
  Value(Function f) : v_(std::make_shared<const Function>(std::move(f))) {}
  static Value from_json(const nlohmann::json& j);
  static Value from_json(const nlohmann::ordered_json& j);

  bool is_undefined() const { return std::holds_alternative<Undefined>(v_); }
  bool is_none() const { return std::holds_alternative<None>(v_); }
  bool is_bool() const { return std::holds_alternative<bool>(v_); }
  bool is_int() const { return std::holds_alternative<int64_t>(v_); }
  bool is_float() const { return std::holds_alternative<double>(v_); }
  bool is_number() const { return is_int() || is_float() || is_bool(); }
  bool is_string() const { return std::holds_alternative<std::string>(v_); }
  bool is_list() const { return std::holds_alternative<std::shared_ptr<List>>(v_); }
  bool is_dict() const { return std::holds_alternative<std::shared_ptr<Dict>>(v_); }
  bool is_callable() const { return std::holds_alternative<std::shared_ptr<const Function>>(v_); }
  bool is_generator() const { return generator_; }

  bool as_bool() const { return std::get<bool>(v_); }
  int64_t as_int() const { return std::get<int64_t>(v_); }  // exact type int
  double as_float() const { return std::get<double>(v_); }
  const std::string& as_string() const { return std::get<std::string>(v_); }
  const List& as_list() const { return *std::get<std::shared_ptr<List>>(v_); }
  const Dict& as_dict() const { return *std::get<std::shared_ptr<Dict>>(v_); }
  Dict& mutable_dict() const { return *std::get<std::shared_ptr<Dict>>(v_); }
  const Function& as_function() const { return *std::get<std::shared_ptr<const Function>>(v_); }
  const std::string& undefined_hint() const { return std::get<Undefined>(v_).hint; }

  // Numeric view of int/float/bool (Python's bool is an int).
  double to_double() const;
  // int or bool as an integer; nullopt otherwise.
  std::optional<int64_t> to_int() const;

  bool truthy() const;
  // Python's type name ("str", "int", "dict", ..) for error messages.
  const char* type_name() const;
  // str(value) as Jinja prints it ({{ value }}): undefined prints as nothing.
  std::string str() const;
  // repr(value), as Python prints list and dict members.
  std::string repr() const;
  // json.dumps(value, ensure_ascii=False, indent=indent, sort_keys=sort_keys) with Python's default
  // separators; throws for undefined and callables.
  std::string to_json(std::optional<int> indent = std::nullopt, bool sort_keys = false) const;

  // The members of an iterable (list items, dict keys, string characters); undefined is empty.
  List iterate() const;
  // len(): code points of a string, items of a list or dict; throws for others. Undefined is 0.
  int64_t length() const;

 private:
  Value(Undefined u) : v_(std::move(u)) {}
  Value(None n) : v_(n) {}

  std::variant<Undefined, None, bool, int64_t, double, std::string, std::shared_ptr<List>, std::shared_ptr<Dict>,
               std::shared_ptr<const Function>>
      v_;
  bool generator_ = false;
};

// Python `==` (1 == 1.0 == True; lists and dicts compared by content; undefined equals undefined).
bool equals(const Value& a, const Value& b);
// Python `<` for numbers, strings and lists; throws TemplateError for other pairs.
bool less_than(const Value& a, const Value& b);
// Python's repr(float): the shortest string that reads back as the same double.
std::string float_repr(double d);

// UTF-8 helpers for Python's code-point view of strings.
std::vector<std::string> code_points(std::string_view s);

}  // namespace kiln::jinja
