#include "engine/chat/jinja_value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace r2::chat::jinja {

const Value* ValueDict::Find(std::string_view key) const {
  for (const auto& [k, v] : items_) {
    if (k == key) return &v;
  }
  return nullptr;
}

void ValueDict::Set(std::string key, Value value) {
  for (auto& [k, v] : items_) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  items_.emplace_back(std::move(key), std::move(value));
}

namespace {

int ChildDepth(const ValueList& items) {
  int d = 0;
  for (const Value& v : items) d = std::max(d, v.depth());
  return d + 1;
}

int ChildDepth(const ValueDict& dict) {
  int d = 0;
  for (const auto& [k, v] : dict.items()) d = std::max(d, v.depth());
  return d + 1;
}

}  // namespace

Value Value::List(ValueList items) {
  int depth = ChildDepth(items);
  Value v(Data(std::make_shared<ValueList>(std::move(items))));
  v.depth_ = depth;
  return v;
}
Value Value::Tuple(ValueList items) {
  Value v = List(std::move(items));
  v.tuple_ = true;
  return v;
}
Value Value::Dict(ValueDict dict) {
  int depth = ChildDepth(dict);
  Value v(Data(std::make_shared<ValueDict>(std::move(dict))));
  v.depth_ = depth;
  return v;
}
Value Value::Namespace(ValueDict attrs) {
  int depth = ChildDepth(attrs);
  Value v(Data(NamespaceBox{std::make_shared<ValueDict>(std::move(attrs))}));
  v.depth_ = depth;
  return v;
}

bool Value::ContainsNamespace() const {
  if (is_namespace()) return true;
  if (is_list()) {
    for (const Value& v : as_list()) {
      if (v.ContainsNamespace()) return true;
    }
  }
  if (is_dict()) {
    for (const auto& [k, v] : as_dict().items()) {
      if (v.ContainsNamespace()) return true;
    }
  }
  return false;
}
Value Value::Function(Callable c) { return Value(Data(std::make_shared<Callable>(std::move(c)))); }

namespace {

absl::StatusOr<Value> FromJsonAt(const nlohmann::ordered_json& j, int depth);

}  // namespace

absl::StatusOr<Value> Value::FromJson(const nlohmann::ordered_json& j) { return FromJsonAt(j, 0); }

namespace {

absl::StatusOr<Value> FromJsonAt(const nlohmann::ordered_json& j, int depth) {
  if (depth > kMaxValueDepth) {
    return absl::InvalidArgumentError("JSON value nested too deeply for a template");
  }
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null:
      return Value::None();
    case nlohmann::ordered_json::value_t::boolean:
      return Value(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
      return Value(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      uint64_t u = j.get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) return Value(static_cast<double>(u));
      return Value(static_cast<int64_t>(u));
    }
    case nlohmann::ordered_json::value_t::number_float:
      return Value(j.get<double>());
    case nlohmann::ordered_json::value_t::string:
      return Value(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      ValueList items;
      items.reserve(j.size());
      for (const auto& e : j) {
        absl::StatusOr<Value> v = FromJsonAt(e, depth + 1);
        if (!v.ok()) return v.status();
        items.push_back(*std::move(v));
      }
      return Value::List(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      ValueDict dict;
      for (const auto& [k, v] : j.items()) {
        absl::StatusOr<Value> value = FromJsonAt(v, depth + 1);
        if (!value.ok()) return value.status();
        dict.Set(k, *std::move(value));
      }
      return Value::Dict(std::move(dict));
    }
    default:
      return Value::None();  // binary and discarded values have no template meaning
  }
}

}  // namespace

const ValueDict& Value::as_dict() const {
  if (is_namespace()) return *std::get<NamespaceBox>(data_).attrs;
  return *std::get<std::shared_ptr<ValueDict>>(data_);
}

bool Value::Truthy() const {
  switch (kind()) {
    case Kind::kUndefined:
    case Kind::kNone:
      return false;
    case Kind::kBool:
      return as_bool();
    case Kind::kInt:
      return as_int() != 0;
    case Kind::kFloat:
      return as_float() != 0.0;
    case Kind::kString:
      return !as_string().empty();
    case Kind::kList:
      return !as_list().empty();
    case Kind::kDict:
      return as_dict().size() != 0;
    default:
      return true;
  }
}

namespace {

bool IsNumeric(const Value& v) { return v.is_bool() || v.is_int() || v.is_float(); }

double NumericOf(const Value& v) {
  if (v.is_bool()) return v.as_bool() ? 1.0 : 0.0;
  return v.as_number();
}

bool DictEquals(const ValueDict& a, const ValueDict& b) {
  if (a.size() != b.size()) return false;
  for (const auto& [k, v] : a.items()) {
    const Value* other = b.Find(k);
    if (other == nullptr || !v.Equals(*other)) return false;
  }
  return true;
}

}  // namespace

bool Value::Equals(const Value& other) const {
  if (IsNumeric(*this) && IsNumeric(other)) {
    if ((is_int() || is_bool()) && (other.is_int() || other.is_bool())) {
      int64_t a = is_bool() ? as_bool() : as_int();
      int64_t b = other.is_bool() ? other.as_bool() : other.as_int();
      return a == b;
    }
    return NumericOf(*this) == NumericOf(other);
  }
  if (kind() != other.kind()) return false;
  switch (kind()) {
    case Kind::kUndefined:
    case Kind::kNone:
      return true;
    case Kind::kString:
      return as_string() == other.as_string();
    case Kind::kList: {
      const ValueList& a = as_list();
      const ValueList& b = other.as_list();
      if (a.size() != b.size()) return false;
      for (size_t i = 0; i < a.size(); ++i) {
        if (!a[i].Equals(b[i])) return false;
      }
      return true;
    }
    case Kind::kDict:
      return DictEquals(as_dict(), other.as_dict());
    case Kind::kNamespace:
      return &as_dict() == &other.as_dict();
    case Kind::kCallable:
      return &as_callable() == &other.as_callable();
    default:
      return false;
  }
}

std::string FormatPythonFloat(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  // sci looks like "-1.2345e+02": split sign, digits and exponent.
  bool negative = !sci.empty() && sci[0] == '-';
  if (negative) sci.erase(0, 1);
  size_t e = sci.find('e');
  int exponent = std::atoi(sci.c_str() + e + 1);
  std::string digits;
  for (size_t i = 0; i < e; ++i) {
    if (sci[i] != '.') digits.push_back(sci[i]);
  }
  std::string out = negative ? "-" : "";
  if (exponent >= -4 && exponent < 16) {
    if (exponent < 0) {
      out += "0." + std::string(-exponent - 1, '0') + digits;
    } else if (static_cast<size_t>(exponent) + 1 >= digits.size()) {
      out += digits + std::string(exponent + 1 - digits.size(), '0') + ".0";
    } else {
      out += digits.substr(0, exponent + 1) + "." + digits.substr(exponent + 1);
    }
    return out;
  }
  out += digits.substr(0, 1);
  if (digits.size() > 1) out += "." + digits.substr(1);
  char exp_buf[16];
  std::snprintf(exp_buf, sizeof(exp_buf), "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
  return out + exp_buf;
}

namespace {

std::string ReprString(const std::string& s) {
  bool has_single = s.find('\'') != std::string::npos;
  bool has_double = s.find('"') != std::string::npos;
  char quote = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, quote);
  for (unsigned char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == static_cast<unsigned char>(quote)) {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  out += quote;
  return out;
}

}  // namespace

std::string Value::Repr() const {
  if (is_string()) return ReprString(as_string());
  return Str();
}

std::string Value::Str() const {
  switch (kind()) {
    case Kind::kUndefined:
      return "";
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return as_bool() ? "True" : "False";
    case Kind::kInt:
      return std::to_string(as_int());
    case Kind::kFloat:
      return FormatPythonFloat(as_float());
    case Kind::kString:
      return as_string();
    case Kind::kList: {
      std::string out = tuple_ ? "(" : "[";
      const ValueList& items = as_list();
      for (size_t i = 0; i < items.size(); ++i) {
        if (i > 0) out += ", ";
        out += items[i].Repr();
      }
      if (tuple_ && items.size() == 1) out += ",";
      return out + (tuple_ ? ")" : "]");
    }
    case Kind::kDict:
    case Kind::kNamespace: {
      std::string out = is_namespace() ? "<Namespace {" : "{";
      bool first = true;
      for (const auto& [k, v] : as_dict().items()) {
        if (!first) out += ", ";
        first = false;
        out += ReprString(k) + ": " + v.Repr();
      }
      return out + (is_namespace() ? "}>" : "}");
    }
    case Kind::kCallable:
      return "<function " + as_callable().name + ">";
  }
  return "";
}

std::string Value::TypeName() const {
  switch (kind()) {
    case Kind::kUndefined:
      return "undefined";
    case Kind::kNone:
      return "NoneType";
    case Kind::kBool:
      return "bool";
    case Kind::kInt:
      return "int";
    case Kind::kFloat:
      return "float";
    case Kind::kString:
      return "str";
    case Kind::kList:
      return "list";
    case Kind::kDict:
      return "dict";
    case Kind::kNamespace:
      return "Namespace";
    case Kind::kCallable:
      return "function";
  }
  return "object";
}

namespace {

void AppendJsonString(const std::string& s, std::string* out) {
  out->push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        *out += "\\\"";
        break;
      case '\\':
        *out += "\\\\";
        break;
      case '\n':
        *out += "\\n";
        break;
      case '\r':
        *out += "\\r";
        break;
      case '\t':
        *out += "\\t";
        break;
      case '\b':
        *out += "\\b";
        break;
      case '\f':
        *out += "\\f";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          *out += buf;
        } else {
          out->push_back(static_cast<char>(c));
        }
    }
  }
  out->push_back('"');
}

class JsonWriter {
 public:
  JsonWriter(int indent, bool sort_keys) : indent_(indent), sort_keys_(sort_keys) {}

  absl::Status Write(const Value& v, int depth, std::string* out) {
    if (depth > kMaxDepth) return absl::InvalidArgumentError("tojson: value nested too deeply");
    switch (v.kind()) {
      case Value::Kind::kNone:
        *out += "null";
        return absl::OkStatus();
      case Value::Kind::kBool:
        *out += v.as_bool() ? "true" : "false";
        return absl::OkStatus();
      case Value::Kind::kInt:
        *out += std::to_string(v.as_int());
        return absl::OkStatus();
      case Value::Kind::kFloat:
        *out += FloatJson(v.as_float());
        return absl::OkStatus();
      case Value::Kind::kString:
        AppendJsonString(v.as_string(), out);
        return absl::OkStatus();
      case Value::Kind::kList:
        return WriteList(v.as_list(), depth, out);
      case Value::Kind::kDict:
        return WriteDict(v.as_dict(), depth, out);
      default:
        return absl::InvalidArgumentError(
            absl::StrCat("tojson: object of type ", v.TypeName(), " is not JSON serializable"));
    }
  }

 private:
  static constexpr int kMaxDepth = 512;

  static std::string FloatJson(double d) {
    if (std::isnan(d)) return "NaN";
    if (std::isinf(d)) return d < 0 ? "-Infinity" : "Infinity";
    return FormatPythonFloat(d);
  }

  void Newline(int depth, std::string* out) const {
    out->push_back('\n');
    out->append(static_cast<size_t>(indent_) * depth, ' ');
  }

  const char* ItemSeparator() const { return indent_ >= 0 ? "," : ", "; }

  absl::Status WriteList(const ValueList& items, int depth, std::string* out) {
    if (items.empty()) {
      *out += "[]";
      return absl::OkStatus();
    }
    out->push_back('[');
    for (size_t i = 0; i < items.size(); ++i) {
      if (i > 0) *out += ItemSeparator();
      if (indent_ >= 0) Newline(depth + 1, out);
      if (absl::Status s = Write(items[i], depth + 1, out); !s.ok()) return s;
    }
    if (indent_ >= 0) Newline(depth, out);
    out->push_back(']');
    return absl::OkStatus();
  }

  absl::Status WriteDict(const ValueDict& dict, int depth, std::string* out) {
    if (dict.size() == 0) {
      *out += "{}";
      return absl::OkStatus();
    }
    std::vector<const std::pair<std::string, Value>*> entries;
    for (const auto& item : dict.items()) entries.push_back(&item);
    if (sort_keys_) {
      std::stable_sort(entries.begin(), entries.end(),
                       [](const auto* a, const auto* b) { return a->first < b->first; });
    }
    out->push_back('{');
    for (size_t i = 0; i < entries.size(); ++i) {
      if (i > 0) *out += ItemSeparator();
      if (indent_ >= 0) Newline(depth + 1, out);
      AppendJsonString(entries[i]->first, out);
      *out += ": ";
      if (absl::Status s = Write(entries[i]->second, depth + 1, out); !s.ok()) return s;
    }
    if (indent_ >= 0) Newline(depth, out);
    out->push_back('}');
    return absl::OkStatus();
  }

  int indent_;
  bool sort_keys_;
};

}  // namespace

absl::StatusOr<std::string> ToPythonJson(const Value& value, int indent, bool sort_keys) {
  std::string out;
  JsonWriter writer(indent, sort_keys);
  if (absl::Status s = writer.Write(value, 0, &out); !s.ok()) return s;
  return out;
}

}  // namespace r2::chat::jinja
