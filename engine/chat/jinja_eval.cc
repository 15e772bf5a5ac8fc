#include "engine/chat/jinja_eval.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/chat/jinja_builtins.h"
#include "engine/chat/jinja_ops.h"
#include "engine/chat/jinja_status.h"

namespace r2::chat::jinja {

const Value* CallArgs::Get(size_t pos, std::string_view name) const {
  for (const auto& [k, v] : kwargs) {
    if (k == name) return &v;
  }
  return pos < args.size() ? &args[pos] : nullptr;
}

absl::Status RenderError(int line, std::string_view message) {
  return absl::InvalidArgumentError(
      absl::StrCat("template error at line ", line, ": ", std::string(message)));
}

namespace {

// Adds the line number to errors that do not carry one yet.
absl::Status AtLine(absl::Status s, int line) {
  if (s.ok() || s.code() != absl::StatusCode::kInvalidArgument) return s;
  if (absl::StartsWith(s.message(), "template ")) return s;
  return RenderError(line, std::string(s.message()));
}

template <typename T>
absl::StatusOr<T> AtLine(absl::StatusOr<T> v, int line) {
  if (v.ok()) return v;
  return AtLine(v.status(), line);
}

}  // namespace

absl::Status Evaluator::Charge(int64_t steps) {
  steps_ += steps;
  if (steps_ > limits_.max_steps) {
    return absl::ResourceExhaustedError("template rendering exceeded its step limit");
  }
  return absl::OkStatus();
}

absl::Status Evaluator::ChargeSize(size_t size) {
  if (size > limits_.max_output_bytes) {
    return absl::ResourceExhaustedError("template built a value larger than the output limit");
  }
  return Charge(static_cast<int64_t>(size / 256));
}

absl::Status Evaluator::ChargeItems(size_t count) {
  if (count > kMaxListItems) {
    return absl::ResourceExhaustedError("template built a list longer than the limit");
  }
  return Charge(static_cast<int64_t>(count / 8));
}

absl::Status Evaluator::Run(const StmtList& body) {
  Flow flow = Flow::kNormal;
  return Exec(body, &flow);
}

absl::Status Evaluator::Emit(std::string_view text) {
  if (out_->size() + text.size() > limits_.max_output_bytes) {
    return absl::ResourceExhaustedError("template output exceeds the size limit");
  }
  out_->append(text);
  return Charge(static_cast<int64_t>(text.size() / 256));
}

const Value* Evaluator::Lookup(const std::string& name) const {
  for (auto it = frames_.rbegin(); it != frames_.rend(); ++it) {
    auto found = it->find(name);
    if (found != it->end()) return &found->second;
  }
  return nullptr;
}

// ---- statements ------------------------------------------------------------------------------

absl::Status Evaluator::Exec(const StmtList& body, Flow* flow) {
  for (const StmtPtr& s : body) {
    JINJA_RETURN_IF_ERROR(ExecStmt(*s, flow));
    if (*flow != Flow::kNormal) return absl::OkStatus();
  }
  return absl::OkStatus();
}

absl::Status Evaluator::ExecStmt(const Stmt& s, Flow* flow) {
  JINJA_RETURN_IF_ERROR(Charge());
  DepthGuard guard(&depth_);
  if (depth_ > kMaxEvalDepth) return absl::ResourceExhaustedError("template nesting too deep");
  switch (s.kind) {
    case Stmt::Kind::kText:
      return Emit(s.text);
    case Stmt::Kind::kOutput: {
      JINJA_ASSIGN_OR_RETURN(Value v, Eval(*s.expr));
      return Emit(v.Str());
    }
    case Stmt::Kind::kIf:
      return ExecIf(s, flow);
    case Stmt::Kind::kFor:
      return ExecFor(s, flow);
    case Stmt::Kind::kSet:
      return ExecSet(s);
    case Stmt::Kind::kSetBlock:
      return ExecSetBlock(s);
    case Stmt::Kind::kMacro: {
      Callable c;
      c.name = s.name;
      c.macro = &s;
      frames_.back()[s.name] = Value::Function(std::move(c));
      return absl::OkStatus();
    }
    case Stmt::Kind::kBreak:
      *flow = Flow::kBreak;
      return absl::OkStatus();
    case Stmt::Kind::kContinue:
      *flow = Flow::kContinue;
      return absl::OkStatus();
  }
  return absl::OkStatus();
}

absl::Status Evaluator::ExecIf(const Stmt& s, Flow* flow) {
  JINJA_ASSIGN_OR_RETURN(Value cond, Eval(*s.expr));
  return Exec(cond.Truthy() ? s.body : s.else_body, flow);
}

namespace {

Value LoopInfo(size_t index, size_t length, const ValueList& items) {
  ValueDict loop;
  loop.Set("index", Value(static_cast<int64_t>(index + 1)));
  loop.Set("index0", Value(static_cast<int64_t>(index)));
  loop.Set("revindex", Value(static_cast<int64_t>(length - index)));
  loop.Set("revindex0", Value(static_cast<int64_t>(length - index - 1)));
  loop.Set("first", Value(index == 0));
  loop.Set("last", Value(index + 1 == length));
  loop.Set("length", Value(static_cast<int64_t>(length)));
  loop.Set("previtem", index > 0 ? items[index - 1] : Value::MakeUndefined("previtem"));
  loop.Set("nextitem", index + 1 < length ? items[index + 1] : Value::MakeUndefined("nextitem"));
  return Value::Dict(std::move(loop));
}

}  // namespace

absl::Status Evaluator::ExecFor(const Stmt& s, Flow* flow) {
  JINJA_ASSIGN_OR_RETURN(Value iterable, Eval(*s.expr));
  JINJA_ASSIGN_OR_RETURN(ValueList all, AtLine(Iterate(iterable), s.line));
  JINJA_RETURN_IF_ERROR(ChargeItems(all.size()));
  ValueList items;
  if (s.cond) {  // "for x in xs if cond" filters before loop.index and loop.length are known
    for (const Value& item : all) {
      JINJA_RETURN_IF_ERROR(Charge());
      frames_.emplace_back();
      absl::Status st = Assign(s.targets, item, s.line);
      absl::StatusOr<Value> keep = st.ok() ? Eval(*s.cond) : absl::StatusOr<Value>(st);
      frames_.pop_back();
      if (!keep.ok()) return keep.status();
      if (keep->Truthy()) items.push_back(item);
    }
  } else {
    items = std::move(all);
  }
  for (size_t i = 0; i < items.size(); ++i) {
    JINJA_RETURN_IF_ERROR(Charge());
    frames_.emplace_back();
    frames_.back()["loop"] = LoopInfo(i, items.size(), items);
    absl::Status st = Assign(s.targets, items[i], s.line);
    Flow inner = Flow::kNormal;
    if (st.ok()) st = Exec(s.body, &inner);
    frames_.pop_back();
    JINJA_RETURN_IF_ERROR(st);
    if (inner == Flow::kBreak) break;
  }
  if (items.empty()) return Exec(s.else_body, flow);
  return absl::OkStatus();
}

absl::Status Evaluator::Assign(const std::vector<std::string>& targets, const Value& value,
                               int line) {
  if (targets.size() == 1) {
    frames_.back()[targets[0]] = value;
    return absl::OkStatus();
  }
  JINJA_ASSIGN_OR_RETURN(ValueList parts, AtLine(Iterate(value), line));
  if (parts.size() != targets.size()) {
    return RenderError(line, absl::StrCat("cannot unpack ", parts.size(), " values into ",
                                          targets.size(), " names"));
  }
  for (size_t i = 0; i < targets.size(); ++i) frames_.back()[targets[i]] = parts[i];
  return absl::OkStatus();
}

absl::Status Evaluator::ExecSet(const Stmt& s) {
  JINJA_ASSIGN_OR_RETURN(Value v, Eval(*s.expr));
  if (s.attr.empty()) return Assign(s.targets, v, s.line);
  const Value* target = Lookup(s.targets[0]);
  if (target == nullptr || !target->is_namespace()) {
    return RenderError(s.line, absl::StrCat("cannot assign attribute on non-namespace object '",
                                            s.targets[0], "'"));
  }
  if (v.ContainsNamespace()) {
    return RenderError(s.line, "a namespace cannot be stored inside a namespace");
  }
  Value ns = *target;  // shares the namespace's attributes
  ns.mutable_namespace().Set(s.attr, std::move(v));
  return absl::OkStatus();
}

absl::Status Evaluator::ExecSetBlock(const Stmt& s) {
  std::string captured;
  std::string* saved = out_;
  out_ = &captured;
  Flow flow = Flow::kNormal;
  absl::Status st = Exec(s.body, &flow);
  out_ = saved;
  JINJA_RETURN_IF_ERROR(st);
  frames_.back()[s.targets[0]] = Value(std::move(captured));
  return absl::OkStatus();
}

// ---- expressions -----------------------------------------------------------------------------

absl::StatusOr<Value> Evaluator::Eval(const Expr& e) {
  JINJA_RETURN_IF_ERROR(Charge());
  DepthGuard guard(&depth_);
  if (depth_ > kMaxEvalDepth) return absl::ResourceExhaustedError("template nesting too deep");
  absl::StatusOr<Value> v = EvalNode(e);
  if (v.ok() && v->depth() > kMaxValueDepth) {
    return RenderError(e.line, "value nested too deeply");
  }
  return v;
}

absl::StatusOr<Value> Evaluator::EvalNode(const Expr& e) {
  switch (e.kind) {
    case Expr::Kind::kLiteral:
      return e.literal;
    case Expr::Kind::kName:
      return EvalName(e);
    case Expr::Kind::kList:
      return EvalList(e);
    case Expr::Kind::kDict:
      return EvalDict(e);
    case Expr::Kind::kAttr:
      return EvalAttr(e);
    case Expr::Kind::kItem:
      return EvalItem(e);
    case Expr::Kind::kSlice:
      return EvalSlice(e);
    case Expr::Kind::kCall:
      return EvalCall(e);
    case Expr::Kind::kFilter:
      return EvalFilter(e);
    case Expr::Kind::kTest:
      return EvalTest(e);
    case Expr::Kind::kUnary:
      return EvalUnary(e);
    case Expr::Kind::kBinary:
      return EvalBinary(e);
    case Expr::Kind::kCompare:
      return EvalCompare(e);
    case Expr::Kind::kTernary:
      return EvalTernary(e);
  }
  return RenderError(e.line, "unknown expression");
}

absl::StatusOr<Value> Evaluator::EvalName(const Expr& e) {
  if (const Value* v = Lookup(e.name)) return *v;
  if (IsGlobalFunction(e.name)) {
    Callable c;
    c.name = e.name;
    return Value::Function(std::move(c));
  }
  return Value::MakeUndefined(e.name);
}

absl::StatusOr<Value> Evaluator::EvalList(const Expr& e) {
  ValueList items;
  for (const ExprPtr& a : e.args) {
    JINJA_ASSIGN_OR_RETURN(Value v, Eval(*a));
    items.push_back(std::move(v));
  }
  if (e.name == "tuple") return Value::Tuple(std::move(items));
  return Value::List(std::move(items));
}

absl::StatusOr<Value> Evaluator::EvalDict(const Expr& e) {
  ValueDict dict;
  for (size_t i = 0; i < e.keys.size(); ++i) {
    JINJA_ASSIGN_OR_RETURN(Value k, Eval(*e.keys[i]));
    JINJA_ASSIGN_OR_RETURN(Value v, Eval(*e.args[i]));
    dict.Set(k.is_string() ? k.as_string() : k.Str(), std::move(v));
  }
  return Value::Dict(std::move(dict));
}

absl::StatusOr<Value> Evaluator::EvalAttr(const Expr& e) {
  JINJA_ASSIGN_OR_RETURN(Value obj, Eval(*e.args[0]));
  return GetAttr(obj, e.name);
}

absl::StatusOr<Value> Evaluator::EvalItem(const Expr& e) {
  JINJA_ASSIGN_OR_RETURN(Value obj, Eval(*e.args[0]));
  JINJA_ASSIGN_OR_RETURN(Value key, Eval(*e.args[1]));
  if (obj.is_string()) JINJA_RETURN_IF_ERROR(ChargeSize(obj.as_string().size()));
  return GetItem(obj, key);
}

absl::StatusOr<Value> Evaluator::EvalSlice(const Expr& e) {
  JINJA_ASSIGN_OR_RETURN(Value obj, Eval(*e.args[0]));
  Value parts[3];
  for (int i = 0; i < 3; ++i) {
    if (e.args[i + 1]) {
      JINJA_ASSIGN_OR_RETURN(parts[i], Eval(*e.args[i + 1]));
    }
  }
  if (obj.is_string()) JINJA_RETURN_IF_ERROR(ChargeSize(obj.as_string().size()));
  if (obj.is_list()) JINJA_RETURN_IF_ERROR(ChargeItems(obj.as_list().size()));
  return AtLine(Slice(obj, parts[0], parts[1], parts[2]), e.line);
}

absl::StatusOr<CallArgs> Evaluator::EvalArgs(const Expr& e, size_t first) {
  CallArgs args;
  for (size_t i = first; i < e.args.size(); ++i) {
    JINJA_ASSIGN_OR_RETURN(Value v, Eval(*e.args[i]));
    args.args.push_back(std::move(v));
  }
  for (const auto& [name, expr] : e.kwargs) {
    JINJA_ASSIGN_OR_RETURN(Value v, Eval(*expr));
    args.kwargs.emplace_back(name, std::move(v));
  }
  return args;
}

absl::StatusOr<Value> Evaluator::EvalCall(const Expr& e) {
  const Expr& callee = *e.args[0];
  JINJA_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(e, 1));
  if (callee.kind == Expr::Kind::kAttr) {  // obj.method(...)
    JINJA_ASSIGN_OR_RETURN(Value obj, Eval(*callee.args[0]));
    bool found = false;
    absl::StatusOr<Value> r = CallMethod(*this, obj, callee.name, args, &found);
    if (found || !r.ok()) return AtLine(std::move(r), e.line);
    Value attr = GetAttr(obj, callee.name);
    if (attr.is_callable()) return Call(attr, args, e.line);
    return RenderError(
        e.line, absl::StrCat("'", obj.TypeName(), "' object has no method '", callee.name, "'"));
  }
  JINJA_ASSIGN_OR_RETURN(Value fn, Eval(callee));
  return Call(fn, args, e.line);
}

absl::StatusOr<Value> Evaluator::Call(const Value& callee, const CallArgs& args, int line) {
  if (!callee.is_callable()) {
    std::string what = callee.is_undefined() ? callee.undefined_name() : callee.TypeName();
    return RenderError(line, absl::StrCat("'", what, "' is not callable"));
  }
  const Callable& c = callee.as_callable();
  if (c.macro) return CallMacro(*c.macro, args, line);
  return AtLine(CallGlobalFunction(*this, c.name, args), line);
}

absl::StatusOr<Value> Evaluator::CallMacro(const Stmt& macro, const CallArgs& args, int line) {
  if (call_depth_ >= limits_.max_call_depth) {
    return absl::ResourceExhaustedError("template macro recursion is too deep");
  }
  if (args.args.size() > macro.params.size()) {
    return RenderError(
        line, absl::StrCat("macro '", macro.name, "' takes ", macro.params.size(), " arguments"));
  }
  std::unordered_map<std::string, Value> frame;
  for (size_t i = 0; i < macro.params.size(); ++i) {
    const auto& [name, def] = macro.params[i];
    const Value* given = args.Get(i, name);
    if (given) {
      frame[name] = *given;
    } else if (def) {
      JINJA_ASSIGN_OR_RETURN(frame[name], Eval(*def));
    } else {
      frame[name] = Value::MakeUndefined(name);
    }
  }
  std::string captured;
  std::string* saved = out_;
  out_ = &captured;
  // A macro sees the template's globals and its own arguments, not the caller's locals.
  std::vector<std::unordered_map<std::string, Value>> saved_frames(frames_.begin() + 1,
                                                                   frames_.end());
  frames_.resize(1);
  frames_.push_back(std::move(frame));
  ++call_depth_;
  Flow flow = Flow::kNormal;
  absl::Status st = Exec(macro.body, &flow);
  --call_depth_;
  frames_.resize(1);
  for (auto& f : saved_frames) frames_.push_back(std::move(f));
  out_ = saved;
  JINJA_RETURN_IF_ERROR(st);
  return Value(std::move(captured));
}

absl::StatusOr<Value> Evaluator::EvalFilter(const Expr& e) {
  JINJA_ASSIGN_OR_RETURN(Value input, Eval(*e.args[0]));
  JINJA_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(e, 1));
  return AtLine(ApplyFilter(*this, e.name, input, args), e.line);
}

absl::StatusOr<Value> Evaluator::EvalTest(const Expr& e) {
  JINJA_ASSIGN_OR_RETURN(Value input, Eval(*e.args[0]));
  JINJA_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(e, 1));
  JINJA_ASSIGN_OR_RETURN(bool r, AtLine(ApplyTest(*this, e.name, input, args), e.line));
  return Value(r != e.negated);
}

absl::StatusOr<Value> Evaluator::EvalUnary(const Expr& e) {
  JINJA_ASSIGN_OR_RETURN(Value v, Eval(*e.args[0]));
  if (e.name == "not") return Value(!v.Truthy());
  if (v.is_bool()) v = Value(static_cast<int64_t>(v.as_bool()));
  if (e.name == "+" && (v.is_int() || v.is_float())) return v;
  if (v.is_float()) return Value(-v.as_float());
  if (v.is_int() && v.as_int() != INT64_MIN) return Value(-v.as_int());
  return RenderError(e.line,
                     absl::StrCat("bad operand type for unary ", e.name, ": '", v.TypeName(), "'"));
}

absl::StatusOr<Value> Evaluator::EvalBinary(const Expr& e) {
  JINJA_ASSIGN_OR_RETURN(Value lhs, Eval(*e.args[0]));
  if (e.name == "and") return lhs.Truthy() ? Eval(*e.args[1]) : lhs;
  if (e.name == "or") return lhs.Truthy() ? lhs : Eval(*e.args[1]);
  JINJA_ASSIGN_OR_RETURN(Value rhs, Eval(*e.args[1]));
  if ((lhs.is_undefined() || rhs.is_undefined()) && e.name != "~") {
    const Value& u = lhs.is_undefined() ? lhs : rhs;
    return RenderError(e.line, absl::StrCat("'", u.undefined_name(), "' is undefined"));
  }
  return AtLine(BinaryOp(*this, e.name, lhs, rhs), e.line);
}

absl::StatusOr<Value> Evaluator::EvalCompare(const Expr& e) {
  JINJA_ASSIGN_OR_RETURN(Value lhs, Eval(*e.args[0]));
  for (size_t i = 0; i < e.ops.size(); ++i) {
    JINJA_ASSIGN_OR_RETURN(Value rhs, Eval(*e.args[i + 1]));
    const std::string& op = e.ops[i];
    bool r;
    if (op == "==" || op == "!=") {
      r = lhs.Equals(rhs) == (op == "==");
    } else if (op == "in" || op == "not in") {
      JINJA_ASSIGN_OR_RETURN(bool in, AtLine(Contains(rhs, lhs), e.line));
      r = in == (op == "in");
    } else {
      JINJA_ASSIGN_OR_RETURN(int c, AtLine(Compare(lhs, rhs), e.line));
      r = op == "<" ? c < 0 : op == ">" ? c > 0 : op == "<=" ? c <= 0 : c >= 0;
    }
    if (!r) return Value(false);
    lhs = std::move(rhs);
  }
  return Value(true);
}

absl::StatusOr<Value> Evaluator::EvalTernary(const Expr& e) {
  JINJA_ASSIGN_OR_RETURN(Value cond, Eval(*e.args[1]));
  if (cond.Truthy()) return Eval(*e.args[0]);
  if (e.args[2]) return Eval(*e.args[2]);
  return Value::MakeUndefined();
}

}  // namespace r2::chat::jinja
