#pragma once
// Jinja parser: tokens to a statement tree. Supports the subset chat templates use: text, {{ }},
// if/elif/else, for (with "if" filter and else), set (including "set ns.attr" and block set),
// macro, break/continue, generation blocks, and the full Jinja expression grammar without
// extensions (literals, lists, dicts, attribute/item/slice access, calls, filters, tests,
// arithmetic, comparisons, and/or/not, "~" and the conditional expression).

#include <vector>

#include "absl/status/statusor.h"
#include "engine/chat/jinja_ast.h"
#include "engine/chat/jinja_lexer.h"

namespace r2::chat::jinja {

// Nesting deeper than this (brackets, blocks, unary chains) is a syntax error, so a hostile
// template cannot exhaust the stack.
inline constexpr int kMaxParseDepth = 100;

absl::StatusOr<StmtList> Parse(const std::vector<Token>& tokens);

}  // namespace r2::chat::jinja
