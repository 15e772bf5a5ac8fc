#include "engine/chat/jinja_parser.h"

#include <set>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/chat/jinja_status.h"

namespace r2::chat::jinja {
namespace {

using Type = Token::Type;

class Parser {
 public:
  explicit Parser(const std::vector<Token>& tokens) : tokens_(tokens) {}

  absl::StatusOr<StmtList> Run() {
    std::string stop;
    JINJA_ASSIGN_OR_RETURN(StmtList body, ParseBody({}, &stop));
    return body;
  }

 private:
  // ---- token helpers ------------------------------------------------------------------------
  const Token& Cur() const { return tokens_[pos_]; }
  const Token& Peek(size_t n = 1) const { return tokens_[std::min(pos_ + n, tokens_.size() - 1)]; }
  void Next() {
    if (pos_ + 1 < tokens_.size()) ++pos_;
  }
  bool IsOp(std::string_view op) const { return Cur().type == Type::kOp && Cur().text == op; }
  bool IsName(std::string_view n) const { return Cur().type == Type::kName && Cur().text == n; }
  bool SkipOp(std::string_view op) {
    if (!IsOp(op)) return false;
    Next();
    return true;
  }
  bool SkipName(std::string_view n) {
    if (!IsName(n)) return false;
    Next();
    return true;
  }

  absl::Status Error(const std::string& message) const {
    return absl::InvalidArgumentError(
        absl::StrCat("template syntax error at line ", Cur().line, ": ", message));
  }
  std::string Describe(const Token& t) const {
    switch (t.type) {
      case Type::kEof:
        return "end of template";
      case Type::kBlockEnd:
        return "'%}'";
      case Type::kVarEnd:
        return "'}}'";
      case Type::kText:
        return "text";
      default:
        return "'" + t.text + "'";
    }
  }
  absl::Status ExpectOp(std::string_view op) {
    if (SkipOp(op)) return absl::OkStatus();
    return Error(absl::StrCat("expected '", std::string(op), "', got ", Describe(Cur())));
  }
  absl::Status ExpectBlockEnd() {
    if (Cur().type != Type::kBlockEnd) {
      return Error(absl::StrCat("expected end of block tag, got ", Describe(Cur())));
    }
    Next();
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> ExpectName() {
    if (Cur().type != Type::kName) {
      return Error(absl::StrCat("expected a name, got ", Describe(Cur())));
    }
    std::string n = Cur().text;
    Next();
    return n;
  }

  struct DepthGuard {
    explicit DepthGuard(int* d) : depth(d) { ++*depth; }
    ~DepthGuard() { --*depth; }
    int* depth;
  };
  absl::Status CheckDepth() const {
    if (depth_ > kMaxParseDepth) return Error("template nested too deeply");
    return absl::OkStatus();
  }

  static ExprPtr MakeExpr(Expr::Kind kind, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    return e;
  }

  // ---- statements ---------------------------------------------------------------------------
  // Parses statements until a block tag whose keyword is in `stops`; leaves the parser on that
  // keyword and stores it in *stop.
  absl::StatusOr<StmtList> ParseBody(const std::set<std::string>& stops, std::string* stop) {
    DepthGuard guard(&depth_);
    JINJA_RETURN_IF_ERROR(CheckDepth());
    StmtList body;
    while (true) {
      const Token& t = Cur();
      if (t.type == Type::kEof) {
        if (stops.empty()) return body;
        return Error(absl::StrCat("unexpected end of template, expected one of: ",
                                  absl::StrJoin(stops, ", ")));
      }
      if (t.type == Type::kText) {
        auto s = std::make_unique<Stmt>();
        s->kind = Stmt::Kind::kText;
        s->line = t.line;
        s->text = t.text;
        body.push_back(std::move(s));
        Next();
      } else if (t.type == Type::kVarBegin) {
        JINJA_ASSIGN_OR_RETURN(StmtPtr s, ParseOutput());
        body.push_back(std::move(s));
      } else if (t.type == Type::kBlockBegin) {
        Next();
        if (Cur().type != Type::kName) return Error("expected a tag name after '{%'");
        if (stops.count(Cur().text)) {
          *stop = Cur().text;
          return body;
        }
        JINJA_RETURN_IF_ERROR(ParseBlock(&body));
      } else {
        return Error(absl::StrCat("unexpected ", Describe(t)));
      }
    }
  }

  absl::StatusOr<StmtPtr> ParseOutput() {
    auto s = std::make_unique<Stmt>();
    s->kind = Stmt::Kind::kOutput;
    s->line = Cur().line;
    Next();
    JINJA_ASSIGN_OR_RETURN(s->expr, ParseTupleExpr(true));
    if (Cur().type != Type::kVarEnd)
      return Error(absl::StrCat("expected '}}', got ", Describe(Cur())));
    Next();
    return s;
  }

  absl::Status ParseBlock(StmtList* body) {
    std::string tag = Cur().text;
    int line = Cur().line;
    Next();
    if (tag == "if") return Append(ParseIf(line), body);
    if (tag == "for") return Append(ParseFor(line), body);
    if (tag == "set") return Append(ParseSet(line), body);
    if (tag == "macro") return Append(ParseMacro(line), body);
    if (tag == "break" || tag == "continue") {
      auto s = std::make_unique<Stmt>();
      s->kind = tag == "break" ? Stmt::Kind::kBreak : Stmt::Kind::kContinue;
      s->line = line;
      JINJA_RETURN_IF_ERROR(ExpectBlockEnd());
      body->push_back(std::move(s));
      return absl::OkStatus();
    }
    if (tag == "generation") return ParseGeneration(body);
    return absl::InvalidArgumentError(
        absl::StrCat("template syntax error at line ", line, ": unknown tag '", tag, "'"));
  }

  static absl::Status Append(absl::StatusOr<StmtPtr> s, StmtList* body) {
    if (!s.ok()) return s.status();
    body->push_back(*std::move(s));
    return absl::OkStatus();
  }

  // {% generation %}...{% endgeneration %} marks assistant text for training masks; its body
  // renders as if the tags were not there.
  absl::Status ParseGeneration(StmtList* body) {
    JINJA_RETURN_IF_ERROR(ExpectBlockEnd());
    std::string stop;
    JINJA_ASSIGN_OR_RETURN(StmtList inner, ParseBody({"endgeneration"}, &stop));
    Next();
    JINJA_RETURN_IF_ERROR(ExpectBlockEnd());
    for (auto& s : inner) body->push_back(std::move(s));
    return absl::OkStatus();
  }

  absl::StatusOr<StmtPtr> ParseIf(int line) {
    auto s = std::make_unique<Stmt>();
    s->kind = Stmt::Kind::kIf;
    s->line = line;
    JINJA_ASSIGN_OR_RETURN(s->expr, ParseExpression(true));
    JINJA_RETURN_IF_ERROR(ExpectBlockEnd());
    std::string stop;
    JINJA_ASSIGN_OR_RETURN(s->body, ParseBody({"elif", "else", "endif"}, &stop));
    int stop_line = Cur().line;
    Next();
    if (stop == "elif") {
      JINJA_ASSIGN_OR_RETURN(StmtPtr nested, ParseIf(stop_line));
      s->else_body.push_back(std::move(nested));
      return s;  // the nested if consumed {% endif %}
    }
    if (stop == "else") {
      JINJA_RETURN_IF_ERROR(ExpectBlockEnd());
      JINJA_ASSIGN_OR_RETURN(s->else_body, ParseBody({"endif"}, &stop));
      Next();
    }
    JINJA_RETURN_IF_ERROR(ExpectBlockEnd());
    return s;
  }

  absl::StatusOr<std::vector<std::string>> ParseTargets() {
    std::vector<std::string> targets;
    bool paren = SkipOp("(");
    do {
      JINJA_ASSIGN_OR_RETURN(std::string n, ExpectName());
      targets.push_back(std::move(n));
    } while (SkipOp(","));
    if (paren) JINJA_RETURN_IF_ERROR(ExpectOp(")"));
    return targets;
  }

  absl::StatusOr<StmtPtr> ParseFor(int line) {
    auto s = std::make_unique<Stmt>();
    s->kind = Stmt::Kind::kFor;
    s->line = line;
    JINJA_ASSIGN_OR_RETURN(s->targets, ParseTargets());
    if (!SkipName("in")) return Error("expected 'in' in for loop");
    JINJA_ASSIGN_OR_RETURN(s->expr, ParseTupleExpr(false));
    if (SkipName("if")) {
      JINJA_ASSIGN_OR_RETURN(s->cond, ParseExpression(true));
    }
    if (SkipName("recursive")) return Error("recursive loops are not supported");
    JINJA_RETURN_IF_ERROR(ExpectBlockEnd());
    std::string stop;
    JINJA_ASSIGN_OR_RETURN(s->body, ParseBody({"else", "endfor"}, &stop));
    Next();
    JINJA_RETURN_IF_ERROR(ExpectBlockEnd());
    if (stop == "else") {
      JINJA_ASSIGN_OR_RETURN(s->else_body, ParseBody({"endfor"}, &stop));
      Next();
      JINJA_RETURN_IF_ERROR(ExpectBlockEnd());
    }
    return s;
  }

  absl::StatusOr<StmtPtr> ParseSet(int line) {
    auto s = std::make_unique<Stmt>();
    s->kind = Stmt::Kind::kSet;
    s->line = line;
    JINJA_ASSIGN_OR_RETURN(std::string first, ExpectName());
    s->targets.push_back(first);
    if (SkipOp(".")) {
      JINJA_ASSIGN_OR_RETURN(s->attr, ExpectName());
    } else {
      while (SkipOp(",")) {
        JINJA_ASSIGN_OR_RETURN(std::string n, ExpectName());
        s->targets.push_back(std::move(n));
      }
    }
    if (SkipOp("=")) {
      JINJA_ASSIGN_OR_RETURN(s->expr, ParseTupleExpr(true));
      JINJA_RETURN_IF_ERROR(ExpectBlockEnd());
      return s;
    }
    if (s->targets.size() != 1 || !s->attr.empty()) return Error("expected '=' in set");
    JINJA_RETURN_IF_ERROR(ExpectBlockEnd());
    s->kind = Stmt::Kind::kSetBlock;
    std::string stop;
    JINJA_ASSIGN_OR_RETURN(s->body, ParseBody({"endset"}, &stop));
    Next();
    JINJA_RETURN_IF_ERROR(ExpectBlockEnd());
    return s;
  }

  absl::StatusOr<StmtPtr> ParseMacro(int line) {
    auto s = std::make_unique<Stmt>();
    s->kind = Stmt::Kind::kMacro;
    s->line = line;
    JINJA_ASSIGN_OR_RETURN(s->name, ExpectName());
    JINJA_RETURN_IF_ERROR(ExpectOp("("));
    while (!SkipOp(")")) {
      if (!s->params.empty()) JINJA_RETURN_IF_ERROR(ExpectOp(","));
      if (SkipOp(")")) break;
      JINJA_ASSIGN_OR_RETURN(std::string param, ExpectName());
      ExprPtr def;
      if (SkipOp("=")) {
        JINJA_ASSIGN_OR_RETURN(def, ParseExpression(true));
      }
      s->params.emplace_back(std::move(param), std::move(def));
    }
    JINJA_RETURN_IF_ERROR(ExpectBlockEnd());
    std::string stop;
    JINJA_ASSIGN_OR_RETURN(s->body, ParseBody({"endmacro"}, &stop));
    Next();
    JINJA_RETURN_IF_ERROR(ExpectBlockEnd());
    return s;
  }

  // ---- expressions --------------------------------------------------------------------------
  // An expression, or several separated by commas (a tuple, which we represent as a list).
  absl::StatusOr<ExprPtr> ParseTupleExpr(bool allow_cond) {
    int line = Cur().line;
    JINJA_ASSIGN_OR_RETURN(ExprPtr first, ParseExpression(allow_cond));
    if (!IsOp(",")) return first;
    ExprPtr tuple = MakeExpr(Expr::Kind::kList, line);
    tuple->name = "tuple";
    tuple->args.push_back(std::move(first));
    while (SkipOp(",")) {
      if (Cur().type == Type::kBlockEnd || Cur().type == Type::kVarEnd) break;
      JINJA_ASSIGN_OR_RETURN(ExprPtr item, ParseExpression(allow_cond));
      tuple->args.push_back(std::move(item));
    }
    return tuple;
  }

  absl::StatusOr<ExprPtr> ParseExpression(bool allow_cond) {
    DepthGuard guard(&depth_);
    JINJA_RETURN_IF_ERROR(CheckDepth());
    JINJA_ASSIGN_OR_RETURN(ExprPtr expr, ParseOr());
    while (allow_cond && IsName("if")) {
      int line = Cur().line;
      Next();
      ExprPtr t = MakeExpr(Expr::Kind::kTernary, line);
      JINJA_ASSIGN_OR_RETURN(ExprPtr cond, ParseOr());
      t->args.push_back(std::move(expr));
      t->args.push_back(std::move(cond));
      ExprPtr otherwise;
      if (SkipName("else")) {
        JINJA_ASSIGN_OR_RETURN(otherwise, ParseExpression(true));
      }
      t->args.push_back(std::move(otherwise));
      expr = std::move(t);
    }
    return expr;
  }

  absl::StatusOr<ExprPtr> Binary(std::string op, ExprPtr lhs, ExprPtr rhs, int line) {
    ExprPtr e = MakeExpr(Expr::Kind::kBinary, line);
    e->name = std::move(op);
    e->args.push_back(std::move(lhs));
    e->args.push_back(std::move(rhs));
    return e;
  }

  absl::StatusOr<ExprPtr> ParseOr() {
    JINJA_ASSIGN_OR_RETURN(ExprPtr lhs, ParseAnd());
    while (IsName("or")) {
      int line = Cur().line;
      Next();
      JINJA_ASSIGN_OR_RETURN(ExprPtr rhs, ParseAnd());
      JINJA_ASSIGN_OR_RETURN(lhs, Binary("or", std::move(lhs), std::move(rhs), line));
    }
    return lhs;
  }

  absl::StatusOr<ExprPtr> ParseAnd() {
    JINJA_ASSIGN_OR_RETURN(ExprPtr lhs, ParseNot());
    while (IsName("and")) {
      int line = Cur().line;
      Next();
      JINJA_ASSIGN_OR_RETURN(ExprPtr rhs, ParseNot());
      JINJA_ASSIGN_OR_RETURN(lhs, Binary("and", std::move(lhs), std::move(rhs), line));
    }
    return lhs;
  }

  absl::StatusOr<ExprPtr> ParseNot() {
    if (IsName("not")) {
      DepthGuard guard(&depth_);
      JINJA_RETURN_IF_ERROR(CheckDepth());
      ExprPtr e = MakeExpr(Expr::Kind::kUnary, Cur().line);
      e->name = "not";
      Next();
      JINJA_ASSIGN_OR_RETURN(ExprPtr operand, ParseNot());
      e->args.push_back(std::move(operand));
      return e;
    }
    return ParseCompare();
  }

  // Returns the comparison operator at the cursor ("" if none) and consumes it.
  std::string TakeCompareOp() {
    static const std::set<std::string> kOps = {"==", "!=", "<", ">", "<=", ">="};
    if (Cur().type == Type::kOp && kOps.count(Cur().text)) {
      std::string op = Cur().text;
      Next();
      return op;
    }
    if (IsName("in")) {
      Next();
      return "in";
    }
    if (IsName("not") && Peek().type == Type::kName && Peek().text == "in") {
      Next();
      Next();
      return "not in";
    }
    return "";
  }

  absl::StatusOr<ExprPtr> ParseCompare() {
    int line = Cur().line;
    JINJA_ASSIGN_OR_RETURN(ExprPtr first, ParseMath1());
    std::string op = TakeCompareOp();
    if (op.empty()) return first;
    ExprPtr e = MakeExpr(Expr::Kind::kCompare, line);
    e->args.push_back(std::move(first));
    while (!op.empty()) {
      JINJA_ASSIGN_OR_RETURN(ExprPtr rhs, ParseMath1());
      e->ops.push_back(op);
      e->args.push_back(std::move(rhs));
      op = TakeCompareOp();
    }
    return e;
  }

  // Left-associative binary levels, lowest precedence first.
  absl::StatusOr<ExprPtr> ParseMath1() { return ParseLevel(0); }

  absl::StatusOr<ExprPtr> ParseLevel(int level) {
    static const std::vector<std::vector<std::string>> kLevels = {
        {"+", "-"}, {"~"}, {"*", "/", "//", "%"}, {"**"}};
    if (level == static_cast<int>(kLevels.size())) return ParseUnary(true);
    JINJA_ASSIGN_OR_RETURN(ExprPtr lhs, ParseLevel(level + 1));
    while (Cur().type == Type::kOp) {
      const auto& ops = kLevels[level];
      if (std::find(ops.begin(), ops.end(), Cur().text) == ops.end()) break;
      std::string op = Cur().text;
      int line = Cur().line;
      Next();
      JINJA_ASSIGN_OR_RETURN(ExprPtr rhs, ParseLevel(level + 1));
      JINJA_ASSIGN_OR_RETURN(lhs, Binary(op, std::move(lhs), std::move(rhs), line));
    }
    return lhs;
  }

  absl::StatusOr<ExprPtr> ParseUnary(bool with_filter) {
    DepthGuard guard(&depth_);
    JINJA_RETURN_IF_ERROR(CheckDepth());
    ExprPtr node;
    if (IsOp("-") || IsOp("+")) {
      node = MakeExpr(Expr::Kind::kUnary, Cur().line);
      node->name = Cur().text;
      Next();
      JINJA_ASSIGN_OR_RETURN(ExprPtr operand, ParseUnary(false));
      node->args.push_back(std::move(operand));
    } else {
      JINJA_ASSIGN_OR_RETURN(node, ParsePrimary());
    }
    JINJA_ASSIGN_OR_RETURN(node, ParsePostfix(std::move(node)));
    if (with_filter) return ParseFilterChain(std::move(node));
    return node;
  }

  absl::StatusOr<ExprPtr> ParsePrimary() {
    const Token& t = Cur();
    int line = t.line;
    switch (t.type) {
      case Type::kName: {
        ExprPtr e = MakeExpr(Expr::Kind::kLiteral, line);
        const std::string& n = t.text;
        if (n == "true" || n == "True") {
          e->literal = Value(true);
        } else if (n == "false" || n == "False") {
          e->literal = Value(false);
        } else if (n == "none" || n == "None") {
          e->literal = Value::None();
        } else {
          e->kind = Expr::Kind::kName;
          e->name = n;
        }
        Next();
        return e;
      }
      case Type::kString: {
        std::string s;
        while (Cur().type == Type::kString) {  // adjacent literals concatenate
          s += Cur().text;
          Next();
        }
        ExprPtr e = MakeExpr(Expr::Kind::kLiteral, line);
        e->literal = Value(std::move(s));
        return e;
      }
      case Type::kInt:
      case Type::kFloat: {
        ExprPtr e = MakeExpr(Expr::Kind::kLiteral, line);
        e->literal = t.type == Type::kInt ? Value(t.int_value) : Value(t.float_value);
        Next();
        return e;
      }
      case Type::kOp:
        if (t.text == "(") return ParseParen();
        if (t.text == "[") return ParseList();
        if (t.text == "{") return ParseDict();
        [[fallthrough]];
      default:
        return Error(absl::StrCat("unexpected ", Describe(t)));
    }
  }

  absl::StatusOr<ExprPtr> ParseParen() {
    int line = Cur().line;
    Next();
    if (SkipOp(")")) {  // empty tuple
      ExprPtr empty = MakeExpr(Expr::Kind::kList, line);
      empty->name = "tuple";
      return empty;
    }
    JINJA_ASSIGN_OR_RETURN(ExprPtr first, ParseExpression(true));
    if (SkipOp(")")) return first;
    ExprPtr tuple = MakeExpr(Expr::Kind::kList, line);
    tuple->name = "tuple";
    tuple->args.push_back(std::move(first));
    while (SkipOp(",")) {
      if (IsOp(")")) break;
      JINJA_ASSIGN_OR_RETURN(ExprPtr item, ParseExpression(true));
      tuple->args.push_back(std::move(item));
    }
    JINJA_RETURN_IF_ERROR(ExpectOp(")"));
    return tuple;
  }

  absl::StatusOr<ExprPtr> ParseList() {
    ExprPtr list = MakeExpr(Expr::Kind::kList, Cur().line);
    Next();
    while (!SkipOp("]")) {
      if (!list->args.empty()) {
        JINJA_RETURN_IF_ERROR(ExpectOp(","));
        if (SkipOp("]")) break;
      }
      JINJA_ASSIGN_OR_RETURN(ExprPtr item, ParseExpression(true));
      list->args.push_back(std::move(item));
    }
    return list;
  }

  absl::StatusOr<ExprPtr> ParseDict() {
    ExprPtr dict = MakeExpr(Expr::Kind::kDict, Cur().line);
    Next();
    while (!SkipOp("}")) {
      if (!dict->args.empty()) {
        JINJA_RETURN_IF_ERROR(ExpectOp(","));
        if (SkipOp("}")) break;
      }
      JINJA_ASSIGN_OR_RETURN(ExprPtr key, ParseExpression(true));
      JINJA_RETURN_IF_ERROR(ExpectOp(":"));
      JINJA_ASSIGN_OR_RETURN(ExprPtr value, ParseExpression(true));
      dict->keys.push_back(std::move(key));
      dict->args.push_back(std::move(value));
    }
    return dict;
  }

  absl::StatusOr<ExprPtr> ParsePostfix(ExprPtr node) {
    while (true) {
      int line = Cur().line;
      if (SkipOp(".")) {
        ExprPtr e;
        if (Cur().type == Type::kInt) {
          e = MakeExpr(Expr::Kind::kItem, line);
          ExprPtr index = MakeExpr(Expr::Kind::kLiteral, line);
          index->literal = Value(Cur().int_value);
          Next();
          e->args.push_back(std::move(node));
          e->args.push_back(std::move(index));
        } else {
          e = MakeExpr(Expr::Kind::kAttr, line);
          JINJA_ASSIGN_OR_RETURN(e->name, ExpectName());
          e->args.push_back(std::move(node));
        }
        node = std::move(e);
      } else if (IsOp("[")) {
        JINJA_ASSIGN_OR_RETURN(node, ParseSubscript(std::move(node)));
      } else if (IsOp("(")) {
        JINJA_ASSIGN_OR_RETURN(node, ParseCall(std::move(node), Expr::Kind::kCall, ""));
      } else {
        return node;
      }
    }
  }

  absl::StatusOr<ExprPtr> ParseSubscript(ExprPtr node) {
    int line = Cur().line;
    Next();
    ExprPtr parts[3];
    int part = 0;
    bool is_slice = false;
    while (true) {
      if (IsOp(":")) {
        is_slice = true;
        if (++part > 2) return Error("too many ':' in slice");
        Next();
        continue;
      }
      if (SkipOp("]")) break;
      if (parts[part]) return Error("expected ']' or ':'");
      JINJA_ASSIGN_OR_RETURN(parts[part], ParseExpression(true));
    }
    ExprPtr e = MakeExpr(is_slice ? Expr::Kind::kSlice : Expr::Kind::kItem, line);
    e->args.push_back(std::move(node));
    if (!is_slice && !parts[0]) return Error("empty subscript");
    e->args.push_back(std::move(parts[0]));
    if (is_slice) {
      e->args.push_back(std::move(parts[1]));
      e->args.push_back(std::move(parts[2]));
    }
    return e;
  }

  // Parses "(args, kw=value)" into a call, filter or test node whose args[0] is `target`.
  absl::StatusOr<ExprPtr> ParseCall(ExprPtr target, Expr::Kind kind, std::string name) {
    ExprPtr e = MakeExpr(kind, Cur().line);
    e->name = std::move(name);
    e->args.push_back(std::move(target));
    JINJA_RETURN_IF_ERROR(ExpectOp("("));
    bool first = true;
    while (!SkipOp(")")) {
      if (!first) {
        JINJA_RETURN_IF_ERROR(ExpectOp(","));
        if (SkipOp(")")) break;
      }
      first = false;
      if (Cur().type == Type::kName && Peek().type == Type::kOp && Peek().text == "=") {
        std::string key = Cur().text;
        Next();
        Next();
        JINJA_ASSIGN_OR_RETURN(ExprPtr value, ParseExpression(true));
        e->kwargs.emplace_back(std::move(key), std::move(value));
      } else {
        if (!e->kwargs.empty()) return Error("positional argument after keyword argument");
        JINJA_ASSIGN_OR_RETURN(ExprPtr arg, ParseExpression(true));
        e->args.push_back(std::move(arg));
      }
    }
    return e;
  }

  bool StartsTestArgument() const {
    static const std::set<std::string> kStop = {"else", "or", "and", "if", "is", "not", "in"};
    switch (Cur().type) {
      case Type::kName:
        return !kStop.count(Cur().text);
      case Type::kString:
      case Type::kInt:
      case Type::kFloat:
        return true;
      case Type::kOp:
        return Cur().text == "[" || Cur().text == "{";
      default:
        return false;
    }
  }

  absl::StatusOr<ExprPtr> ParseFilterChain(ExprPtr node) {
    while (true) {
      if (SkipOp("|")) {
        JINJA_ASSIGN_OR_RETURN(std::string name, ExpectName());
        while (SkipOp(".")) {  // dotted filter names
          JINJA_ASSIGN_OR_RETURN(std::string part, ExpectName());
          name += "." + part;
        }
        if (IsOp("(")) {
          JINJA_ASSIGN_OR_RETURN(node, ParseCall(std::move(node), Expr::Kind::kFilter, name));
        } else {
          ExprPtr e = MakeExpr(Expr::Kind::kFilter, Cur().line);
          e->name = std::move(name);
          e->args.push_back(std::move(node));
          node = std::move(e);
        }
      } else if (IsName("is")) {
        JINJA_ASSIGN_OR_RETURN(node, ParseTest(std::move(node)));
      } else if (IsOp("(")) {
        JINJA_ASSIGN_OR_RETURN(node, ParseCall(std::move(node), Expr::Kind::kCall, ""));
      } else {
        return node;
      }
    }
  }

  absl::StatusOr<ExprPtr> ParseTest(ExprPtr node) {
    int line = Cur().line;
    Next();  // "is"
    bool negated = SkipName("not");
    JINJA_ASSIGN_OR_RETURN(std::string name, ExpectName());
    ExprPtr e;
    if (IsOp("(")) {
      JINJA_ASSIGN_OR_RETURN(e, ParseCall(std::move(node), Expr::Kind::kTest, name));
    } else {
      e = MakeExpr(Expr::Kind::kTest, line);
      e->name = name;
      e->args.push_back(std::move(node));
      if (StartsTestArgument()) {
        JINJA_ASSIGN_OR_RETURN(ExprPtr arg, ParsePrimary());
        JINJA_ASSIGN_OR_RETURN(arg, ParsePostfix(std::move(arg)));
        e->args.push_back(std::move(arg));
      }
    }
    e->negated = negated;
    return e;
  }

  const std::vector<Token>& tokens_;
  size_t pos_ = 0;
  int depth_ = 0;
};

}  // namespace

absl::StatusOr<StmtList> Parse(const std::vector<Token>& tokens) {
  if (tokens.empty()) return StmtList();
  return Parser(tokens).Run();
}

}  // namespace r2::chat::jinja
