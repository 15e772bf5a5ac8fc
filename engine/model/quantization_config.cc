#include "engine/model/quantization_config.h"

#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace r2::model {
namespace {

using Json = nlohmann::json;

// Error naming the file and the dotted field under quantization_config.
class Fields {
 public:
  Fields(const std::string& source, std::string path) : source_(source), path_(std::move(path)) {}
  Fields Sub(const std::string& key) const { return Fields(source_, path_ + "." + key); }
  absl::Status Error(const std::string& key, const std::string& message) const {
    return absl::InvalidArgumentError(
        absl::StrCat(source_, ": field '", path_, ".", key, "': ", message));
  }
  absl::Status Unsupported(const std::string& key, const Json& value,
                           const std::string& why) const {
    return Error(key, absl::StrCat("unsupported value ", value.dump(), " (", why, ")"));
  }

 private:
  const std::string& source_;
  std::string path_;
};

const Json* Find(const Json& object, const std::string& key) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

// The "weights" (or "input_activations") arguments of one config group.
struct QuantArgs {
  int64_t num_bits = 0;
  std::string type = "int";
  std::string strategy;
  int64_t group_size = 0;
  bool symmetric = true;
  bool dynamic = false;
  std::optional<std::string> actorder;
};

absl::StatusOr<QuantArgs> ParseArgs(const Json& v, const Fields& f) {
  if (!v.is_object()) return f.Error("", "expected an object");
  QuantArgs a;
  const Json* bits = Find(v, "num_bits");
  if (bits == nullptr || !bits->is_number_integer()) {
    return f.Error("num_bits", "missing or not an integer");
  }
  a.num_bits = bits->get<int64_t>();
  if (const Json* t = Find(v, "type"); t != nullptr) {
    if (!t->is_string()) return f.Error("type", "expected a string");
    a.type = t->get<std::string>();
  }
  if (const Json* s = Find(v, "strategy"); s != nullptr) {
    if (!s->is_string()) return f.Error("strategy", "expected a string");
    a.strategy = s->get<std::string>();
  }
  if (const Json* g = Find(v, "group_size"); g != nullptr) {
    if (!g->is_number_integer() || g->get<int64_t>() <= 0) {
      return f.Error("group_size", absl::StrCat("expected a positive integer, got ", g->dump()));
    }
    a.group_size = g->get<int64_t>();
  }
  const std::pair<const char*, bool*> flags[] = {{"symmetric", &a.symmetric},
                                                 {"dynamic", &a.dynamic}};
  for (const auto& [key, out] : flags) {
    if (const Json* b = Find(v, key); b != nullptr) {
      if (!b->is_boolean())
        return f.Error(key, absl::StrCat("expected a boolean, got ", b->dump()));
      *out = b->get<bool>();
    }
  }
  if (const Json* o = Find(v, "actorder"); o != nullptr) {
    if (o->is_string()) a.actorder = o->get<std::string>();
    if (o->is_boolean() && o->get<bool>()) a.actorder = "group";
  }
  if (a.type != "int") {
    return f.Unsupported("type", v["type"], "only integer weights are supported");
  }
  return a;
}

// One config group's weights (and activations) as a scheme for `format`.
absl::StatusOr<CompressedTensorsScheme> ParseGroup(const Json& g, const std::string& format,
                                                   const Fields& f) {
  if (!g.is_object()) return f.Error("", "expected an object");
  const Json* weights = Find(g, "weights");
  if (weights == nullptr) return f.Error("weights", "missing");
  auto w = ParseArgs(*weights, f.Sub("weights"));
  if (!w.ok()) return w.status();
  const Fields wf = f.Sub("weights");
  CompressedTensorsScheme s;
  s.format = format;
  s.num_bits = w->num_bits;
  s.symmetric = w->symmetric;
  if (w->dynamic) return wf.Unsupported("dynamic", true, "weights must be static");
  if (w->actorder == "group") {
    return wf.Unsupported("actorder", "group",
                          "activation reordering with weight_g_idx is not supported");
  }
  if (Find(g, "output_activations") != nullptr) {
    return f.Error("output_activations", "output activation quantization is not supported");
  }
  const Json* act = Find(g, "input_activations");
  if (format == "int-quantized") {
    if (w->num_bits != 8) {
      return wf.Unsupported("num_bits", w->num_bits, "int-quantized weights must be int8");
    }
    if (w->strategy != "channel") {
      return wf.Unsupported("strategy", w->strategy,
                            "int8 weights must have one scale per output channel");
    }
    if (!w->symmetric) return wf.Unsupported("symmetric", false, "int8 weights are symmetric");
    if (act == nullptr) {
      return f.Error("input_activations",
                     "int8 weights without int8 activations (W8A16) are not supported; "
                     "expected dynamic per-token int8 (W8A8)");
    }
    auto a = ParseArgs(*act, f.Sub("input_activations"));
    if (!a.ok()) return a.status();
    const Fields af = f.Sub("input_activations");
    if (a->num_bits != 8) return af.Unsupported("num_bits", a->num_bits, "expected 8");
    if (a->strategy != "token") {
      return af.Unsupported("strategy", a->strategy, "expected per-token \"token\"");
    }
    if (!a->dynamic) {
      return af.Unsupported("dynamic", false, "static activation scales are not supported");
    }
    if (!a->symmetric) return af.Unsupported("symmetric", false, "expected symmetric");
    s.group_size = 0;
    return s;
  }
  // pack-quantized
  if (w->num_bits != 4) {
    return wf.Unsupported("num_bits", w->num_bits, "pack-quantized weights must be int4");
  }
  if (act != nullptr) {
    return f.Error("input_activations",
                   "int4 weights with quantized activations (W4A8) are not supported");
  }
  if (w->strategy == "group") {
    if (w->group_size <= 0) return wf.Error("group_size", "missing for strategy \"group\"");
    s.group_size = w->group_size;
  } else if (w->strategy == "channel") {
    s.group_size = 0;
  } else {
    return wf.Unsupported("strategy", w->strategy, "expected \"group\" or \"channel\"");
  }
  return s;
}

bool SameScheme(const CompressedTensorsScheme& a, const CompressedTensorsScheme& b) {
  return a.num_bits == b.num_bits && a.group_size == b.group_size && a.symmetric == b.symmetric;
}

}  // namespace

absl::StatusOr<CompressedTensorsScheme> ParseCompressedTensorsConfig(const Json& q,
                                                                     const std::string& source) {
  const Fields f(source, "quantization_config");
  const Json* format = Find(q, "format");
  if (format == nullptr || !format->is_string()) return f.Error("format", "missing");
  const std::string fmt = format->get<std::string>();
  // "mixed-precision": each config group names its own format (they must agree here).
  const bool mixed = fmt == "mixed-precision";
  if (fmt != "int-quantized" && fmt != "pack-quantized" && !mixed) {
    return f.Unsupported("format", *format,
                         "supported compressed-tensors formats: int-quantized, pack-quantized");
  }
  if (const Json* status = Find(q, "quantization_status"); status != nullptr) {
    if (*status != "compressed") {
      return f.Unsupported("quantization_status", *status, "expected \"compressed\"");
    }
  }
  if (Find(q, "kv_cache_scheme") != nullptr) {
    return f.Error("kv_cache_scheme", "a quantized KV cache is not supported");
  }
  if (const Json* sparsity = Find(q, "sparsity_config"); sparsity != nullptr) {
    const Json* sformat = sparsity->is_object() ? Find(*sparsity, "format") : nullptr;
    const bool dense =
        sparsity->is_object() && (sparsity->empty() || (sformat != nullptr && *sformat == "dense"));
    if (!dense) return f.Error("sparsity_config", "sparse weights are not supported");
  }
  const Json* groups = Find(q, "config_groups");
  if (groups == nullptr || !groups->is_object() || groups->empty()) {
    return f.Error("config_groups", "missing or empty");
  }
  std::optional<CompressedTensorsScheme> scheme;
  for (auto it = groups->begin(); it != groups->end(); ++it) {
    const Fields gf = f.Sub("config_groups." + it.key());
    std::string group_format = fmt;
    const Json* gfmt = it.value().is_object() ? Find(it.value(), "format") : nullptr;
    if (mixed) {
      if (gfmt == nullptr || !gfmt->is_string()) {
        return gf.Error("format", "missing (the model's format is \"mixed-precision\")");
      }
      group_format = gfmt->get<std::string>();
      if (group_format != "int-quantized" && group_format != "pack-quantized") {
        return gf.Unsupported("format", *gfmt,
                              "supported compressed-tensors formats: int-quantized, "
                              "pack-quantized");
      }
    } else if (gfmt != nullptr && *gfmt != fmt) {
      return gf.Unsupported("format", *gfmt, "mixed formats in one model are not supported");
    }
    auto s = ParseGroup(it.value(), group_format, gf);
    if (!s.ok()) return s.status();
    if (scheme.has_value() && (!SameScheme(*scheme, *s) || scheme->format != s->format)) {
      return gf.Error("weights", "config groups with different weight schemes are not supported");
    }
    scheme = *s;
  }
  if (const Json* ignore = Find(q, "ignore"); ignore != nullptr) {
    if (!ignore->is_array()) return f.Error("ignore", "expected a list of strings");
    for (const Json& name : *ignore) {
      if (!name.is_string()) return f.Error("ignore", "expected a list of strings");
      scheme->ignore.push_back(name.get<std::string>());
    }
  }
  if (absl::Status s = CompileIgnorePatterns(*scheme); !s.ok()) {
    return f.Error("ignore", std::string(s.message()));
  }
  return *scheme;
}

absl::Status CompileIgnorePatterns(CompressedTensorsScheme& scheme) {
  scheme.ignore_patterns.clear();
  for (const std::string& entry : scheme.ignore) {
    if (entry.rfind("re:", 0) != 0) continue;
    try {
      scheme.ignore_patterns.push_back(std::make_shared<const std::regex>(
          entry.substr(3), std::regex::ECMAScript | std::regex::optimize));
    } catch (const std::regex_error& e) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", entry, "' is not a valid regular expression: ", e.what()));
    }
  }
  return absl::OkStatus();
}

bool IgnoresModule(const CompressedTensorsScheme& scheme, const std::string& module) {
  for (const std::string& entry : scheme.ignore) {
    if (entry == module) return true;
  }
  for (const auto& pattern : scheme.ignore_patterns) {
    if (std::regex_search(module, *pattern, std::regex_constants::match_continuous)) return true;
  }
  return false;
}

Json CompressedTensorsConfigJson(const CompressedTensorsScheme& s) {
  Json weights = {{"num_bits", s.num_bits},    {"type", "int"},       {"symmetric", s.symmetric},
                  {"dynamic", false},          {"actorder", nullptr}, {"observer", s.observer},
                  {"block_structure", nullptr}};
  Json activations = nullptr;
  if (s.num_bits == 8) {
    weights["strategy"] = "channel";
    weights["group_size"] = nullptr;
    activations = {{"num_bits", 8},        {"type", "int"},       {"symmetric", true},
                   {"dynamic", true},      {"strategy", "token"}, {"observer", nullptr},
                   {"group_size", nullptr}};
  } else {
    weights["strategy"] = s.group_size > 0 ? "group" : "channel";
    weights["group_size"] = s.group_size > 0 ? Json(s.group_size) : Json(nullptr);
  }
  Json group = {{"targets", {"Linear"}},
                {"weights", weights},
                {"input_activations", activations},
                {"output_activations", nullptr}};
  return Json{{"quant_method", "compressed-tensors"},
              {"format", s.format},
              {"quantization_status", "compressed"},
              {"config_groups", {{"group_0", group}}},
              {"ignore", s.ignore},
              {"kv_cache_scheme", nullptr}};
}

}  // namespace r2::model
