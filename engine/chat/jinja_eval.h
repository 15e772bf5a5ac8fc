#pragma once
// Jinja evaluator: executes a parsed statement tree against variables, writing the output.
// Internal to the Jinja implementation; use jinja.h.

#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/chat/jinja.h"
#include "engine/chat/jinja_ast.h"
#include "engine/chat/jinja_value.h"

namespace r2::chat::jinja {

// Positional and keyword arguments of a call, filter or test.
struct CallArgs {
  std::vector<Value> args;
  std::vector<std::pair<std::string, Value>> kwargs;

  // The argument at `pos`, or the keyword argument `name`, or null.
  const Value* Get(size_t pos, std::string_view name) const;
};

class Evaluator {
 public:
  Evaluator(const RenderLimits& limits, std::string* out) : limits_(limits), out_(out) {}

  void SetGlobal(const std::string& name, Value value) { frames_[0][name] = std::move(value); }
  absl::Status Run(const StmtList& body);

  // Counts work; fails with ResourceExhausted past the step budget.
  absl::Status Charge(int64_t steps = 1);
  // Charges for building a string or list of `size` bytes or items, and enforces the size cap.
  absl::Status ChargeSize(size_t size);
  // Charges for building or copying a list of `count` items; lists longer than kMaxListItems
  // are ResourceExhausted.
  absl::Status ChargeItems(size_t count);
  static constexpr size_t kMaxListItems = size_t{1} << 20;
  const RenderLimits& limits() const { return limits_; }

  absl::StatusOr<Value> Call(const Value& callee, const CallArgs& args, int line);

 private:
  enum class Flow { kNormal, kBreak, kContinue };
  // Bounds the interpreter's own recursion (nested blocks, expressions and macro calls).
  static constexpr int kMaxEvalDepth = 1000;
  struct DepthGuard {
    explicit DepthGuard(int* d) : depth(d) { ++*depth; }
    ~DepthGuard() { --*depth; }
    int* depth;
  };

  absl::Status Exec(const StmtList& body, Flow* flow);
  absl::Status ExecStmt(const Stmt& s, Flow* flow);
  absl::Status ExecIf(const Stmt& s, Flow* flow);
  absl::Status ExecFor(const Stmt& s, Flow* flow);
  absl::Status ExecSet(const Stmt& s);
  absl::Status ExecSetBlock(const Stmt& s);
  absl::Status Emit(std::string_view text);
  absl::Status Assign(const std::vector<std::string>& targets, const Value& value, int line);

  absl::StatusOr<Value> Eval(const Expr& e);
  absl::StatusOr<Value> EvalNode(const Expr& e);
  absl::StatusOr<Value> EvalName(const Expr& e);
  absl::StatusOr<Value> EvalList(const Expr& e);
  absl::StatusOr<Value> EvalDict(const Expr& e);
  absl::StatusOr<Value> EvalAttr(const Expr& e);
  absl::StatusOr<Value> EvalItem(const Expr& e);
  absl::StatusOr<Value> EvalSlice(const Expr& e);
  absl::StatusOr<Value> EvalCall(const Expr& e);
  absl::StatusOr<Value> EvalFilter(const Expr& e);
  absl::StatusOr<Value> EvalTest(const Expr& e);
  absl::StatusOr<Value> EvalUnary(const Expr& e);
  absl::StatusOr<Value> EvalBinary(const Expr& e);
  absl::StatusOr<Value> EvalCompare(const Expr& e);
  absl::StatusOr<Value> EvalTernary(const Expr& e);
  absl::StatusOr<CallArgs> EvalArgs(const Expr& e, size_t first);
  absl::StatusOr<Value> CallMacro(const Stmt& macro, const CallArgs& args, int line);

  const Value* Lookup(const std::string& name) const;

  RenderLimits limits_;
  std::string* out_;
  std::vector<std::unordered_map<std::string, Value>> frames_{1};
  int64_t steps_ = 0;
  int call_depth_ = 0;
  int depth_ = 0;
};

// Runtime errors name the template line.
absl::Status RenderError(int line, std::string_view message);

}  // namespace r2::chat::jinja
