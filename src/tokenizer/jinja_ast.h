// The parsed form of a Jinja template (expressions and statements) and the state of one render.
// Parsing lives in jinja_parser.cpp, evaluation in jinja_render.cpp, filters/tests/methods in
// jinja_builtins.cpp.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tokenizer/jinja.h"
#include "tokenizer/jinja_value.h"

namespace kiln::jinja {

struct Context;

struct Expr {
  int line = 0;
  virtual ~Expr() = default;
  virtual Value eval(Context& ctx) const = 0;
};
using ExprPtr = std::unique_ptr<Expr>;

struct CallArgs {
  std::vector<ExprPtr> positional;
  std::vector<std::pair<std::string, ExprPtr>> keyword;
  Args eval(Context& ctx) const;
};

struct LiteralExpr : Expr {
  Value value;
  Value eval(Context&) const override { return value; }
};
struct NameExpr : Expr {
  std::string name;
  Value eval(Context& ctx) const override;
};
struct ListExpr : Expr {  // list literals and tuples
  std::vector<ExprPtr> items;
  Value eval(Context& ctx) const override;
};
struct DictExpr : Expr {
  std::vector<std::pair<ExprPtr, ExprPtr>> items;
  Value eval(Context& ctx) const override;
};
struct AttrExpr : Expr {  // obj.name
  ExprPtr object;
  std::string name;
  Value eval(Context& ctx) const override;
};
struct ItemExpr : Expr {  // obj[key]
  ExprPtr object, key;
  Value eval(Context& ctx) const override;
};
struct SliceExpr : Expr {  // obj[start:stop:step], any part may be absent
  ExprPtr object, start, stop, step;
  Value eval(Context& ctx) const override;
};
struct CallExpr : Expr {
  ExprPtr callee;
  CallArgs args;
  Value eval(Context& ctx) const override;
};
struct FilterExpr : Expr {  // input | name(args)
  ExprPtr input;
  std::string name;
  CallArgs args;
  Value eval(Context& ctx) const override;
};
struct TestExpr : Expr {  // input is [not] name(args)
  ExprPtr input;
  std::string name;
  CallArgs args;
  bool negated = false;
  Value eval(Context& ctx) const override;
};
struct UnaryExpr : Expr {  // -x, +x, not x
  char op = '!';
  ExprPtr operand;
  Value eval(Context& ctx) const override;
};
struct BinaryExpr : Expr {  // + - * / // % ** ~
  std::string op;
  ExprPtr left, right;
  Value eval(Context& ctx) const override;
};
struct CompareExpr : Expr {  // a < b == c: chained as Python chains
  ExprPtr first;
  std::vector<std::pair<std::string, ExprPtr>> rest;  // ops: == != < > <= >= in notin
  Value eval(Context& ctx) const override;
};
struct LogicalExpr : Expr {  // and/or return an operand, as Python's do
  bool is_and = true;
  ExprPtr left, right;
  Value eval(Context& ctx) const override;
};
struct CondExpr : Expr {  // then if cond else otherwise (otherwise absent: undefined)
  ExprPtr cond, then, otherwise;
  Value eval(Context& ctx) const override;
};

enum class Flow { Normal, Break, Continue };

struct Node {
  int line = 0;
  virtual ~Node() = default;
  virtual Flow render(Context& ctx, std::string& out) const = 0;
};
using NodePtr = std::unique_ptr<Node>;

struct Body {
  std::vector<NodePtr> nodes;
  Flow render(Context& ctx, std::string& out) const;
};

// What `for` and `set` assign to: one name, several names (unpacking), or ns.attr.
struct Target {
  std::vector<std::string> names;
  std::string attr;  // set: names[0].attr = ..
};

struct TextNode : Node {
  std::string text;
  Flow render(Context& ctx, std::string& out) const override;
};
struct OutputNode : Node {
  ExprPtr expr;
  Flow render(Context& ctx, std::string& out) const override;
};
struct IfNode : Node {
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body otherwise;
  Flow render(Context& ctx, std::string& out) const override;
};
struct ForNode : Node {
  Target target;
  ExprPtr iterable, filter;
  Body body, otherwise;
  Flow render(Context& ctx, std::string& out) const override;
};
struct SetNode : Node {
  Target target;
  ExprPtr value;  // null: a block set, whose value is the rendered body
  Body body;
  Flow render(Context& ctx, std::string& out) const override;
};
struct MacroNode : Node {
  std::string name;
  std::vector<std::pair<std::string, ExprPtr>> params;  // default may be null
  Body body;
  Flow render(Context& ctx, std::string& out) const override;
};
struct WithNode : Node {
  std::vector<std::pair<std::string, ExprPtr>> assignments;
  Body body;
  Flow render(Context& ctx, std::string& out) const override;
};
struct FilterBlockNode : Node {
  std::string name;
  CallArgs args;
  Body body;
  Flow render(Context& ctx, std::string& out) const override;
};
struct ScopeNode : Node {  // {% generation %}: renders its body unchanged
  Body body;
  Flow render(Context& ctx, std::string& out) const override;
};
struct FlowNode : Node {  // break / continue
  Flow flow = Flow::Break;
  Flow render(Context&, std::string&) const override { return flow; }
};

// A variable scope: `for` bodies, macros and `with` get their own; `if` does not.
struct Frame {
  Frame* parent = nullptr;
  std::vector<std::pair<std::string, Value>> vars;
  const Value* find(std::string_view name) const;
  void set(const std::string& name, Value v);
};

struct Context {
  Frame* frame = nullptr;
  Frame* root = nullptr;
  const RenderOptions* options = nullptr;
  int depth = 0;  // macro call depth
  Value lookup(const std::string& name) const;
  void check_output(const std::string& out) const;
};

// Builtins (jinja_builtins.cpp).
using FilterFn = Value (*)(const Value& input, const Args& args);
using TestFn = bool (*)(const Value& input, const Args& args);
FilterFn find_filter(std::string_view name);
TestFn find_test(std::string_view name);
// A global function (range, namespace, dict, raise_exception, strftime_now), or undefined.
Value builtin_global(std::string_view name, const Context& ctx);
// obj.name for the Python methods templates call on str, dict and list; undefined when none.
Value method_of(const Value& object, std::string_view name);
// Jinja's getattr/getitem (attribute, then item; item, then attribute).
Value get_attr(const Value& object, std::string_view name);
Value get_item(const Value& object, const Value& key);
Value call_value(const Value& callee, const Args& args, std::string_view what);

}  // namespace kiln::jinja
