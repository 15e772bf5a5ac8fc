#include "engine/chat/jinja_builtins.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <map>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/chat/jinja_ops.h"
#include "engine/chat/jinja_status.h"

namespace r2::chat::jinja {
namespace {

absl::Status ArgError(std::string_view what, std::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(std::string(what), ": ", std::string(message)));
}

// ---- string helpers ----------------------------------------------------------------------------

bool IsPySpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

std::string Strip(const std::string& s, const Value* chars, bool left, bool right) {
  auto strip_char = [&](char c) {
    if (chars == nullptr || chars->is_none() || chars->is_undefined()) return IsPySpace(c);
    return chars->is_string() && chars->as_string().find(c) != std::string::npos;
  };
  size_t b = 0;
  size_t e = s.size();
  if (left) {
    while (b < e && strip_char(s[b])) ++b;
  }
  if (right) {
    while (e > b && strip_char(s[e - 1])) --e;
  }
  return s.substr(b, e - b);
}

int AsciiLower(int c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }
int AsciiUpper(int c) { return (c >= 'a' && c <= 'z') ? c - 32 : c; }

std::string MapAscii(const std::string& s, int (*fn)(int)) {
  std::string out = s;
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x80)
      c = static_cast<char>(fn(static_cast<unsigned char>(c)));
  }
  return out;
}

std::string Capitalize(const std::string& s) {
  std::string out = MapAscii(s, AsciiLower);
  if (!out.empty() && static_cast<unsigned char>(out[0]) < 0x80) {
    out[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(out[0])));
  }
  return out;
}

std::string Title(const std::string& s) {
  std::string out = s;
  bool prev_cased = false;
  for (char& c : out) {
    unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x80 && std::isalpha(u)) {
      c = static_cast<char>(prev_cased ? std::tolower(u) : std::toupper(u));
      prev_cased = true;
    } else {
      prev_cased = false;
    }
  }
  return out;
}

absl::StatusOr<Value> Split(const std::string& s, const Value* sep, const Value* maxsplit_v,
                            bool from_right) {
  int64_t maxsplit = (maxsplit_v && maxsplit_v->is_int()) ? maxsplit_v->as_int() : -1;
  std::vector<std::string> parts;
  if (sep == nullptr || sep->is_none() || sep->is_undefined()) {
    // Runs of whitespace; leading and trailing whitespace ignored.
    std::vector<std::pair<size_t, size_t>> words;
    size_t i = 0;
    while (i < s.size()) {
      while (i < s.size() && IsPySpace(s[i])) ++i;
      if (i >= s.size()) break;
      size_t j = i;
      while (j < s.size() && !IsPySpace(s[j])) ++j;
      words.emplace_back(i, j);
      i = j;
    }
    if (maxsplit < 0 || static_cast<size_t>(maxsplit) >= words.size()) {
      for (auto [b, e] : words) parts.push_back(s.substr(b, e - b));
    } else if (!from_right) {
      for (int64_t k = 0; k < maxsplit; ++k) {
        parts.push_back(s.substr(words[k].first, words[k].second - words[k].first));
      }
      parts.push_back(Strip(s.substr(words[maxsplit].first), nullptr, false, true));
    } else {
      size_t first = words.size() - maxsplit;
      parts.push_back(Strip(s.substr(0, words[first - 1].second), nullptr, true, false));
      for (size_t k = first; k < words.size(); ++k) {
        parts.push_back(s.substr(words[k].first, words[k].second - words[k].first));
      }
    }
  } else {
    if (!sep->is_string()) return ArgError("split", "separator must be a string");
    const std::string& d = sep->as_string();
    if (d.empty()) return ArgError("split", "empty separator");
    if (!from_right) {
      size_t start = 0;
      int64_t n = 0;
      size_t pos;
      while ((maxsplit < 0 || n < maxsplit) && (pos = s.find(d, start)) != std::string::npos) {
        parts.push_back(s.substr(start, pos - start));
        start = pos + d.size();
        ++n;
      }
      parts.push_back(s.substr(start));
    } else {
      size_t end = s.size();
      int64_t n = 0;
      std::vector<std::string> rev;
      while (maxsplit < 0 || n < maxsplit) {
        if (end < d.size()) break;
        size_t pos = s.rfind(d, end - d.size());
        if (pos == std::string::npos) break;
        rev.push_back(s.substr(pos + d.size(), end - pos - d.size()));
        end = pos;
        ++n;
      }
      rev.push_back(s.substr(0, end));
      parts.assign(rev.rbegin(), rev.rend());
    }
  }
  ValueList out;
  for (auto& p : parts) out.push_back(Value(std::move(p)));
  return Value::List(std::move(out));
}

absl::StatusOr<Value> Replace(Evaluator& ev, const std::string& s, const Value* old_v,
                              const Value* new_v, const Value* count_v) {
  if (!old_v || !new_v || !old_v->is_string() || !new_v->is_string()) {
    return ArgError("replace", "expects two strings");
  }
  const std::string& from = old_v->as_string();
  const std::string& to = new_v->as_string();
  int64_t count = (count_v && count_v->is_int()) ? count_v->as_int() : -1;
  std::string out;
  size_t start = 0;
  int64_t n = 0;
  if (from.empty()) {  // Python inserts `to` between every character
    JINJA_RETURN_IF_ERROR(ev.ChargeItems(s.size()));
    ValueList chars = Utf8Chars(s);
    for (const Value& c : chars) {
      if (count < 0 || n < count) {
        out += to;
        ++n;
      }
      out += c.as_string();
      JINJA_RETURN_IF_ERROR(ev.ChargeSize(out.size()));
    }
    if (count < 0 || n < count) out += to;
    return Value(std::move(out));
  }
  size_t pos;
  while ((count < 0 || n < count) && (pos = s.find(from, start)) != std::string::npos) {
    out.append(s, start, pos - start);
    out += to;
    start = pos + from.size();
    ++n;
    JINJA_RETURN_IF_ERROR(ev.ChargeSize(out.size()));
  }
  out.append(s, start);
  return Value(std::move(out));
}

bool StartsOrEndsWith(const std::string& s, const std::string& affix, bool start) {
  if (affix.size() > s.size()) return false;
  return start ? s.compare(0, affix.size(), affix) == 0
               : s.compare(s.size() - affix.size(), affix.size(), affix) == 0;
}

absl::StatusOr<Value> AffixTest(const std::string& s, const Value* arg, bool start) {
  if (arg == nullptr) return ArgError(start ? "startswith" : "endswith", "missing argument");
  if (arg->is_string()) return Value(StartsOrEndsWith(s, arg->as_string(), start));
  if (arg->is_list()) {
    for (const Value& v : arg->as_list()) {
      if (v.is_string() && StartsOrEndsWith(s, v.as_string(), start)) return Value(true);
    }
    return Value(false);
  }
  return ArgError(start ? "startswith" : "endswith", "argument must be str or a tuple of str");
}

// ---- filters -----------------------------------------------------------------------------------

std::string EscapeNonAscii(const std::string& json) {
  std::string out;
  for (size_t i = 0; i < json.size();) {
    unsigned char c = static_cast<unsigned char>(json[i]);
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
      ++i;
      continue;
    }
    size_t len = (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 1;
    if (i + len > json.size()) len = 1;
    uint32_t cp = len == 1 ? c : c & (0xFF >> (len + 1));
    for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (json[i + k] & 0x3F);
    char buf[16];
    if (cp >= 0x10000) {
      cp -= 0x10000;
      std::snprintf(buf, sizeof(buf), "\\u%04x\\u%04x", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF));
    } else {
      std::snprintf(buf, sizeof(buf), "\\u%04x", cp);
    }
    out += buf;
    i += len;
  }
  return out;
}

absl::StatusOr<Value> FilterToJson(Evaluator& ev, const Value& input, const CallArgs& args) {
  const Value* ensure_ascii = args.Get(0, "ensure_ascii");
  const Value* indent_v = args.Get(1, "indent");
  const Value* sort_keys = args.Get(3, "sort_keys");
  int indent = -1;
  if (indent_v && indent_v->is_int()) {
    indent = static_cast<int>(std::clamp<int64_t>(indent_v->as_int(), 0, 64));
  } else if (indent_v && indent_v->is_string()) {
    return ArgError("tojson", "string indent is not supported");
  }
  JINJA_ASSIGN_OR_RETURN(std::string json,
                         ToPythonJson(input, indent, sort_keys && sort_keys->Truthy()));
  JINJA_RETURN_IF_ERROR(ev.ChargeSize(json.size()));
  if (ensure_ascii && ensure_ascii->Truthy()) json = EscapeNonAscii(json);
  return Value(std::move(json));
}

// Looks up a dotted attribute path ("function.name") the way Jinja's attribute filters do.
Value AttributePath(const Value& item, const std::string& path) {
  Value cur = item;
  size_t start = 0;
  while (true) {
    size_t dot = path.find('.', start);
    std::string part =
        path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    bool numeric = !part.empty() && std::all_of(part.begin(), part.end(),
                                                [](char c) { return c >= '0' && c <= '9'; });
    cur = numeric && cur.is_list()
              ? GetItem(cur, Value(static_cast<int64_t>(std::atoll(part.c_str()))))
              : GetAttr(cur, part);
    if (dot == std::string::npos) return cur;
    start = dot + 1;
  }
}

// select/reject/selectattr/rejectattr.
absl::StatusOr<Value> FilterSelect(Evaluator& ev, const Value& input, const CallArgs& args,
                                   bool by_attr, bool keep_if) {
  JINJA_ASSIGN_OR_RETURN(ValueList items, Iterate(input));
  size_t next = 0;
  std::string attr;
  if (by_attr) {
    if (args.args.empty() || !args.args[0].is_string()) {
      return ArgError("selectattr", "expects an attribute name");
    }
    attr = args.args[0].as_string();
    next = 1;
  }
  std::string test;
  CallArgs test_args;
  if (args.args.size() > next) {
    if (!args.args[next].is_string()) return ArgError("select", "test name must be a string");
    test = args.args[next].as_string();
    test_args.args.assign(args.args.begin() + next + 1, args.args.end());
  }
  ValueList out;
  for (const Value& item : items) {
    JINJA_RETURN_IF_ERROR(ev.Charge());
    Value subject = by_attr ? AttributePath(item, attr) : item;
    bool pass;
    if (test.empty()) {
      pass = subject.Truthy();
    } else {
      JINJA_ASSIGN_OR_RETURN(pass, ApplyTest(ev, test, subject, test_args));
    }
    if (pass == keep_if) out.push_back(item);
  }
  return Value::List(std::move(out));
}

absl::StatusOr<Value> FilterMap(Evaluator& ev, const Value& input, const CallArgs& args) {
  JINJA_ASSIGN_OR_RETURN(ValueList items, Iterate(input));
  ValueList out;
  const Value* attribute = args.Get(99, "attribute");
  if (attribute) {
    const Value* def = args.Get(99, "default");
    for (const Value& item : items) {
      Value v = AttributePath(item, attribute->Str());
      out.push_back(v.is_undefined() && def ? *def : v);
    }
    return Value::List(std::move(out));
  }
  if (args.args.empty() || !args.args[0].is_string()) return ArgError("map", "expects a filter");
  CallArgs rest;
  rest.args.assign(args.args.begin() + 1, args.args.end());
  rest.kwargs = args.kwargs;
  for (const Value& item : items) {
    JINJA_RETURN_IF_ERROR(ev.Charge());
    JINJA_ASSIGN_OR_RETURN(Value v, ApplyFilter(ev, args.args[0].as_string(), item, rest));
    out.push_back(std::move(v));
  }
  return Value::List(std::move(out));
}

absl::StatusOr<Value> FilterJoin(Evaluator& ev, const Value& input, const CallArgs& args) {
  JINJA_ASSIGN_OR_RETURN(ValueList items, Iterate(input));
  const Value* sep = args.Get(0, "d");
  const Value* attribute = args.Get(1, "attribute");
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0 && sep) out += sep->Str();
    out += attribute ? AttributePath(items[i], attribute->Str()).Str() : items[i].Str();
    JINJA_RETURN_IF_ERROR(ev.ChargeSize(out.size()));
  }
  return Value(std::move(out));
}

absl::StatusOr<Value> FilterSort(Evaluator& ev, const Value& input, const CallArgs& args) {
  JINJA_ASSIGN_OR_RETURN(ValueList items, Iterate(input));
  const Value* reverse = args.Get(0, "reverse");
  const Value* attribute = args.Get(2, "attribute");
  JINJA_RETURN_IF_ERROR(ev.Charge(static_cast<int64_t>(items.size())));
  absl::Status error;
  auto key = [&](const Value& v) { return attribute ? AttributePath(v, attribute->Str()) : v; };
  std::stable_sort(items.begin(), items.end(), [&](const Value& a, const Value& b) {
    absl::StatusOr<int> c = Compare(key(a), key(b));
    if (!c.ok()) {
      error = c.status();
      return false;
    }
    return *c < 0;
  });
  JINJA_RETURN_IF_ERROR(error);
  if (reverse && reverse->Truthy()) std::reverse(items.begin(), items.end());
  return Value::List(std::move(items));
}

absl::StatusOr<Value> FilterLength(const Value& input) {
  switch (input.kind()) {
    case Value::Kind::kString:
      return Value(static_cast<int64_t>(Utf8Length(input.as_string())));
    case Value::Kind::kList:
      return Value(static_cast<int64_t>(input.as_list().size()));
    case Value::Kind::kDict:
      return Value(static_cast<int64_t>(input.as_dict().size()));
    case Value::Kind::kUndefined:
      return Value(int64_t{0});
    default:
      return ArgError("length",
                      absl::StrCat("object of type '", input.TypeName(), "' has no len()"));
  }
}

absl::StatusOr<Value> FilterFirstLast(const Value& input, bool first) {
  JINJA_ASSIGN_OR_RETURN(ValueList items, Iterate(input));
  if (items.empty()) return Value::MakeUndefined();
  return first ? items.front() : items.back();
}

absl::StatusOr<Value> FilterItems(const Value& input) {
  if (input.is_undefined()) return Value::List({});
  if (!input.is_dict()) return ArgError("items", "can only be used on a mapping");
  ValueList out;
  for (const auto& [k, v] : input.as_dict().items()) out.push_back(Value::Tuple({Value(k), v}));
  return Value::List(std::move(out));
}

absl::StatusOr<Value> FilterInt(const Value& input, const CallArgs& args) {
  const Value* def = args.Get(0, "default");
  Value fallback = def ? *def : Value(int64_t{0});
  if (input.is_int()) return input;
  if (input.is_bool()) return Value(static_cast<int64_t>(input.as_bool()));
  if (input.is_float()) {
    double d = input.as_float();
    if (!std::isfinite(d) || std::fabs(d) > 9.2e18) return fallback;
    return Value(static_cast<int64_t>(d));
  }
  if (input.is_string()) {
    std::string s = Strip(input.as_string(), nullptr, true, true);
    char* end = nullptr;
    errno = 0;
    long long v = std::strtoll(s.c_str(), &end, 10);
    if (!s.empty() && end && *end == '\0' && errno == 0) return Value(static_cast<int64_t>(v));
    double d = std::strtod(s.c_str(), &end);
    if (!s.empty() && end && *end == '\0' && std::isfinite(d) && std::fabs(d) < 9.2e18) {
      return Value(static_cast<int64_t>(d));
    }
  }
  return fallback;
}

absl::StatusOr<Value> FilterFloat(const Value& input, const CallArgs& args) {
  const Value* def = args.Get(0, "default");
  if (input.is_float()) return input;
  if (input.is_int() || input.is_bool())
    return Value(input.is_int() ? input.as_number() : (input.as_bool() ? 1.0 : 0.0));
  if (input.is_string()) {
    std::string s = Strip(input.as_string(), nullptr, true, true);
    char* end = nullptr;
    double d = std::strtod(s.c_str(), &end);
    if (!s.empty() && end && *end == '\0') return Value(d);
  }
  return def ? *def : Value(0.0);
}

absl::StatusOr<Value> FilterUnique(const Value& input) {
  JINJA_ASSIGN_OR_RETURN(ValueList items, Iterate(input));
  ValueList out;
  for (const Value& v : items) {
    bool seen = false;
    for (const Value& o : out) seen = seen || o.Equals(v);
    if (!seen) out.push_back(v);
  }
  return Value::List(std::move(out));
}

absl::StatusOr<Value> StringFilter(Evaluator& ev, std::string_view name, const Value& input,
                                   const CallArgs& args) {
  if (!input.is_string()) {
    if (name == "trim" || name == "upper" || name == "lower" || name == "capitalize" ||
        name == "title") {
      return ApplyFilter(ev, name, Value(input.Str()), args);
    }
    return ArgError(name, absl::StrCat("expects a string, got ", input.TypeName()));
  }
  const std::string& s = input.as_string();
  if (name == "trim") return Value(Strip(s, args.Get(0, "chars"), true, true));
  if (name == "upper") return Value(MapAscii(s, AsciiUpper));
  if (name == "lower") return Value(MapAscii(s, AsciiLower));
  if (name == "capitalize") return Value(Capitalize(s));
  if (name == "title") return Value(Title(s));
  return Replace(ev, s, args.Get(0, "old"), args.Get(1, "new"), args.Get(2, "count"));
}

using FilterFn = std::function<absl::StatusOr<Value>(Evaluator&, const Value&, const CallArgs&)>;

const std::map<std::string, FilterFn, std::less<>>& Filters() {
  static const auto* filters = new std::map<std::string, FilterFn, std::less<>>{
      {"tojson", FilterToJson},
      {"length", [](Evaluator&, const Value& v, const CallArgs&) { return FilterLength(v); }},
      {"count", [](Evaluator&, const Value& v, const CallArgs&) { return FilterLength(v); }},
      {"string", [](Evaluator&, const Value& v, const CallArgs&) { return Value(v.Str()); }},
      {"safe",
       [](Evaluator&, const Value& v, const CallArgs&) { return absl::StatusOr<Value>(v); }},
      {"first",
       [](Evaluator&, const Value& v, const CallArgs&) { return FilterFirstLast(v, true); }},
      {"last",
       [](Evaluator&, const Value& v, const CallArgs&) { return FilterFirstLast(v, false); }},
      {"items", [](Evaluator&, const Value& v, const CallArgs&) { return FilterItems(v); }},
      {"list",
       [](Evaluator&, const Value& v, const CallArgs&) -> absl::StatusOr<Value> {
         JINJA_ASSIGN_OR_RETURN(ValueList items, Iterate(v));
         return Value::List(std::move(items));
       }},
      {"join", FilterJoin},
      {"map", FilterMap},
      {"sort", FilterSort},
      {"unique", [](Evaluator&, const Value& v, const CallArgs&) { return FilterUnique(v); }},
      {"reverse",
       [](Evaluator& ev, const Value& v, const CallArgs&) -> absl::StatusOr<Value> {
         if (v.is_string()) {
           JINJA_RETURN_IF_ERROR(ev.ChargeItems(v.as_string().size()));
           ValueList chars = Utf8Chars(v.as_string());
           std::string out;
           for (auto it = chars.rbegin(); it != chars.rend(); ++it) out += it->as_string();
           return Value(std::move(out));
         }
         JINJA_ASSIGN_OR_RETURN(ValueList items, Iterate(v));
         std::reverse(items.begin(), items.end());
         return Value::List(std::move(items));
       }},
      {"int", [](Evaluator&, const Value& v, const CallArgs& a) { return FilterInt(v, a); }},
      {"float", [](Evaluator&, const Value& v, const CallArgs& a) { return FilterFloat(v, a); }},
      {"abs",
       [](Evaluator&, const Value& v, const CallArgs&) -> absl::StatusOr<Value> {
         if (v.is_int() && v.as_int() != INT64_MIN) return Value(std::abs(v.as_int()));
         if (v.is_float()) return Value(std::fabs(v.as_float()));
         return ArgError("abs", "expects a number");
       }},
      {"default",
       [](Evaluator&, const Value& v, const CallArgs& a) -> absl::StatusOr<Value> {
         const Value* def = a.Get(0, "default_value");
         const Value* boolean = a.Get(1, "boolean");
         bool use_default = v.is_undefined() || (boolean && boolean->Truthy() && !v.Truthy());
         if (!use_default) return v;
         return def ? *def : Value(std::string());
       }},
      {"select", [](Evaluator& ev, const Value& v,
                    const CallArgs& a) { return FilterSelect(ev, v, a, false, true); }},
      {"reject", [](Evaluator& ev, const Value& v,
                    const CallArgs& a) { return FilterSelect(ev, v, a, false, false); }},
      {"selectattr", [](Evaluator& ev, const Value& v,
                        const CallArgs& a) { return FilterSelect(ev, v, a, true, true); }},
      {"rejectattr", [](Evaluator& ev, const Value& v,
                        const CallArgs& a) { return FilterSelect(ev, v, a, true, false); }},
  };
  return *filters;
}

// ---- tests -------------------------------------------------------------------------------------

absl::StatusOr<bool> CompareTest(std::string_view name, const Value& a, const CallArgs& args) {
  const Value* b = args.Get(0, "other");
  if (b == nullptr) return ArgError(name, "missing argument");
  if (name == "eq" || name == "equalto" || name == "==") return a.Equals(*b);
  if (name == "ne" || name == "!=") return !a.Equals(*b);
  if (name == "sameas") return a.Equals(*b) && a.kind() == b->kind();
  if (name == "in") return Contains(*b, a);
  JINJA_ASSIGN_OR_RETURN(int c, Compare(a, *b));
  if (name == "lt" || name == "lessthan" || name == "<") return c < 0;
  if (name == "le" || name == "<=") return c <= 0;
  if (name == "gt" || name == "greaterthan" || name == ">") return c > 0;
  return c >= 0;  // ge, >=
}

}  // namespace

absl::StatusOr<Value> ApplyFilter(Evaluator& ev, std::string_view name, const Value& input,
                                  const CallArgs& args) {
  JINJA_RETURN_IF_ERROR(ev.Charge());
  if (name == "d") name = "default";
  if (name == "e" || name == "escape" || name == "forceescape") {
    return ArgError(name, "HTML escaping is not supported in chat templates");
  }
  if (name == "trim" || name == "upper" || name == "lower" || name == "capitalize" ||
      name == "title" || name == "replace") {
    return StringFilter(ev, name, input, args);
  }
  auto it = Filters().find(name);
  if (it == Filters().end()) {
    return absl::InvalidArgumentError(absl::StrCat("unknown filter '", std::string(name), "'"));
  }
  return it->second(ev, input, args);
}

absl::StatusOr<bool> ApplyTest(Evaluator& ev, std::string_view name, const Value& v,
                               const CallArgs& args) {
  JINJA_RETURN_IF_ERROR(ev.Charge());
  using K = Value::Kind;
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "string") return v.is_string();
  if (name == "mapping") return v.is_dict();
  if (name == "iterable") return v.is_list() || v.is_dict() || v.is_string();
  if (name == "sequence") return v.is_list() || v.is_dict() || v.is_string();
  if (name == "number") return v.is_int() || v.is_float() || v.is_bool();
  if (name == "integer") return v.is_int();
  if (name == "float") return v.is_float();
  if (name == "boolean") return v.is_bool();
  if (name == "true") return v.is_bool() && v.as_bool();
  if (name == "false") return v.is_bool() && !v.as_bool();
  if (name == "callable") return v.kind() == K::kCallable;
  if (name == "lower" || name == "upper") {
    if (!v.is_string()) return false;
    const std::string& s = v.as_string();
    return s == MapAscii(s, name == "lower" ? AsciiLower : AsciiUpper);
  }
  if (name == "even" || name == "odd" || name == "divisibleby") {
    if (!v.is_int()) return ArgError(name, "expects an integer");
    int64_t d = 2;
    if (name == "divisibleby") {
      const Value* n = args.Get(0, "num");
      if (!n || !n->is_int() || n->as_int() == 0) return ArgError(name, "expects a non-zero int");
      d = n->as_int();
    }
    bool divisible = d == -1 || v.as_int() % d == 0;
    return name == "odd" ? !divisible : divisible;
  }
  static const char* kCompareTests[] = {
      "eq", "equalto", "==", "ne", "!=",          "sameas", "in", "lt", "lessthan",
      "<",  "le",      "<=", "gt", "greaterthan", ">",      "ge", ">="};
  for (const char* t : kCompareTests) {
    if (name == t) return CompareTest(name, v, args);
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown test '", std::string(name), "'"));
}

namespace {

absl::StatusOr<Value> StringMethod(Evaluator& ev, const std::string& s, std::string_view name,
                                   const CallArgs& args, bool* found) {
  if (name == "split" || name == "rsplit") {
    return Split(s, args.Get(0, "sep"), args.Get(1, "maxsplit"), name == "rsplit");
  }
  if (name == "strip") return Value(Strip(s, args.Get(0, "chars"), true, true));
  if (name == "lstrip") return Value(Strip(s, args.Get(0, "chars"), true, false));
  if (name == "rstrip") return Value(Strip(s, args.Get(0, "chars"), false, true));
  if (name == "startswith") return AffixTest(s, args.Get(0, "prefix"), true);
  if (name == "endswith") return AffixTest(s, args.Get(0, "suffix"), false);
  if (name == "replace") {
    return Replace(ev, s, args.Get(0, "old"), args.Get(1, "new"), args.Get(2, "count"));
  }
  if (name == "upper") return Value(MapAscii(s, AsciiUpper));
  if (name == "lower") return Value(MapAscii(s, AsciiLower));
  if (name == "title") return Value(Title(s));
  if (name == "capitalize") return Value(Capitalize(s));
  if (name == "find" || name == "count") {
    const Value* sub = args.Get(0, "sub");
    if (!sub || !sub->is_string()) return ArgError(name, "expects a string");
    if (name == "find") {
      size_t pos = s.find(sub->as_string());
      return Value(pos == std::string::npos ? int64_t{-1}
                                            : static_cast<int64_t>(Utf8Length(s.substr(0, pos))));
    }
    if (sub->as_string().empty()) return Value(static_cast<int64_t>(Utf8Length(s) + 1));
    int64_t n = 0;
    for (size_t p = s.find(sub->as_string()); p != std::string::npos;
         p = s.find(sub->as_string(), p + sub->as_string().size())) {
      ++n;
    }
    return Value(n);
  }
  if (name == "join") {
    const Value* items = args.Get(0, "iterable");
    if (!items) return ArgError("join", "missing argument");
    CallArgs join_args;
    join_args.args.push_back(Value(s));
    return FilterJoin(ev, *items, join_args);
  }
  *found = false;
  return Value::MakeUndefined();
}

absl::StatusOr<Value> DictMethod(const ValueDict& d, std::string_view name, const CallArgs& args,
                                 bool* found) {
  ValueList out;
  if (name == "items") {
    for (const auto& [k, v] : d.items()) out.push_back(Value::Tuple({Value(k), v}));
  } else if (name == "keys") {
    for (const auto& [k, v] : d.items()) out.push_back(Value(k));
  } else if (name == "values") {
    for (const auto& [k, v] : d.items()) out.push_back(v);
  } else if (name == "get") {
    const Value* key = args.Get(0, "key");
    if (!key) return ArgError("get", "missing key");
    const Value* v = key->is_string() ? d.Find(key->as_string()) : nullptr;
    if (v) return *v;
    const Value* def = args.Get(1, "default");
    return def ? *def : Value::None();
  } else {
    *found = false;
    return Value::MakeUndefined();
  }
  return Value::List(std::move(out));
}

}  // namespace

absl::StatusOr<Value> CallMethod(Evaluator& ev, const Value& obj, std::string_view name,
                                 const CallArgs& args, bool* found) {
  *found = true;
  JINJA_RETURN_IF_ERROR(ev.Charge());
  if (obj.is_string()) return StringMethod(ev, obj.as_string(), name, args, found);
  if (obj.is_dict()) return DictMethod(obj.as_dict(), name, args, found);
  if (obj.is_list() && (name == "append" || name == "pop" || name == "extend" || name == "insert" ||
                        name == "remove" || name == "clear")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "list.", std::string(name), " is not allowed: templates cannot modify values"));
  }
  *found = false;
  return Value::MakeUndefined();
}

bool IsGlobalFunction(std::string_view name) {
  return name == "range" || name == "namespace" || name == "dict" || name == "raise_exception" ||
         name == "strftime_now";
}

namespace {

absl::StatusOr<Value> Range(Evaluator& ev, const CallArgs& args) {
  std::vector<int64_t> n;
  for (const Value& a : args.args) {
    if (!a.is_int()) return ArgError("range", "arguments must be integers");
    n.push_back(a.as_int());
  }
  if (n.empty() || n.size() > 3) return ArgError("range", "expects 1 to 3 arguments");
  int64_t start = n.size() == 1 ? 0 : n[0];
  int64_t stop = n.size() == 1 ? n[0] : n[1];
  int64_t step = n.size() == 3 ? n[2] : 1;
  if (step == 0) return ArgError("range", "step must not be zero");
  double count = std::ceil((static_cast<double>(stop) - static_cast<double>(start)) /
                           static_cast<double>(step));
  if (count > static_cast<double>(Evaluator::kMaxListItems)) {
    return absl::ResourceExhaustedError("range is too large");
  }
  ValueList out;
  if (count > 0) {
    JINJA_RETURN_IF_ERROR(ev.ChargeItems(static_cast<size_t>(count)));
    for (int64_t i = 0, v = start; i < static_cast<int64_t>(count); ++i, v += step) {
      out.push_back(Value(v));
    }
  }
  return Value::List(std::move(out));
}

absl::StatusOr<ValueDict> DictFromArgs(const CallArgs& args) {
  ValueDict d;
  for (const Value& a : args.args) {
    if (!a.is_dict()) return ArgError("dict", "positional argument must be a mapping");
    for (const auto& [k, v] : a.as_dict().items()) d.Set(k, v);
  }
  for (const auto& [k, v] : args.kwargs) d.Set(k, v);
  return d;
}

}  // namespace

absl::StatusOr<Value> CallGlobalFunction(Evaluator& ev, std::string_view name,
                                         const CallArgs& args) {
  if (name == "range") return Range(ev, args);
  if (name == "namespace" || name == "dict") {
    JINJA_ASSIGN_OR_RETURN(ValueDict d, DictFromArgs(args));
    return name == "dict" ? Value::Dict(std::move(d)) : Value::Namespace(std::move(d));
  }
  if (name == "raise_exception") {
    const Value* msg = args.Get(0, "message");
    return absl::InvalidArgumentError(
        absl::StrCat("template raised an exception: ", msg ? msg->Str() : ""));
  }
  if (name == "strftime_now") {
    const Value* fmt = args.Get(0, "format");
    if (!fmt || !fmt->is_string() || fmt->as_string().size() > 256) {
      return ArgError("strftime_now", "expects a short format string");
    }
    std::time_t now = std::time(nullptr);
    std::tm tm_now{};
    localtime_r(&now, &tm_now);
    char buf[1024];
    size_t n = std::strftime(buf, sizeof(buf), fmt->as_string().c_str(), &tm_now);
    return Value(std::string(buf, n));
  }
  return absl::InvalidArgumentError(absl::StrCat("'", std::string(name), "' is undefined"));
}

}  // namespace r2::chat::jinja
