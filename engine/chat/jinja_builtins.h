#pragma once
// Jinja's built-in filters, tests and global functions, and the Python methods of str, dict and
// list values that chat templates call (s.split(), d.items(), ...).

#include <string_view>

#include "absl/status/statusor.h"
#include "engine/chat/jinja_eval.h"
#include "engine/chat/jinja_value.h"

namespace r2::chat::jinja {

// value | name(args). Unknown filters are InvalidArgument.
absl::StatusOr<Value> ApplyFilter(Evaluator& ev, std::string_view name, const Value& input,
                                  const CallArgs& args);

// value is name(args). Unknown tests are InvalidArgument.
absl::StatusOr<bool> ApplyTest(Evaluator& ev, std::string_view name, const Value& input,
                               const CallArgs& args);

// obj.name(args) for the built-in methods of str, dict and list. Sets *found to false (and
// returns undefined) when `obj` has no such method.
absl::StatusOr<Value> CallMethod(Evaluator& ev, const Value& obj, std::string_view name,
                                 const CallArgs& args, bool* found);

// Global functions: range, namespace, dict, raise_exception, strftime_now.
bool IsGlobalFunction(std::string_view name);
absl::StatusOr<Value> CallGlobalFunction(Evaluator& ev, std::string_view name,
                                         const CallArgs& args);

}  // namespace r2::chat::jinja
