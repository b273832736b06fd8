// Jinja evaluation: expressions with Python's operator semantics, statements with jinja2's scoping
// (a `for` iteration, a macro call and `with` open a scope; `if` does not; namespace() objects are
// how a loop body changes state outside it).
#include <cmath>

#include "tokenizer/jinja_ast.h"

namespace kiln::jinja {

namespace {

[[noreturn]] void type_error(int line, const std::string& what) {
  throw TemplateError(fmt::format("chat template error, line {}: {}", line, what));
}

void check_defined(const Value& v, int line) {
  if (v.is_undefined())
    type_error(line, v.undefined_hint().empty() ? "use of an undefined value"
                                                : fmt::format("'{}' is undefined", v.undefined_hint()));
}

// Python's floor division and modulo.
int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

Value arithmetic(const std::string& op, const Value& a, const Value& b, int line) {
  check_defined(a, line);
  check_defined(b, line);
  if (a.is_generator() || b.is_generator())
    type_error(line,
               fmt::format("unsupported operand type(s) for {}: '{}' and '{}'", op, a.type_name(), b.type_name()));
  if (op == "+") {
    if (a.is_string() && b.is_string()) return Value(a.as_string() + b.as_string());
    if (a.is_list() && b.is_list()) {
      List l = a.as_list();
      l.insert(l.end(), b.as_list().begin(), b.as_list().end());
      return Value(std::move(l));
    }
  }
  if (op == "*") {
    const Value* seq = a.is_string() || a.is_list() ? &a : (b.is_string() || b.is_list() ? &b : nullptr);
    const Value* count = seq == &a ? &b : &a;
    if (seq && count->to_int()) {
      const int64_t n = *count->to_int();
      if (n > 0 && seq->length() * n > (int64_t{1} << 24)) type_error(line, "repetition too large");
      if (seq->is_string()) {
        std::string s;
        for (int64_t i = 0; i < n; ++i) s += seq->as_string();
        return Value(std::move(s));
      }
      List l;
      for (int64_t i = 0; i < n; ++i) l.insert(l.end(), seq->as_list().begin(), seq->as_list().end());
      return Value(std::move(l));
    }
  }
  if (!a.is_number() || !b.is_number())
    type_error(line,
               fmt::format("unsupported operand type(s) for {}: '{}' and '{}'", op, a.type_name(), b.type_name()));
  const auto ia = a.to_int(), ib = b.to_int();
  const bool ints = ia && ib;
  if (op == "/") {
    if (b.to_double() == 0.0) type_error(line, "division by zero");
    return Value(a.to_double() / b.to_double());
  }
  if (ints) {
    const int64_t x = *ia, y = *ib;
    if (op == "+") return Value(x + y);
    if (op == "-") return Value(x - y);
    if (op == "*") return Value(x * y);
    if (op == "//" || op == "%") {
      if (y == 0) type_error(line, "integer division or modulo by zero");
      return op == "//" ? Value(floor_div(x, y)) : Value(x - floor_div(x, y) * y);
    }
    if (op == "**") {
      if (y >= 0) {
        int64_t r = 1;
        for (int64_t i = 0; i < y && i < 64; ++i) r *= x;
        return Value(r);
      }
      return Value(std::pow(static_cast<double>(x), static_cast<double>(y)));
    }
  }
  const double x = a.to_double(), y = b.to_double();
  if (op == "+") return Value(x + y);
  if (op == "-") return Value(x - y);
  if (op == "*") return Value(x * y);
  if (op == "//" || op == "%") {
    if (y == 0.0) type_error(line, "float division or modulo by zero");
    const double q = std::floor(x / y);
    return op == "//" ? Value(q) : Value(x - q * y);
  }
  if (op == "**") return Value(std::pow(x, y));
  type_error(line, "unknown operator " + op);
}

bool contains(const Value& container, const Value& item, int line) {
  if (container.is_undefined()) return false;
  if (container.is_string()) {
    if (!item.is_string())
      type_error(line, fmt::format("'in <string>' requires string as left operand, not {}", item.type_name()));
    return container.as_string().find(item.as_string()) != std::string::npos;
  }
  if (container.is_list()) {
    for (const Value& v : container.as_list())
      if (equals(v, item)) return true;
    return false;
  }
  if (container.is_dict()) return item.is_string() && container.as_dict().find(item.as_string()) != nullptr;
  type_error(line, fmt::format("argument of type '{}' is not iterable", container.type_name()));
}

// Python slice indices for a sequence of length n.
List slice_list(const List& items, const Value& start_v, const Value& stop_v, const Value& step_v, int line) {
  const int64_t n = static_cast<int64_t>(items.size());
  auto as_index = [&](const Value& v) -> std::optional<int64_t> {
    if (v.is_undefined() || v.is_none()) return std::nullopt;
    if (!v.to_int()) type_error(line, "slice indices must be integers or None");
    return *v.to_int();
  };
  const int64_t step = as_index(step_v).value_or(1);
  if (step == 0) type_error(line, "slice step cannot be zero");
  auto clamp = [&](std::optional<int64_t> i, int64_t def) {
    if (!i) return def;
    int64_t v = *i;
    if (v < 0) v += n;
    if (step > 0) return std::clamp<int64_t>(v, 0, n);
    return std::clamp<int64_t>(v, -1, n - 1);
  };
  const int64_t start = clamp(as_index(start_v), step > 0 ? 0 : n - 1);
  const int64_t stop = clamp(as_index(stop_v), step > 0 ? n : -1);
  List out;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) out.push_back(items[i]);
  return out;
}

void assign(Context& ctx, const Target& t, const Value& v, int line) {
  if (!t.attr.empty()) {
    const Value obj = ctx.lookup(t.names[0]);
    if (!obj.is_dict() || !obj.as_dict().is_namespace)
      type_error(line, fmt::format("cannot assign attribute on non-namespace object '{}'", t.names[0]));
    obj.mutable_dict().set(t.attr, v);
    return;
  }
  if (t.names.size() == 1) {
    ctx.frame->set(t.names[0], v);
    return;
  }
  const List items = v.iterate();
  if (items.size() != t.names.size())
    type_error(line, fmt::format("cannot unpack {} values into {} names", items.size(), t.names.size()));
  for (size_t i = 0; i < items.size(); ++i) ctx.frame->set(t.names[i], items[i]);
}

// Makes `frame` the current scope for the lifetime of this object.
class ScopeGuard {
 public:
  ScopeGuard(Context& ctx, Frame& frame) : ctx_(ctx), saved_(ctx.frame) {
    frame.parent = ctx.frame;
    ctx.frame = &frame;
  }
  ~ScopeGuard() { ctx_.frame = saved_; }

 private:
  Context& ctx_;
  Frame* saved_;
};

}  // namespace

const Value* Frame::find(std::string_view name) const {
  for (const auto& [k, v] : vars)
    if (k == name) return &v;
  return nullptr;
}

void Frame::set(const std::string& name, Value v) {
  for (auto& [k, x] : vars)
    if (k == name) {
      x = std::move(v);
      return;
    }
  vars.emplace_back(name, std::move(v));
}

Value Context::lookup(const std::string& name) const {
  for (const Frame* f = frame; f; f = f->parent)
    if (const Value* v = f->find(name)) return *v;
  Value g = builtin_global(name, *this);
  if (!g.is_undefined()) return g;
  return Value::undefined(name);
}

void Context::check_output(const std::string& out) const {
  if (out.size() > options->max_output_bytes)
    throw TemplateError(fmt::format("chat template output exceeds {} bytes", options->max_output_bytes));
}

Args CallArgs::eval(Context& ctx) const {
  Args a;
  for (const auto& e : positional) a.positional.push_back(e->eval(ctx));
  for (const auto& [k, e] : keyword) a.keyword.emplace_back(k, e->eval(ctx));
  return a;
}

Value NameExpr::eval(Context& ctx) const {
  return ctx.lookup(name);
}

Value ListExpr::eval(Context& ctx) const {
  List l;
  for (const auto& e : items) l.push_back(e->eval(ctx));
  return Value(std::move(l));
}

Value DictExpr::eval(Context& ctx) const {
  Dict d;
  for (const auto& [k, v] : items) {
    const Value key = k->eval(ctx);
    d.set(key.is_string() ? key.as_string() : key.str(), v->eval(ctx));
  }
  return Value(std::move(d));
}

Value AttrExpr::eval(Context& ctx) const {
  const Value obj = object->eval(ctx);
  if (obj.is_undefined()) type_error(line, fmt::format("'{}' is undefined (reading .{})", obj.undefined_hint(), name));
  return get_attr(obj, name);
}

Value ItemExpr::eval(Context& ctx) const {
  const Value obj = object->eval(ctx);
  const Value k = key->eval(ctx);
  if (obj.is_undefined())
    type_error(line, fmt::format("'{}' is undefined (reading [{}])", obj.undefined_hint(), k.repr()));
  return get_item(obj, k);
}

Value SliceExpr::eval(Context& ctx) const {
  const Value obj = object->eval(ctx);
  const Value a = start ? start->eval(ctx) : Value::none();
  const Value b = stop ? stop->eval(ctx) : Value::none();
  const Value c = step ? step->eval(ctx) : Value::none();
  check_defined(obj, line);
  if (obj.is_generator()) return Value::undefined("slice");
  if (obj.is_list()) return Value(slice_list(obj.as_list(), a, b, c, line));
  if (obj.is_string()) {
    List chars = obj.iterate();
    std::string s;
    for (const Value& ch : slice_list(chars, a, b, c, line)) s += ch.as_string();
    return Value(std::move(s));
  }
  type_error(line, fmt::format("'{}' object is not subscriptable", obj.type_name()));
}

Value CallExpr::eval(Context& ctx) const {
  const Value f = callee->eval(ctx);
  const Args a = args.eval(ctx);
  if (f.is_undefined()) type_error(line, fmt::format("'{}' is undefined and cannot be called", f.undefined_hint()));
  if (!f.is_callable()) type_error(line, fmt::format("'{}' object is not callable", f.type_name()));
  return f.as_function()(a);
}

Value call_value(const Value& callee, const Args& args, std::string_view what) {
  if (!callee.is_callable()) throw TemplateError(fmt::format("'{}' is not callable", what));
  return callee.as_function()(args);
}

Value FilterExpr::eval(Context& ctx) const {
  const Value v = input->eval(ctx);
  const Args a = args.eval(ctx);
  try {
    return find_filter(name)(v, a);
  } catch (const TemplateError& e) {
    if (e.raised()) throw;
    type_error(line, fmt::format("filter '{}': {}", name, e.what()));
  }
}

Value TestExpr::eval(Context& ctx) const {
  const Value v = input->eval(ctx);
  const Args a = args.eval(ctx);
  bool r;
  try {
    r = find_test(name)(v, a);
  } catch (const TemplateError& e) {
    type_error(line, fmt::format("test '{}': {}", name, e.what()));
  }
  return Value(negated ? !r : r);
}

Value UnaryExpr::eval(Context& ctx) const {
  const Value v = operand->eval(ctx);
  if (op == '!') return Value(!v.truthy());
  check_defined(v, line);
  if (!v.is_number()) type_error(line, fmt::format("bad operand type for unary {}: '{}'", op, v.type_name()));
  if (op == '+') return v.is_bool() ? Value(*v.to_int()) : v;
  if (auto i = v.to_int()) return Value(-*i);
  return Value(-v.as_float());
}

Value BinaryExpr::eval(Context& ctx) const {
  const Value a = left->eval(ctx);
  const Value b = right->eval(ctx);
  if (op == "~") return Value(a.str() + b.str());
  return arithmetic(op, a, b, line);
}

Value CompareExpr::eval(Context& ctx) const {
  Value a = first->eval(ctx);
  for (const auto& [op, e] : rest) {
    Value b = e->eval(ctx);
    bool r;
    if (op == "==")
      r = equals(a, b);
    else if (op == "!=")
      r = !equals(a, b);
    else if (op == "in")
      r = contains(b, a, line);
    else if (op == "notin")
      r = !contains(b, a, line);
    else {
      try {
        if (op == "<")
          r = less_than(a, b);
        else if (op == ">")
          r = less_than(b, a);
        else if (op == "<=")
          r = !less_than(b, a);
        else
          r = !less_than(a, b);
      } catch (const TemplateError& err) {
        type_error(line, err.what());
      }
    }
    if (!r) return Value(false);
    a = std::move(b);
  }
  return Value(true);
}

Value LogicalExpr::eval(Context& ctx) const {
  Value a = left->eval(ctx);
  if (is_and ? !a.truthy() : a.truthy()) return a;
  return right->eval(ctx);
}

Value CondExpr::eval(Context& ctx) const {
  if (cond->eval(ctx).truthy()) return then->eval(ctx);
  return otherwise ? otherwise->eval(ctx) : Value::undefined();
}

Flow Body::render(Context& ctx, std::string& out) const {
  for (const auto& n : nodes) {
    const Flow f = n->render(ctx, out);
    if (f != Flow::Normal) return f;
  }
  return Flow::Normal;
}

Flow TextNode::render(Context& ctx, std::string& out) const {
  out += text;
  ctx.check_output(out);
  return Flow::Normal;
}

Flow OutputNode::render(Context& ctx, std::string& out) const {
  out += expr->eval(ctx).str();
  ctx.check_output(out);
  return Flow::Normal;
}

Flow IfNode::render(Context& ctx, std::string& out) const {
  for (const auto& [cond, body] : branches)
    if (cond->eval(ctx).truthy()) return body.render(ctx, out);
  return otherwise.render(ctx, out);
}

Flow ForNode::render(Context& ctx, std::string& out) const {
  const Value seq = iterable->eval(ctx);
  if (seq.is_none() || seq.is_number() || seq.is_callable())
    type_error(line, fmt::format("'{}' object is not iterable", seq.type_name()));
  List items = seq.iterate();
  if (filter) {
    List kept;
    for (const Value& item : items) {
      Frame f;
      ScopeGuard g(ctx, f);
      assign(ctx, target, item, line);
      if (filter->eval(ctx).truthy()) kept.push_back(item);
    }
    items = std::move(kept);
  }
  if (items.empty()) {
    Frame f;
    ScopeGuard g(ctx, f);
    const Flow fl = otherwise.render(ctx, out);
    return fl == Flow::Normal ? Flow::Normal : fl;
  }
  const int64_t n = static_cast<int64_t>(items.size());
  for (int64_t i = 0; i < n; ++i) {
    Frame f;
    ScopeGuard g(ctx, f);
    Dict loop;
    loop.entries = {{"index", Value(i + 1)},    {"index0", Value(i)},
                    {"revindex", Value(n - i)}, {"revindex0", Value(n - i - 1)},
                    {"first", Value(i == 0)},   {"last", Value(i == n - 1)},
                    {"length", Value(n)},       {"depth", Value(1)},
                    {"depth0", Value(0)}};
    if (i > 0) loop.entries.emplace_back("previtem", items[i - 1]);
    if (i + 1 < n) loop.entries.emplace_back("nextitem", items[i + 1]);
    loop.entries.emplace_back("cycle", Value(Function([i](const Args& a) {
                                if (a.positional.empty()) throw TemplateError("loop.cycle() needs at least one value");
                                return a.positional[i % a.positional.size()];
                              })));
    f.set("loop", Value(std::move(loop)));
    assign(ctx, target, items[i], line);
    const Flow fl = body.render(ctx, out);
    if (fl == Flow::Break) break;
  }
  return Flow::Normal;
}

Flow SetNode::render(Context& ctx, std::string& out) const {
  if (value) {
    assign(ctx, target, value->eval(ctx), line);
  } else {
    std::string captured;
    body.render(ctx, captured);
    assign(ctx, target, Value(std::move(captured)), line);
  }
  return Flow::Normal;
}

Flow MacroNode::render(Context& ctx, std::string& out) const {
  Context* c = &ctx;
  const MacroNode* self = this;
  ctx.frame->set(name, Value(Function([c, self](const Args& args) -> Value {
                   if (c->depth > 64) throw TemplateError(fmt::format("macro '{}' recursed too deep", self->name));
                   Frame f;
                   for (size_t i = 0; i < self->params.size(); ++i) {
                     const auto& [pname, def] = self->params[i];
                     if (const Value* v = args.get(i, pname))
                       f.set(pname, *v);
                     else
                       f.set(pname, def ? def->eval(*c) : Value::undefined(pname));
                   }
                   if (args.positional.size() > self->params.size())
                     throw TemplateError(fmt::format("macro '{}' takes {} arguments, {} given", self->name,
                                                     self->params.size(), args.positional.size()));
                   Frame* saved = c->frame;
                   f.parent = c->root;
                   c->frame = &f;
                   ++c->depth;
                   std::string result;
                   try {
                     self->body.render(*c, result);
                   } catch (...) {
                     c->frame = saved;
                     --c->depth;
                     throw;
                   }
                   c->frame = saved;
                   --c->depth;
                   return Value(std::move(result));
                 })));
  return Flow::Normal;
}

Flow WithNode::render(Context& ctx, std::string& out) const {
  Frame f;
  std::vector<Value> values;
  for (const auto& [n, e] : assignments) values.push_back(e->eval(ctx));
  ScopeGuard g(ctx, f);
  for (size_t i = 0; i < assignments.size(); ++i) f.set(assignments[i].first, values[i]);
  return body.render(ctx, out);
}

Flow FilterBlockNode::render(Context& ctx, std::string& out) const {
  std::string captured;
  const Flow fl = body.render(ctx, captured);
  out += find_filter(name)(Value(std::move(captured)), args.eval(ctx)).str();
  ctx.check_output(out);
  return fl;
}

Flow ScopeNode::render(Context& ctx, std::string& out) const {
  return body.render(ctx, out);
}

std::string Template::render(const Dict& variables, const RenderOptions& options) const {
  Frame root;
  for (const auto& [k, v] : variables.entries) root.set(k, v);
  Context ctx;
  ctx.frame = &root;
  ctx.root = &root;
  ctx.options = &options;
  std::string out;
  body_->render(ctx, out);
  return out;
}

}  // namespace kiln::jinja
