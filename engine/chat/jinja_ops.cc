#include "engine/chat/jinja_ops.h"

#include <cmath>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/chat/jinja_status.h"

namespace r2::chat::jinja {
namespace {

absl::Status TypeError(std::string_view op, const Value& a, const Value& b) {
  return absl::InvalidArgumentError(absl::StrCat("unsupported operand types for ", std::string(op),
                                                 ": '", a.TypeName(), "' and '", b.TypeName(),
                                                 "'"));
}

bool IsIntLike(const Value& v) { return v.is_int() || v.is_bool(); }
int64_t IntOf(const Value& v) { return v.is_bool() ? (v.as_bool() ? 1 : 0) : v.as_int(); }
bool IsNum(const Value& v) { return IsIntLike(v) || v.is_float(); }
double FloatOf(const Value& v) {
  return v.is_float() ? v.as_float() : static_cast<double>(IntOf(v));
}

absl::StatusOr<Value> IntArith(std::string_view op, int64_t a, int64_t b) {
  int64_t r = 0;
  bool overflow = false;
  if (op == "+") {
    overflow = __builtin_add_overflow(a, b, &r);
  } else if (op == "-") {
    overflow = __builtin_sub_overflow(a, b, &r);
  } else if (op == "*") {
    overflow = __builtin_mul_overflow(a, b, &r);
  } else if (op == "//" || op == "%") {
    if (b == 0) return absl::InvalidArgumentError("integer division or modulo by zero");
    if (a == std::numeric_limits<int64_t>::min() && b == -1) {
      if (op == "%") return Value(int64_t{0});
      overflow = true;
    } else {
      int64_t q = a / b;
      int64_t m = a % b;
      if (m != 0 && ((m < 0) != (b < 0))) {
        --q;
        m += b;
      }
      r = op == "//" ? q : m;
    }
  } else if (op == "**") {
    if (b < 0) return Value(std::pow(static_cast<double>(a), static_cast<double>(b)));
    r = 1;
    for (int64_t i = 0; i < b && !overflow; ++i) {
      overflow = __builtin_mul_overflow(r, a, &r);
      if (r == 0 || r == 1) break;
    }
    if (!overflow && a == -1 && b % 2 == 1) r = -1;
  }
  if (overflow) return absl::InvalidArgumentError("integer overflow");
  return Value(r);
}

absl::StatusOr<Value> FloatArith(std::string_view op, double a, double b) {
  if (op == "+") return Value(a + b);
  if (op == "-") return Value(a - b);
  if (op == "*") return Value(a * b);
  if (op == "/") {
    if (b == 0) return absl::InvalidArgumentError("division by zero");
    return Value(a / b);
  }
  if (op == "//" || op == "%") {
    if (b == 0) return absl::InvalidArgumentError("float division or modulo by zero");
    double m = std::fmod(a, b);
    if (m != 0 && ((m < 0) != (b < 0))) m += b;
    if (op == "%") return Value(m);
    return Value(std::floor((a - m) / b + 0.5));
  }
  if (op == "**") return Value(std::pow(a, b));
  return absl::InvalidArgumentError(absl::StrCat("unknown operator ", std::string(op)));
}

absl::StatusOr<Value> Repeat(Evaluator& ev, const Value& seq, int64_t n) {
  if (n <= 0) return seq.is_string() ? Value(std::string()) : Value::List({});
  size_t unit = seq.is_string() ? seq.as_string().size() : seq.as_list().size();
  if (unit != 0 && static_cast<uint64_t>(n) > ev.limits().max_output_bytes / unit) {
    return absl::ResourceExhaustedError("sequence repetition exceeds the size limit");
  }
  JINJA_RETURN_IF_ERROR(seq.is_string() ? ev.ChargeSize(unit * static_cast<size_t>(n))
                                        : ev.ChargeItems(unit * static_cast<size_t>(n)));
  if (seq.is_string()) {
    std::string out;
    out.reserve(unit * n);
    for (int64_t i = 0; i < n; ++i) out += seq.as_string();
    return Value(std::move(out));
  }
  ValueList out;
  for (int64_t i = 0; i < n; ++i) {
    out.insert(out.end(), seq.as_list().begin(), seq.as_list().end());
  }
  return Value::List(std::move(out));
}

absl::StatusOr<Value> Concat(Evaluator& ev, const Value& a, const Value& b) {
  if (a.is_string() && b.is_string()) {
    JINJA_RETURN_IF_ERROR(ev.ChargeSize(a.as_string().size() + b.as_string().size()));
    return Value(a.as_string() + b.as_string());
  }
  ValueList out = a.as_list();
  JINJA_RETURN_IF_ERROR(ev.ChargeItems(out.size() + b.as_list().size()));
  out.insert(out.end(), b.as_list().begin(), b.as_list().end());
  return Value::List(std::move(out));
}

int64_t NormalizeIndex(int64_t i, int64_t size) { return i < 0 ? i + size : i; }

}  // namespace

absl::StatusOr<Value> BinaryOp(Evaluator& ev, std::string_view op, const Value& a, const Value& b) {
  if (op == "~") {
    std::string sa = a.Str();
    std::string sb = b.Str();
    JINJA_RETURN_IF_ERROR(ev.ChargeSize(sa.size() + sb.size()));
    return Value(sa + sb);
  }
  if (op == "+" && ((a.is_string() && b.is_string()) || (a.is_list() && b.is_list()))) {
    return Concat(ev, a, b);
  }
  if (op == "*" && (a.is_string() || a.is_list()) && IsIntLike(b)) return Repeat(ev, a, IntOf(b));
  if (op == "*" && (b.is_string() || b.is_list()) && IsIntLike(a)) return Repeat(ev, b, IntOf(a));
  if (!IsNum(a) || !IsNum(b)) return TypeError(op, a, b);
  if (op == "/") return FloatArith(op, FloatOf(a), FloatOf(b));
  if (IsIntLike(a) && IsIntLike(b)) return IntArith(op, IntOf(a), IntOf(b));
  return FloatArith(op, FloatOf(a), FloatOf(b));
}

absl::StatusOr<bool> Contains(const Value& container, const Value& item) {
  if (container.is_string()) {
    if (!item.is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat("'in <string>' requires string as left operand, not ", item.TypeName()));
    }
    return container.as_string().find(item.as_string()) != std::string::npos;
  }
  if (container.is_list()) {
    for (const Value& v : container.as_list()) {
      if (v.Equals(item)) return true;
    }
    return false;
  }
  if (container.is_dict() || container.is_namespace()) {
    if (!item.is_string()) return false;
    return container.as_dict().Find(item.as_string()) != nullptr;
  }
  if (container.is_undefined()) return absl::InvalidArgumentError("'in' on an undefined value");
  return absl::InvalidArgumentError(
      absl::StrCat("argument of type '", container.TypeName(), "' is not iterable"));
}

absl::StatusOr<int> Compare(const Value& a, const Value& b) {
  if (IsNum(a) && IsNum(b)) {
    if (IsIntLike(a) && IsIntLike(b)) {
      return IntOf(a) < IntOf(b) ? -1 : (IntOf(a) > IntOf(b) ? 1 : 0);
    }
    double x = FloatOf(a);
    double y = FloatOf(b);
    return x < y ? -1 : (x > y ? 1 : 0);
  }
  if (a.is_string() && b.is_string()) {
    int c = a.as_string().compare(b.as_string());
    return c < 0 ? -1 : (c > 0 ? 1 : 0);
  }
  if (a.is_list() && b.is_list()) {
    const ValueList& x = a.as_list();
    const ValueList& y = b.as_list();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (x[i].Equals(y[i])) continue;
      return Compare(x[i], y[i]);
    }
    return x.size() < y.size() ? -1 : (x.size() > y.size() ? 1 : 0);
  }
  return absl::InvalidArgumentError(absl::StrCat("'<' not supported between instances of '",
                                                 a.TypeName(), "' and '", b.TypeName(), "'"));
}

Value GetItem(const Value& obj, const Value& key) {
  if (obj.is_dict() || obj.is_namespace()) {
    std::string k = key.is_string() ? key.as_string() : key.Str();
    const Value* v = obj.as_dict().Find(k);
    return v ? *v : Value::MakeUndefined(k);
  }
  if (IsIntLike(key) && (obj.is_list() || obj.is_string())) {
    if (obj.is_list()) {
      const ValueList& items = obj.as_list();
      int64_t i = NormalizeIndex(IntOf(key), static_cast<int64_t>(items.size()));
      if (i < 0 || i >= static_cast<int64_t>(items.size())) return Value::MakeUndefined();
      return items[i];
    }
    const std::string& s = obj.as_string();
    std::vector<size_t> starts = Utf8Starts(s);
    int64_t n = static_cast<int64_t>(starts.size()) - 1;
    int64_t i = NormalizeIndex(IntOf(key), n);
    if (i < 0 || i >= n) return Value::MakeUndefined();
    return Value(s.substr(starts[i], starts[i + 1] - starts[i]));
  }
  if (key.is_string()) return GetAttr(obj, key.as_string());
  return Value::MakeUndefined();
}

Value GetAttr(const Value& obj, const std::string& name) {
  if (obj.is_dict() || obj.is_namespace()) {
    const Value* v = obj.as_dict().Find(name);
    if (v) return *v;
  }
  return Value::MakeUndefined(name);
}

namespace {

absl::StatusOr<int64_t> SliceBound(const Value& v, int64_t def) {
  if (v.is_undefined() || v.is_none()) return def;
  if (!IsIntLike(v)) return absl::InvalidArgumentError("slice indices must be integers or None");
  return IntOf(v);
}

}  // namespace

absl::StatusOr<Value> Slice(const Value& obj, const Value& start, const Value& stop,
                            const Value& step) {
  if (!obj.is_list() && !obj.is_string()) {
    return absl::InvalidArgumentError(absl::StrCat("'", obj.TypeName(), "' is not sliceable"));
  }
  std::vector<size_t> starts;
  if (obj.is_string()) starts = Utf8Starts(obj.as_string());
  const int64_t n = obj.is_list() ? static_cast<int64_t>(obj.as_list().size())
                                  : static_cast<int64_t>(starts.size()) - 1;
  JINJA_ASSIGN_OR_RETURN(int64_t st, SliceBound(step, 1));
  if (st == 0) return absl::InvalidArgumentError("slice step cannot be zero");
  JINJA_ASSIGN_OR_RETURN(int64_t lo, SliceBound(start, st > 0 ? 0 : n - 1));
  JINJA_ASSIGN_OR_RETURN(int64_t hi, SliceBound(stop, st > 0 ? n : -n - 1));
  auto clamp = [&](int64_t i, bool upper) {
    if (i < 0) i += n;
    if (st > 0) return std::clamp<int64_t>(i, 0, n);
    return std::clamp<int64_t>(i, -1, upper ? n - 1 : n - 1);
  };
  lo = clamp(lo, false);
  hi = clamp(hi, true);
  if (obj.is_list()) {
    ValueList out;
    for (int64_t i = lo; st > 0 ? i < hi : i > hi; i += st) out.push_back(obj.as_list()[i]);
    return Value::List(std::move(out));
  }
  const std::string& str = obj.as_string();
  std::string s;
  for (int64_t i = lo; st > 0 ? i < hi : i > hi; i += st) {
    s.append(str, starts[i], starts[i + 1] - starts[i]);
  }
  return Value(std::move(s));
}

absl::StatusOr<ValueList> Iterate(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return ValueList();
    case Value::Kind::kList:
      return v.as_list();
    case Value::Kind::kDict: {
      ValueList keys;
      for (const auto& [k, unused] : v.as_dict().items()) keys.push_back(Value(k));
      return keys;
    }
    case Value::Kind::kString:
      if (v.as_string().size() > Evaluator::kMaxListItems) {
        return absl::ResourceExhaustedError("string too long to iterate over");
      }
      return Utf8Chars(v.as_string());
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("'", v.TypeName(), "' object is not iterable"));
  }
}

namespace {

size_t Utf8SequenceLength(const std::string& s, size_t i) {
  unsigned char c = static_cast<unsigned char>(s[i]);
  size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 1;
  if (i + len > s.size()) return 1;
  for (size_t k = 1; k < len; ++k) {
    if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return 1;
  }
  return len;
}

}  // namespace

std::vector<size_t> Utf8Starts(const std::string& s) {
  std::vector<size_t> starts;
  for (size_t i = 0; i < s.size(); i += Utf8SequenceLength(s, i)) starts.push_back(i);
  starts.push_back(s.size());
  return starts;
}

ValueList Utf8Chars(const std::string& s) {
  ValueList out;
  for (size_t i = 0; i < s.size();) {
    size_t len = Utf8SequenceLength(s, i);
    out.push_back(Value(s.substr(i, len)));
    i += len;
  }
  return out;
}

size_t Utf8Length(const std::string& s) {
  size_t n = 0;
  for (size_t i = 0; i < s.size(); i += Utf8SequenceLength(s, i)) ++n;
  return n;
}

}  // namespace r2::chat::jinja
