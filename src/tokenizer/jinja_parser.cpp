// Jinja lexer and parser: template text to the tree of jinja_ast.h. Whitespace handling follows
// jinja2's lexer with trim_blocks and lstrip_blocks on and keep_trailing_newline off, as Hugging
// Face configures it for chat templates.
#include <cstring>
#include <set>

#include "tokenizer/jinja_ast.h"
#include "tokenizer/unicode.h"

namespace kiln::jinja {

namespace {

enum class Tok { Text, VarBegin, VarEnd, BlockBegin, BlockEnd, Name, String, Int, Float, Op, Eof };

struct Token {
  Tok type;
  std::string text;  // Text, Name, String (unescaped), Op
  int64_t ival = 0;
  double fval = 0;
  int line = 0;
};

[[noreturn]] void syntax_error(int line, const std::string& what) {
  throw TemplateError(fmt::format("chat template syntax error, line {}: {}", line, what));
}

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
bool is_name_start(char c) {
  return std::isalpha(static_cast<unsigned char>(c)) || c == '_';
}
bool is_name_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
}

// Python's "unicode-escape" decoding of a string literal's body.
std::string unescape(std::string_view s, int line) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\' || i + 1 == s.size()) {
      out += s[i];
      continue;
    }
    const char c = s[++i];
    auto hex = [&](int n) {
      uint32_t v = 0;
      for (int k = 0; k < n; ++k) {
        if (i + 1 >= s.size() || !std::isxdigit(static_cast<unsigned char>(s[i + 1])))
          syntax_error(line, "truncated \\x/\\u escape in a string");
        const char h = s[++i];
        v = v * 16 + (std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (std::tolower(h) - 'a' + 10));
      }
      return v;
    };
    switch (c) {
      case '\n':
        break;
      case '\\':
        out += '\\';
        break;
      case '\'':
        out += '\'';
        break;
      case '"':
        out += '"';
        break;
      case 'a':
        out += '\a';
        break;
      case 'b':
        out += '\b';
        break;
      case 'f':
        out += '\f';
        break;
      case 'n':
        out += '\n';
        break;
      case 'r':
        out += '\r';
        break;
      case 't':
        out += '\t';
        break;
      case 'v':
        out += '\v';
        break;
      case 'x':
        tok::append_utf8(out, hex(2));
        break;
      case 'u':
        tok::append_utf8(out, hex(4));
        break;
      case 'U':
        tok::append_utf8(out, hex(8));
        break;
      default:
        if (c >= '0' && c <= '7') {
          uint32_t v = c - '0';
          for (int k = 0; k < 2 && i + 1 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '7'; ++k)
            v = v * 8 + (s[++i] - '0');
          tok::append_utf8(out, v);
        } else {
          out += '\\';
          out += c;
        }
    }
  }
  return out;
}

class Lexer {
 public:
  explicit Lexer(std::string_view source) {
    // jinja2 splits the source into lines and joins them with "\n": \r\n and \r become \n and one
    // trailing newline is dropped (keep_trailing_newline=False).
    src_.reserve(source.size());
    for (size_t i = 0; i < source.size(); ++i) {
      if (source[i] == '\r') {
        src_ += '\n';
        if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
      } else {
        src_ += source[i];
      }
    }
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();
  }

  std::vector<Token> run() {
    bool line_starting = true;
    while (pos_ < src_.size()) {
      size_t p = pos_;
      while (true) {
        p = src_.find('{', p);
        if (p == std::string::npos || p + 1 >= src_.size()) {
          p = std::string::npos;
          break;
        }
        const char k = src_[p + 1];
        if (k == '{' || k == '%' || k == '#') break;
        ++p;
      }
      if (p == std::string::npos) {
        emit_text(src_.substr(pos_));
        advance_to(src_.size());
        break;
      }
      std::string text = src_.substr(pos_, p - pos_);
      const char kind = src_[p + 1];
      const char sign = p + 2 < src_.size() && (src_[p + 2] == '-' || src_[p + 2] == '+') ? src_[p + 2] : 0;
      if (sign == '-') {
        size_t e = text.size();
        while (e > 0 && is_space(text[e - 1])) --e;
        text.resize(e);
      } else if (sign != '+' && kind != '{') {
        // lstrip_blocks: a block or comment tag preceded on its line only by blanks takes them away.
        const size_t nl = text.rfind('\n');
        const size_t l = nl == std::string::npos ? 0 : nl + 1;
        if (l > 0 || line_starting) {
          bool blank = l < text.size();
          for (size_t i = l; i < text.size(); ++i) blank = blank && is_space(text[i]);
          if (blank) text.resize(l);
        }
      }
      emit_text(text);
      advance_to(p + 2 + (sign ? 1 : 0));
      if (kind == '#') {
        const size_t q = src_.find("#}", pos_);
        if (q == std::string::npos) syntax_error(line_, "unterminated comment");
        const char end_sign = q > pos_ && (src_[q - 1] == '-' || src_[q - 1] == '+') ? src_[q - 1] : 0;
        advance_to(q + 2);
        after_tag(end_sign, /*block=*/true);
      } else if (kind == '%' && try_raw()) {
        // handled
      } else {
        lex_tag(kind);
      }
      line_starting = pos_ > 0 && src_[pos_ - 1] == '\n';
    }
    tokens_.push_back({Tok::Eof, "", 0, 0, line_});
    return std::move(tokens_);
  }

 private:
  // Line numbers follow source positions (advance_to), not the possibly stripped text.
  void emit_text(const std::string& text) {
    if (!text.empty()) tokens_.push_back({Tok::Text, text, 0, 0, line_});
  }

  void advance_to(size_t p) {
    for (size_t i = pos_; i < p && i < src_.size(); ++i) line_ += src_[i] == '\n';
    pos_ = p;
  }

  // After a tag: `-` strips all following whitespace; a block or comment end takes one newline.
  void after_tag(char end_sign, bool block) {
    if (end_sign == '-') {
      size_t p = pos_;
      while (p < src_.size() && is_space(src_[p])) ++p;
      advance_to(p);
    } else if (end_sign != '+' && block && pos_ < src_.size() && src_[pos_] == '\n') {
      advance_to(pos_ + 1);
    }
  }

  // {% raw %}...{% endraw %}: the text between is emitted as is.
  bool try_raw() {
    size_t p = pos_;
    while (p < src_.size() && is_space(src_[p])) ++p;
    if (src_.compare(p, 3, "raw") != 0 || (p + 3 < src_.size() && is_name_char(src_[p + 3]))) return false;
    p += 3;
    while (p < src_.size() && is_space(src_[p])) ++p;
    char open_sign = 0;
    if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) open_sign = src_[p++];
    if (src_.compare(p, 2, "%}") != 0) return false;
    advance_to(p + 2);
    after_tag(open_sign, true);
    // Find {%-? endraw -?%}.
    size_t q = pos_;
    while (true) {
      q = src_.find("{%", q);
      if (q == std::string::npos) syntax_error(line_, "missing endraw");
      size_t r = q + 2;
      const bool strip_before = r < src_.size() && src_[r] == '-';
      if (r < src_.size() && (src_[r] == '-' || src_[r] == '+')) ++r;
      while (r < src_.size() && is_space(src_[r])) ++r;
      if (src_.compare(r, 6, "endraw") != 0) {
        q += 2;
        continue;
      }
      r += 6;
      while (r < src_.size() && is_space(src_[r])) ++r;
      char end_sign = 0;
      if (r < src_.size() && (src_[r] == '-' || src_[r] == '+')) end_sign = src_[r++];
      if (src_.compare(r, 2, "%}") != 0) syntax_error(line_, "malformed endraw");
      std::string text = src_.substr(pos_, q - pos_);
      if (strip_before) {
        size_t e = text.size();
        while (e > 0 && is_space(text[e - 1])) --e;
        text.resize(e);
      }
      emit_text(text);
      advance_to(r + 2);
      after_tag(end_sign, true);
      return true;
    }
  }

  void lex_tag(char kind) {
    const bool block = kind == '%';
    tokens_.push_back({block ? Tok::BlockBegin : Tok::VarBegin, "", 0, 0, line_});
    int depth = 0;
    while (true) {
      size_t p = pos_;
      while (p < src_.size() && is_space(src_[p])) ++p;
      advance_to(p);
      if (pos_ >= src_.size()) syntax_error(line_, block ? "unterminated {% tag" : "unterminated {{ expression");
      if (depth == 0) {
        const char* end = block ? "%}" : "}}";
        char sign = 0;
        size_t q = pos_;
        if ((src_[q] == '-' || (block && src_[q] == '+')) && src_.compare(q + 1, 2, end) == 0) sign = src_[q++];
        if (src_.compare(q, 2, end) == 0) {
          tokens_.push_back({block ? Tok::BlockEnd : Tok::VarEnd, "", 0, 0, line_});
          advance_to(q + 2);
          after_tag(sign, block);
          return;
        }
      }
      lex_token(depth);
    }
  }

  void lex_token(int& depth) {
    const char c = src_[pos_];
    const int line = line_;
    if (is_name_start(c)) {
      size_t e = pos_;
      while (e < src_.size() && is_name_char(src_[e])) ++e;
      tokens_.push_back({Tok::Name, src_.substr(pos_, e - pos_), 0, 0, line});
      pos_ = e;
      return;
    }
    if (std::isdigit(static_cast<unsigned char>(c))) {
      const bool after_dot = !tokens_.empty() && tokens_.back().type == Tok::Op && tokens_.back().text == ".";
      size_t e = pos_;
      std::string digits;
      auto take_digits = [&] {
        while (e < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) {
          if (src_[e] != '_') digits += src_[e];
          ++e;
        }
      };
      take_digits();
      bool is_float = false;
      if (!after_dot && e + 1 < src_.size() && src_[e] == '.' &&
          std::isdigit(static_cast<unsigned char>(src_[e + 1]))) {
        digits += '.';
        ++e;
        take_digits();
        is_float = true;
      }
      if (!after_dot && e < src_.size() && (src_[e] == 'e' || src_[e] == 'E')) {
        size_t f = e + 1;
        if (f < src_.size() && (src_[f] == '+' || src_[f] == '-')) ++f;
        if (f < src_.size() && std::isdigit(static_cast<unsigned char>(src_[f]))) {
          digits += src_.substr(e, f - e);
          e = f;
          take_digits();
          is_float = true;
        }
      }
      Token t{is_float ? Tok::Float : Tok::Int, digits, 0, 0, line};
      try {
        if (is_float)
          t.fval = std::stod(digits);
        else
          t.ival = std::stoll(digits);
      } catch (const std::exception&) {
        syntax_error(line, "number out of range: " + digits);
      }
      tokens_.push_back(std::move(t));
      pos_ = e;
      return;
    }
    if (c == '\'' || c == '"') {
      size_t e = pos_ + 1;
      while (e < src_.size() && src_[e] != c) e += src_[e] == '\\' ? 2 : 1;
      if (e >= src_.size()) syntax_error(line, "unterminated string");
      tokens_.push_back(
          {Tok::String, unescape(std::string_view(src_).substr(pos_ + 1, e - pos_ - 1), line), 0, 0, line});
      advance_to(e + 1);
      return;
    }
    static const char* kOps2[] = {"//", "**", "==", "!=", "<=", ">="};
    for (const char* op : kOps2) {
      if (src_.compare(pos_, 2, op) == 0) {
        tokens_.push_back({Tok::Op, op, 0, 0, line});
        pos_ += 2;
        return;
      }
    }
    if (std::strchr("+-*/%~<>=.,:|()[]{}", c)) {
      if (c == '(' || c == '[' || c == '{') ++depth;
      if (c == ')' || c == ']' || c == '}') depth = std::max(0, depth - 1);
      tokens_.push_back({Tok::Op, std::string(1, c), 0, 0, line});
      ++pos_;
      return;
    }
    syntax_error(line, fmt::format("unexpected character '{}'", c));
  }

  std::string src_;
  size_t pos_ = 0;
  int line_ = 1;
  std::vector<Token> tokens_;
};

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : t_(std::move(tokens)) {}

  std::unique_ptr<Body> parse_template() {
    auto body = std::make_unique<Body>();
    *body = parse_body({});
    return body;
  }

 private:
  const Token& cur() const { return t_[i_]; }
  const Token& peek(size_t k = 1) const { return t_[std::min(i_ + k, t_.size() - 1)]; }
  bool is_op(const char* op) const { return cur().type == Tok::Op && cur().text == op; }
  bool is_name(const char* n) const { return cur().type == Tok::Name && cur().text == n; }
  bool skip_op(const char* op) {
    if (!is_op(op)) return false;
    ++i_;
    return true;
  }
  bool skip_name(const char* n) {
    if (!is_name(n)) return false;
    ++i_;
    return true;
  }
  std::string describe(const Token& t) const {
    switch (t.type) {
      case Tok::Text:
        return "text";
      case Tok::VarBegin:
        return "'{{'";
      case Tok::VarEnd:
        return "'}}'";
      case Tok::BlockBegin:
        return "'{%'";
      case Tok::BlockEnd:
        return "'%}'";
      case Tok::Eof:
        return "end of template";
      case Tok::String:
        return "a string";
      case Tok::Int:
      case Tok::Float:
        return "a number";
      default:
        return "'" + t.text + "'";
    }
  }
  [[noreturn]] void fail(const std::string& expected) const {
    syntax_error(cur().line, fmt::format("expected {}, got {}", expected, describe(cur())));
  }
  void expect_op(const char* op) {
    if (!skip_op(op)) fail(fmt::format("'{}'", op));
  }
  void expect(Tok type, const char* what) {
    if (cur().type != type) fail(what);
    ++i_;
  }
  std::string expect_name() {
    if (cur().type != Tok::Name) fail("a name");
    return t_[i_++].text;
  }

  template <typename T>
  std::unique_ptr<T> make(int line) {
    auto n = std::make_unique<T>();
    n->line = line;
    return n;
  }

  // Statements up to (not including) a block whose first word is in `ends`.
  Body parse_body(const std::set<std::string>& ends) {
    Body body;
    while (true) {
      const Token& t = cur();
      if (t.type == Tok::Eof) {
        if (!ends.empty()) {
          std::string want;
          for (const auto& e : ends) want += (want.empty() ? "'" : " or '") + e + "'";
          syntax_error(t.line, "unexpected end of template, looking for " + want);
        }
        return body;
      }
      if (t.type == Tok::Text) {
        auto n = make<TextNode>(t.line);
        n->text = t.text;
        body.nodes.push_back(std::move(n));
        ++i_;
      } else if (t.type == Tok::VarBegin) {
        ++i_;
        auto n = make<OutputNode>(t.line);
        n->expr = parse_tuple();
        expect(Tok::VarEnd, "'}}'");
        body.nodes.push_back(std::move(n));
      } else if (t.type == Tok::BlockBegin) {
        const Token& word = peek();
        if (word.type != Tok::Name) syntax_error(word.line, "expected a tag name after '{%'");
        if (ends.count(word.text)) return body;
        ++i_;
        body.nodes.push_back(parse_statement());
      } else {
        fail("text or a tag");
      }
    }
  }

  // At a block that closes the current statement: consumes `{% word` and returns the word.
  std::string take_end_word() {
    expect(Tok::BlockBegin, "'{%'");
    return expect_name();
  }

  NodePtr parse_statement() {
    const int line = cur().line;
    const std::string word = expect_name();
    if (word == "if") return parse_if(line);
    if (word == "for") return parse_for(line);
    if (word == "set") return parse_set(line);
    if (word == "macro") return parse_macro(line);
    if (word == "with") return parse_with(line);
    if (word == "filter") return parse_filter_block(line);
    if (word == "break" || word == "continue") {
      auto n = make<FlowNode>(line);
      n->flow = word == "break" ? Flow::Break : Flow::Continue;
      expect(Tok::BlockEnd, "'%}'");
      return n;
    }
    if (word == "generation") {
      auto n = make<ScopeNode>(line);
      expect(Tok::BlockEnd, "'%}'");
      n->body = parse_body({"endgeneration"});
      take_end_word();
      expect(Tok::BlockEnd, "'%}'");
      return n;
    }
    syntax_error(line, fmt::format("unknown or unsupported tag '{}'", word));
  }

  NodePtr parse_if(int line) {
    auto n = make<IfNode>(line);
    ExprPtr cond = parse_expression();
    expect(Tok::BlockEnd, "'%}'");
    while (true) {
      Body body = parse_body({"elif", "else", "endif"});
      n->branches.emplace_back(std::move(cond), std::move(body));
      const std::string w = take_end_word();
      if (w == "elif") {
        cond = parse_expression();
        expect(Tok::BlockEnd, "'%}'");
        continue;
      }
      if (w == "else") {
        expect(Tok::BlockEnd, "'%}'");
        n->otherwise = parse_body({"endif"});
        take_end_word();
      }
      expect(Tok::BlockEnd, "'%}'");
      return n;
    }
  }

  Target parse_target(bool allow_attr) {
    Target t;
    const bool paren = skip_op("(");
    t.names.push_back(expect_name());
    if (allow_attr && !paren && skip_op(".")) {
      t.attr = expect_name();
      return t;
    }
    while (skip_op(",")) {
      if (cur().type != Tok::Name) break;
      t.names.push_back(expect_name());
    }
    if (paren) expect_op(")");
    return t;
  }

  NodePtr parse_for(int line) {
    auto n = make<ForNode>(line);
    n->target = parse_target(false);
    if (!skip_name("in")) fail("'in'");
    n->iterable = parse_tuple(/*with_cond=*/false);
    if (skip_name("if")) n->filter = parse_expression();
    if (skip_name("recursive")) syntax_error(line, "recursive loops are not supported");
    expect(Tok::BlockEnd, "'%}'");
    n->body = parse_body({"else", "endfor"});
    if (take_end_word() == "else") {
      expect(Tok::BlockEnd, "'%}'");
      n->otherwise = parse_body({"endfor"});
      take_end_word();
    }
    expect(Tok::BlockEnd, "'%}'");
    return n;
  }

  NodePtr parse_set(int line) {
    auto n = make<SetNode>(line);
    n->target = parse_target(true);
    if (skip_op("=")) {
      n->value = parse_tuple();
      expect(Tok::BlockEnd, "'%}'");
      return n;
    }
    if (n->target.names.size() != 1 || !n->target.attr.empty()) fail("'='");
    expect(Tok::BlockEnd, "'%}'");
    n->body = parse_body({"endset"});
    take_end_word();
    expect(Tok::BlockEnd, "'%}'");
    return n;
  }

  NodePtr parse_macro(int line) {
    auto n = make<MacroNode>(line);
    n->name = expect_name();
    expect_op("(");
    while (!is_op(")")) {
      std::string p = expect_name();
      ExprPtr def;
      if (skip_op("=")) def = parse_expression();
      n->params.emplace_back(std::move(p), std::move(def));
      if (!skip_op(",")) break;
    }
    expect_op(")");
    expect(Tok::BlockEnd, "'%}'");
    n->body = parse_body({"endmacro"});
    take_end_word();
    if (cur().type == Tok::Name) ++i_;  // {% endmacro name %}
    expect(Tok::BlockEnd, "'%}'");
    return n;
  }

  NodePtr parse_with(int line) {
    auto n = make<WithNode>(line);
    while (cur().type != Tok::BlockEnd) {
      std::string name = expect_name();
      expect_op("=");
      n->assignments.emplace_back(std::move(name), parse_expression());
      if (!skip_op(",")) break;
    }
    expect(Tok::BlockEnd, "'%}'");
    n->body = parse_body({"endwith"});
    take_end_word();
    expect(Tok::BlockEnd, "'%}'");
    return n;
  }

  NodePtr parse_filter_block(int line) {
    auto n = make<FilterBlockNode>(line);
    n->name = expect_name();
    if (!find_filter(n->name)) syntax_error(line, fmt::format("no filter named '{}'", n->name));
    if (is_op("(")) n->args = parse_call_args();
    expect(Tok::BlockEnd, "'%}'");
    n->body = parse_body({"endfilter"});
    take_end_word();
    expect(Tok::BlockEnd, "'%}'");
    return n;
  }

  // Expressions, by jinja2's precedence: cond-expr < or < and < not < compare < +,- < ~ < *,/,//,%
  // < ** < unary -,+ < filters and tests < postfix (.attr, [item], call) < primary.
  ExprPtr parse_tuple(bool with_cond = true) {
    const int line = cur().line;
    ExprPtr first = with_cond ? parse_expression() : parse_or();
    if (!is_op(",")) return first;
    auto list = make<ListExpr>(line);
    list->items.push_back(std::move(first));
    while (skip_op(",")) {
      if (cur().type == Tok::BlockEnd || cur().type == Tok::VarEnd || is_op(")") || is_name("if")) break;
      list->items.push_back(with_cond ? parse_expression() : parse_or());
    }
    return list;
  }

  ExprPtr parse_expression() {
    ExprPtr e = parse_or();
    while (is_name("if")) {
      const int line = cur().line;
      ++i_;
      auto c = make<CondExpr>(line);
      c->then = std::move(e);
      c->cond = parse_or();
      if (skip_name("else")) c->otherwise = parse_expression();
      e = std::move(c);
    }
    return e;
  }

  ExprPtr parse_or() {
    ExprPtr left = parse_and();
    while (is_name("or")) {
      auto n = make<LogicalExpr>(cur().line);
      ++i_;
      n->is_and = false;
      n->left = std::move(left);
      n->right = parse_and();
      left = std::move(n);
    }
    return left;
  }

  ExprPtr parse_and() {
    ExprPtr left = parse_not();
    while (is_name("and")) {
      auto n = make<LogicalExpr>(cur().line);
      ++i_;
      n->is_and = true;
      n->left = std::move(left);
      n->right = parse_not();
      left = std::move(n);
    }
    return left;
  }

  ExprPtr parse_not() {
    if (is_name("not")) {
      auto n = make<UnaryExpr>(cur().line);
      ++i_;
      n->op = '!';
      n->operand = parse_not();
      return n;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    const int line = cur().line;
    ExprPtr first = parse_math1();
    std::unique_ptr<CompareExpr> cmp;
    while (true) {
      std::string op;
      if (cur().type == Tok::Op && (cur().text == "==" || cur().text == "!=" || cur().text == "<" ||
                                    cur().text == ">" || cur().text == "<=" || cur().text == ">=")) {
        op = cur().text;
        ++i_;
      } else if (is_name("in")) {
        op = "in";
        ++i_;
      } else if (is_name("not") && peek().type == Tok::Name && peek().text == "in") {
        op = "notin";
        i_ += 2;
      } else {
        break;
      }
      if (!cmp) {
        cmp = make<CompareExpr>(line);
        cmp->first = std::move(first);
      }
      cmp->rest.emplace_back(op, parse_math1());
    }
    if (cmp) return cmp;
    return first;
  }

  ExprPtr binary(std::string op, ExprPtr l, ExprPtr r, int line) {
    auto n = make<BinaryExpr>(line);
    n->op = std::move(op);
    n->left = std::move(l);
    n->right = std::move(r);
    return n;
  }

  ExprPtr parse_math1() {
    ExprPtr left = parse_concat();
    while (is_op("+") || is_op("-")) {
      const Token op = t_[i_++];
      left = binary(op.text, std::move(left), parse_concat(), op.line);
    }
    return left;
  }

  ExprPtr parse_concat() {
    ExprPtr left = parse_math2();
    while (is_op("~")) {
      const int line = t_[i_++].line;
      left = binary("~", std::move(left), parse_math2(), line);
    }
    return left;
  }

  ExprPtr parse_math2() {
    ExprPtr left = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const Token op = t_[i_++];
      left = binary(op.text, std::move(left), parse_pow(), op.line);
    }
    return left;
  }

  ExprPtr parse_pow() {
    ExprPtr left = parse_unary();
    while (is_op("**")) {
      const int line = t_[i_++].line;
      left = binary("**", std::move(left), parse_unary(), line);
    }
    return left;
  }

  ExprPtr parse_unary(bool with_filter = true) {
    ExprPtr node;
    if (is_op("-") || is_op("+")) {
      auto n = make<UnaryExpr>(cur().line);
      n->op = cur().text[0];
      ++i_;
      n->operand = parse_unary(false);
      node = std::move(n);
    } else {
      node = parse_postfix(parse_primary());
    }
    if (with_filter) node = parse_filter_expr(std::move(node));
    return node;
  }

  ExprPtr parse_primary() {
    const Token& t = cur();
    const int line = t.line;
    if (t.type == Tok::Name) {
      ++i_;
      if (t.text == "true" || t.text == "True" || t.text == "false" || t.text == "False") {
        auto n = make<LiteralExpr>(line);
        n->value = Value(t.text == "true" || t.text == "True");
        return n;
      }
      if (t.text == "none" || t.text == "None") {
        auto n = make<LiteralExpr>(line);
        n->value = Value::none();
        return n;
      }
      auto n = make<NameExpr>(line);
      n->name = t.text;
      return n;
    }
    if (t.type == Tok::String) {
      std::string s;
      while (cur().type == Tok::String) s += t_[i_++].text;
      auto n = make<LiteralExpr>(line);
      n->value = Value(std::move(s));
      return n;
    }
    if (t.type == Tok::Int || t.type == Tok::Float) {
      auto n = make<LiteralExpr>(line);
      n->value = t.type == Tok::Int ? Value(t.ival) : Value(t.fval);
      ++i_;
      return n;
    }
    if (skip_op("(")) {
      if (skip_op(")")) return make<ListExpr>(line);
      ExprPtr e = parse_tuple();
      expect_op(")");
      return e;
    }
    if (skip_op("[")) {
      auto n = make<ListExpr>(line);
      while (!is_op("]")) {
        n->items.push_back(parse_expression());
        if (!skip_op(",")) break;
      }
      expect_op("]");
      return n;
    }
    if (skip_op("{")) {
      auto n = make<DictExpr>(line);
      while (!is_op("}")) {
        ExprPtr k = parse_expression();
        expect_op(":");
        n->items.emplace_back(std::move(k), parse_expression());
        if (!skip_op(",")) break;
      }
      expect_op("}");
      return n;
    }
    fail("an expression");
  }

  CallArgs parse_call_args() {
    CallArgs args;
    expect_op("(");
    while (!is_op(")")) {
      if (is_op("*") || is_op("**")) syntax_error(cur().line, "*args and **kwargs in calls are not supported");
      if (cur().type == Tok::Name && peek().type == Tok::Op && peek().text == "=") {
        std::string name = t_[i_].text;
        i_ += 2;
        args.keyword.emplace_back(std::move(name), parse_expression());
      } else {
        if (!args.keyword.empty()) syntax_error(cur().line, "positional argument after a keyword argument");
        args.positional.push_back(parse_expression());
      }
      if (!skip_op(",")) break;
    }
    expect_op(")");
    return args;
  }

  ExprPtr parse_postfix(ExprPtr node) {
    while (true) {
      const int line = cur().line;
      if (skip_op(".")) {
        if (cur().type == Tok::Int) {
          auto n = make<ItemExpr>(line);
          n->object = std::move(node);
          auto k = make<LiteralExpr>(line);
          k->value = Value(t_[i_++].ival);
          n->key = std::move(k);
          node = std::move(n);
        } else {
          auto n = make<AttrExpr>(line);
          n->object = std::move(node);
          n->name = expect_name();
          node = std::move(n);
        }
      } else if (skip_op("[")) {
        ExprPtr parts[3];
        int colons = 0;
        while (true) {
          if (is_op("]")) break;
          if (skip_op(":")) {
            if (++colons > 2) fail("']'");
            continue;
          }
          if (parts[colons]) fail("':' or ']'");
          parts[colons] = parse_expression();
        }
        expect_op("]");
        if (colons == 0) {
          if (!parts[0]) fail("a subscript");
          auto n = make<ItemExpr>(line);
          n->object = std::move(node);
          n->key = std::move(parts[0]);
          node = std::move(n);
        } else {
          auto n = make<SliceExpr>(line);
          n->object = std::move(node);
          n->start = std::move(parts[0]);
          n->stop = std::move(parts[1]);
          n->step = std::move(parts[2]);
          node = std::move(n);
        }
      } else if (is_op("(")) {
        auto n = make<CallExpr>(line);
        n->callee = std::move(node);
        n->args = parse_call_args();
        node = std::move(n);
      } else {
        return node;
      }
    }
  }

  ExprPtr parse_filter_expr(ExprPtr node) {
    while (true) {
      const int line = cur().line;
      if (skip_op("|")) {
        auto n = make<FilterExpr>(line);
        n->input = std::move(node);
        n->name = expect_name();
        if (!find_filter(n->name)) syntax_error(line, fmt::format("no filter named '{}'", n->name));
        if (is_op("(")) n->args = parse_call_args();
        node = std::move(n);
      } else if (skip_name("is")) {
        auto n = make<TestExpr>(line);
        n->input = std::move(node);
        n->negated = skip_name("not");
        if (cur().type == Tok::Name) {
          n->name = expect_name();
        } else if (cur().type == Tok::Op && (cur().text == "==" || cur().text == "!=" || cur().text == "<" ||
                                             cur().text == ">" || cur().text == "<=" || cur().text == ">=")) {
          n->name = t_[i_++].text;
        } else {
          fail("a test name");
        }
        if (!find_test(n->name)) syntax_error(line, fmt::format("no test named '{}'", n->name));
        const Token& a = cur();
        if (is_op("(")) {
          n->args = parse_call_args();
        } else if ((a.type == Tok::Name || a.type == Tok::String || a.type == Tok::Int || a.type == Tok::Float ||
                    is_op("[") || is_op("{")) &&
                   !(a.type == Tok::Name && (a.text == "else" || a.text == "or" || a.text == "and"))) {
          n->args.positional.push_back(parse_postfix(parse_primary()));
        }
        node = std::move(n);
      } else if (is_op("(")) {
        auto n = make<CallExpr>(line);
        n->callee = std::move(node);
        n->args = parse_call_args();
        node = std::move(n);
      } else {
        return node;
      }
    }
  }

  std::vector<Token> t_;
  size_t i_ = 0;
};

}  // namespace

Template::Template(std::string_view source) {
  body_ = Parser(Lexer(source).run()).parse_template();
}

Template::~Template() = default;
Template::Template(Template&&) noexcept = default;
Template& Template::operator=(Template&&) noexcept = default;

}  // namespace kiln::jinja
