#pragma once
// Python semantics of Jinja's operators on Values: arithmetic, concatenation, comparison,
// membership, item and attribute access, iteration.

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/chat/jinja_eval.h"
#include "engine/chat/jinja_value.h"

namespace r2::chat::jinja {

// op is one of + - * / // % ** ~. Errors are InvalidArgument without a line number.
absl::StatusOr<Value> BinaryOp(Evaluator& ev, std::string_view op, const Value& a, const Value& b);

// Python `item in container` for strings (substring), lists and dicts (keys).
absl::StatusOr<bool> Contains(const Value& container, const Value& item);

// Python ordering for numbers, strings and lists; other pairs are errors.
absl::StatusOr<int> Compare(const Value& a, const Value& b);

// obj[key]: missing keys and out-of-range indices give undefined, as in Jinja.
Value GetItem(const Value& obj, const Value& key);

// obj.name: dict keys and namespace attributes; anything else is undefined.
Value GetAttr(const Value& obj, const std::string& name);

// obj[start:stop:step] for strings and lists.
absl::StatusOr<Value> Slice(const Value& obj, const Value& start, const Value& stop,
                            const Value& step);

// The items a for loop visits: list items, dict keys, string characters (UTF-8 code points);
// undefined and none iterate as empty.
absl::StatusOr<ValueList> Iterate(const Value& v);

// Byte offsets where each code point of `s` starts, plus s.size() at the end.
std::vector<size_t> Utf8Starts(const std::string& s);
// Splits a UTF-8 string into code points (invalid bytes become single-byte pieces).
ValueList Utf8Chars(const std::string& s);
// Number of code points, as Python's len(str).
size_t Utf8Length(const std::string& s);

}  // namespace r2::chat::jinja
