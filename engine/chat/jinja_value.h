#pragma once
// The values a Jinja template computes with: Python-like none, bools, ints, floats, strings, lists,
// dicts (insertion-ordered, string keys), namespace objects, callables, and Jinja's `undefined`.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace r2::chat::jinja {

class Value;
struct Stmt;

using ValueList = std::vector<Value>;

class ValueDict;

// A macro defined in a template or a built-in global function.
struct Callable {
  std::string name;
  const Stmt* macro = nullptr;  // null for built-ins
};

struct Undefined {
  std::string name;  // what was looked up, for error messages
};

class Value {
 public:
  enum class Kind {
    kUndefined,
    kNone,
    kBool,
    kInt,
    kFloat,
    kString,
    kList,
    kDict,
    kNamespace,
    kCallable
  };

  Value() : data_(Undefined{}) {}
  static Value MakeUndefined(std::string name = "") { return Value(Undefined{std::move(name)}); }
  static Value None() { return Value(nullptr); }
  Value(bool b) : data_(b) {}                       // NOLINT: implicit like Python literals
  Value(int64_t i) : data_(i) {}                    // NOLINT
  Value(int i) : data_(static_cast<int64_t>(i)) {}  // NOLINT
  Value(double d) : data_(d) {}                     // NOLINT
  Value(std::string s)                              // NOLINT
      : data_(std::make_shared<const std::string>(std::move(s))) {}
  Value(const char* s) : Value(std::string(s)) {}  // NOLINT
  static Value List(ValueList items);
  static Value Tuple(ValueList items);  // a list that prints as a Python tuple
  static Value Dict(ValueDict dict);
  static Value Namespace(ValueDict attrs);
  static Value Function(Callable c);

  // Converts JSON (objects keep their key order) to a Value. Fails past kMaxValueDepth.
  static absl::StatusOr<Value> FromJson(const nlohmann::ordered_json& j);

  Kind kind() const { return static_cast<Kind>(data_.index()); }
  bool is_undefined() const { return kind() == Kind::kUndefined; }
  bool is_none() const { return kind() == Kind::kNone; }
  bool is_bool() const { return kind() == Kind::kBool; }
  bool is_int() const { return kind() == Kind::kInt; }
  bool is_float() const { return kind() == Kind::kFloat; }
  bool is_number() const { return is_int() || is_float(); }
  bool is_string() const { return kind() == Kind::kString; }
  bool is_list() const { return kind() == Kind::kList; }
  bool is_tuple() const { return tuple_; }
  bool is_dict() const { return kind() == Kind::kDict; }
  bool is_namespace() const { return kind() == Kind::kNamespace; }
  bool is_callable() const { return kind() == Kind::kCallable; }

  bool as_bool() const { return std::get<bool>(data_); }
  int64_t as_int() const { return std::get<int64_t>(data_); }
  double as_float() const { return std::get<double>(data_); }
  double as_number() const { return is_int() ? static_cast<double>(as_int()) : as_float(); }
  const std::string& as_string() const {
    return *std::get<std::shared_ptr<const std::string>>(data_);
  }
  const ValueList& as_list() const { return *std::get<std::shared_ptr<ValueList>>(data_); }
  const ValueDict& as_dict() const;  // dict or namespace attributes
  ValueDict& mutable_namespace() { return *std::get<NamespaceBox>(data_).attrs; }
  const Callable& as_callable() const { return *std::get<std::shared_ptr<Callable>>(data_); }
  const std::string& undefined_name() const { return std::get<Undefined>(data_).name; }
  // Nesting depth of lists, dicts and namespaces (0 for scalars).
  int depth() const { return depth_; }
  // Whether this value is or contains a namespace object.
  bool ContainsNamespace() const;

  // Python truthiness (undefined is false).
  bool Truthy() const;
  // Python ==, with 1 == 1.0 and deep comparison of lists and dicts.
  bool Equals(const Value& other) const;
  // Python str(): strings as they are, None as "None", containers as Python repr; undefined "".
  std::string Str() const;
  // Python repr(): strings quoted.
  std::string Repr() const;
  // A short type name for error messages ("str", "int", "list", ...).
  std::string TypeName() const;

 private:
  struct NamespaceBox {
    std::shared_ptr<ValueDict> attrs;
  };
  using Data = std::variant<Undefined, std::nullptr_t, bool, int64_t, double,
                            std::shared_ptr<const std::string>, std::shared_ptr<ValueList>,
                            std::shared_ptr<ValueDict>, NamespaceBox, std::shared_ptr<Callable>>;
  explicit Value(Data d) : data_(std::move(d)) {}
  explicit Value(Undefined u) : data_(std::move(u)) {}
  explicit Value(std::nullptr_t) : data_(nullptr) {}

  Data data_;
  int depth_ = 0;
  bool tuple_ = false;
};

// An insertion-ordered string-keyed map, like a Python dict loaded from JSON.
class ValueDict {
 public:
  const Value* Find(std::string_view key) const;
  void Set(std::string key, Value value);
  const std::vector<std::pair<std::string, Value>>& items() const { return items_; }
  size_t size() const { return items_.size(); }

 private:
  std::vector<std::pair<std::string, Value>> items_;
};

// Values nested deeper than this are refused (keeps recursion over values bounded).
inline constexpr int kMaxValueDepth = 128;

// Python's repr() of a float ("1.0", "1e-05", "1e+16", "inf", "nan").
std::string FormatPythonFloat(double d);

// json.dumps(value, ensure_ascii=False, indent=indent, sort_keys=sort_keys) with Python's default
// separators (", " and ": ", or "," and ": " when indented). indent < 0 means None.
absl::StatusOr<std::string> ToPythonJson(const Value& value, int indent, bool sort_keys);

}  // namespace r2::chat::jinja
