#pragma once
// Jinja lexer: splits template source into text and the tokens inside {{ }} and {% %}, dropping
// {# #} comments and applying whitespace control ("-" and "+" markers, trim_blocks,
// lstrip_blocks) the way Jinja2 does.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace r2::chat::jinja {

struct Token {
  enum class Type {
    kText,
    kVarBegin,
    kVarEnd,
    kBlockBegin,
    kBlockEnd,
    kName,
    kString,
    kInt,
    kFloat,
    kOp,
    kEof
  };
  Type type;
  std::string text;  // text, name, operator, or the decoded string literal
  int line = 1;
  int64_t int_value = 0;
  double float_value = 0;
};

struct LexerOptions {
  bool trim_blocks = true;    // drop the first newline after a block or comment tag
  bool lstrip_blocks = true;  // drop spaces and tabs before a block or comment tag on its line
  bool keep_trailing_newline = false;
};

// Errors (unterminated tags or strings, stray characters) carry the line number.
absl::StatusOr<std::vector<Token>> Tokenize(std::string_view source, const LexerOptions& options);

}  // namespace r2::chat::jinja
