#include "engine/model/config.h"

#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace r2::model {
namespace {

using Json = nlohmann::json;

// Sizes above this are rejected so that products of two or three of them cannot overflow int64.
constexpr int64_t kMaxSize = int64_t{1} << 24;
constexpr int64_t kMaxPositions = int64_t{1} << 32;

enum class IntRange { kPositive, kNonNegative, kAny };

// Reads typed fields of one JSON object; absent (and, where allowed, null) fields keep the value
// the caller already holds, i.e. the Hugging Face default. Errors name the file and the dotted
// field path.
class FieldReader {
 public:
  FieldReader(const Json& object, const std::string& source, std::string prefix)
      : object_(object), source_(source), prefix_(std::move(prefix)) {}

  absl::Status Error(absl::string_view key, absl::string_view message) const {
    return absl::InvalidArgumentError(
        absl::StrCat(source_, ": field '", prefix_, key, "': ", message));
  }

  // The field's value, or nullptr when absent or null.
  const Json* Find(absl::string_view key) const {
    auto it = object_.find(key);
    if (it == object_.end() || it->is_null()) return nullptr;
    return &*it;
  }
  bool Present(absl::string_view key) const { return object_.contains(key); }

  absl::Status Int(absl::string_view key, int64_t* out, IntRange range = IntRange::kPositive,
                   int64_t max = kMaxSize) const {
    const Json* v = Find(key);
    if (v == nullptr) return absl::OkStatus();
    int64_t value = 0;
    if (v->is_number_unsigned()) {
      if (v->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return Error(key, "integer out of range");
      }
      value = static_cast<int64_t>(v->get<uint64_t>());
    } else if (v->is_number_integer()) {
      value = v->get<int64_t>();
    } else if (v->is_number_float()) {
      const double d = v->get<double>();
      if (!std::isfinite(d) || d != std::floor(d) || std::fabs(d) > 9.0e15) {
        return Error(key, absl::StrCat("expected an integer, got ", v->dump()));
      }
      value = static_cast<int64_t>(d);
    } else {
      return Error(key, absl::StrCat("expected an integer, got ", TypeName(*v)));
    }
    if (range == IntRange::kPositive && value <= 0) {
      return Error(key, absl::StrCat("must be positive, got ", value));
    }
    if (range == IntRange::kNonNegative && value < 0) {
      return Error(key, absl::StrCat("must not be negative, got ", value));
    }
    if (value > max) return Error(key, absl::StrCat("too large: ", value, " > ", max));
    *out = value;
    return absl::OkStatus();
  }

  absl::Status Double(absl::string_view key, double* out) const {
    const Json* v = Find(key);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_number()) return Error(key, absl::StrCat("expected a number, got ", TypeName(*v)));
    const double d = v->get<double>();
    if (!std::isfinite(d)) return Error(key, "must be finite");
    *out = d;
    return absl::OkStatus();
  }

  absl::Status PositiveDouble(absl::string_view key, double* out) const {
    if (absl::Status s = Double(key, out); !s.ok()) return s;
    if (Find(key) != nullptr && !(*out > 0)) {
      return Error(key, absl::StrCat("must be positive, got ", *out));
    }
    return absl::OkStatus();
  }

  absl::Status Bool(absl::string_view key, bool* out) const {
    const Json* v = Find(key);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_boolean()) return Error(key, absl::StrCat("expected a boolean, got ", TypeName(*v)));
    *out = v->get<bool>();
    return absl::OkStatus();
  }

  absl::Status String(absl::string_view key, std::string* out) const {
    const Json* v = Find(key);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_string()) return Error(key, absl::StrCat("expected a string, got ", TypeName(*v)));
    *out = v->get<std::string>();
    return absl::OkStatus();
  }

  // A string that must be one of `allowed`.
  absl::Status Choice(absl::string_view key, std::string* out,
                      std::initializer_list<absl::string_view> allowed) const {
    if (absl::Status s = String(key, out); !s.ok()) return s;
    for (absl::string_view a : allowed) {
      if (*out == a) return absl::OkStatus();
    }
    return Error(key, absl::StrCat("unsupported value '", *out,
                                   "' (supported: ", absl::StrJoin(allowed, ", "), ")"));
  }

  static std::string TypeName(const Json& v) {
    if (v.is_number_float()) return absl::StrCat("a non-integer number ", v.dump());
    return absl::StrCat("a JSON ", v.type_name());
  }

  const std::string& source() const { return source_; }

 private:
  const Json& object_;
  const std::string& source_;
  std::string prefix_;
};

absl::Status ParseSizes(const FieldReader& r, ModelConfig& c) {
  const std::pair<absl::string_view, int64_t*> positive[] = {
      {"vocab_size", &c.vocab_size},
      {"hidden_size", &c.hidden_size},
      {"intermediate_size", &c.intermediate_size},
      {"moe_intermediate_size", &c.moe_intermediate_size},
      {"num_hidden_layers", &c.num_hidden_layers},
      {"num_attention_heads", &c.num_attention_heads},
      {"kv_lora_rank", &c.kv_lora_rank},
      {"qk_nope_head_dim", &c.qk_nope_head_dim},
      {"qk_rope_head_dim", &c.qk_rope_head_dim},
      {"v_head_dim", &c.v_head_dim},
      {"n_routed_experts", &c.n_routed_experts},
      {"num_experts_per_tok", &c.num_experts_per_tok},
      {"n_group", &c.n_group},
      {"topk_group", &c.topk_group},
      {"moe_layer_freq", &c.moe_layer_freq},
  };
  for (const auto& [key, field] : positive) {
    if (absl::Status s = r.Int(key, field); !s.ok()) return s;
  }
  const std::pair<absl::string_view, int64_t*> non_negative[] = {
      {"n_shared_experts", &c.n_shared_experts},
      {"first_k_dense_replace", &c.first_k_dense_replace},
      {"num_nextn_predict_layers", &c.num_nextn_predict_layers},
      {"q_lora_rank", &c.q_lora_rank},  // null or 0: the q_proj path
  };
  for (const auto& [key, field] : non_negative) {
    if (absl::Status s = r.Int(key, field, IntRange::kNonNegative); !s.ok()) return s;
  }
  if (r.Present("q_lora_rank") && r.Find("q_lora_rank") == nullptr) c.q_lora_rank = 0;
  c.num_key_value_heads = c.num_attention_heads;  // HF: null or absent means H
  if (absl::Status s = r.Int("num_key_value_heads", &c.num_key_value_heads); !s.ok()) return s;
  if (c.model_type == "deepseek_v32") c.max_position_embeddings = 163840;
  if (absl::Status s = r.Int("max_position_embeddings", &c.max_position_embeddings,
                             IntRange::kPositive, kMaxPositions);
      !s.ok()) {
    return s;
  }
  return absl::OkStatus();
}

// bos/eos ids: an integer, null (no such token: -1) or, for eos, a list whose first id is used.
absl::Status ParseTokenId(const FieldReader& r, absl::string_view key, int64_t* out) {
  const Json* v = r.Find(key);
  if (v == nullptr) {
    if (r.Present(key)) *out = -1;
    return absl::OkStatus();
  }
  if (v->is_array()) {  // eos_token_id may list several ids; the first is the primary one
    if (v->empty() || !v->front().is_number_integer() || v->front().get<int64_t>() < 0 ||
        v->front().get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      return r.Error(key, "expected a non-empty list of non-negative integer token ids");
    }
    *out = v->front().get<int64_t>();
    return absl::OkStatus();
  }
  return r.Int(key, out, IntRange::kNonNegative, std::numeric_limits<int32_t>::max());
}

absl::Status ParseScalars(const FieldReader& r, ModelConfig& c) {
  if (absl::Status s = r.PositiveDouble("routed_scaling_factor", &c.routed_scaling_factor); !s.ok())
    return s;
  if (absl::Status s = r.PositiveDouble("rms_norm_eps", &c.rms_norm_eps); !s.ok()) return s;
  if (absl::Status s = r.PositiveDouble("rope_theta", &c.rope_theta); !s.ok()) return s;
  if (absl::Status s = r.Bool("norm_topk_prob", &c.norm_topk_prob); !s.ok()) return s;
  if (absl::Status s = r.Bool("tie_word_embeddings", &c.tie_word_embeddings); !s.ok()) return s;
  if (absl::Status s = r.Bool("rope_interleave", &c.rope_interleave); !s.ok()) return s;
  if (absl::Status s = r.Choice("hidden_act", &c.hidden_act, {"silu"}); !s.ok()) return s;
  if (absl::Status s = r.Choice("scoring_func", &c.scoring_func, {"sigmoid", "softmax"}); !s.ok())
    return s;
  if (absl::Status s =
          r.Choice("topk_method", &c.topk_method, {"noaux_tc", "greedy", "group_limited_greedy"});
      !s.ok()) {
    return s;
  }
  bool attention_bias = false;
  if (absl::Status s = r.Bool("attention_bias", &attention_bias); !s.ok()) return s;
  if (attention_bias) return r.Error("attention_bias", "true is not supported (no attention bias)");
  if (absl::Status s = ParseTokenId(r, "bos_token_id", &c.bos_token_id); !s.ok()) return s;
  return ParseTokenId(r, "eos_token_id", &c.eos_token_id);
}

// The YaRN parameters of a rope_scaling (or transformers-v5 rope_parameters) object. `prefix` is
// "rope_scaling." or "rope_parameters.". Types "default" and null mean plain RoPE.
absl::Status ParseRope(const Json& object, const std::string& source, const std::string& name,
                       ModelConfig& c) {
  FieldReader r(object, source, name + ".");
  if (name == "rope_parameters") {
    if (absl::Status s = r.PositiveDouble("rope_theta", &c.rope_theta); !s.ok()) return s;
  }
  std::string type;
  const char* type_key = r.Find("rope_type") != nullptr ? "rope_type" : "type";
  if (absl::Status s = r.String(type_key, &type); !s.ok()) return s;
  if (type.empty() || type == "default") return absl::OkStatus();
  if (type != "yarn") {
    return r.Error(type_key, absl::StrCat("unsupported rope scaling type '", type,
                                          "' (supported: yarn, default)"));
  }
  RopeScaling y;
  y.type = "yarn";
  if (r.Find("factor") == nullptr) return r.Error("factor", "missing (required for yarn)");
  if (absl::Status s = r.Double("factor", &y.factor); !s.ok()) return s;
  if (!(y.factor >= 1.0)) return r.Error("factor", absl::StrCat("must be >= 1, got ", y.factor));
  y.original_max_position_embeddings = c.max_position_embeddings;
  if (absl::Status s =
          r.Int("original_max_position_embeddings", &y.original_max_position_embeddings,
                IntRange::kPositive, kMaxPositions);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = r.PositiveDouble("beta_fast", &y.beta_fast); !s.ok()) return s;
  if (absl::Status s = r.PositiveDouble("beta_slow", &y.beta_slow); !s.ok()) return s;
  if (absl::Status s = r.Double("mscale", &y.mscale); !s.ok()) return s;
  if (absl::Status s = r.Double("mscale_all_dim", &y.mscale_all_dim); !s.ok()) return s;
  c.rope_scaling = y;
  return absl::OkStatus();
}

absl::Status ParseRopeFields(const FieldReader& r, ModelConfig& c) {
  for (const char* name : {"rope_scaling", "rope_parameters"}) {
    const Json* v = r.Find(name);
    if (v == nullptr) continue;
    if (!v->is_object()) {
      return r.Error(name, absl::StrCat("expected an object or null, got ", r.TypeName(*v)));
    }
    // rope_scaling wins when both are present; rope_parameters may still carry rope_theta.
    if (c.rope_scaling.has_value()) continue;
    if (absl::Status s = ParseRope(*v, r.source(), name, c); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status ParseQuantization(const FieldReader& r, ModelConfig& c) {
  const Json* v = r.Find("quantization_config");
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_object()) {
    return r.Error("quantization_config", absl::StrCat("expected an object, got ", r.TypeName(*v)));
  }
  FieldReader q(*v, r.source(), "quantization_config.");
  QuantizationConfig qc;
  if (q.Find("quant_method") == nullptr) return q.Error("quant_method", "missing");
  if (absl::Status s = q.Choice("quant_method", &qc.quant_method, {"fp8", "compressed-tensors"});
      !s.ok()) {
    return s;
  }
  if (qc.quant_method == "compressed-tensors") {  // integer weights: quantization_config.cc
    auto scheme = ParseCompressedTensorsConfig(*v, r.source());
    if (!scheme.ok()) return scheme.status();
    qc.compressed = *std::move(scheme);
    c.quantization = std::move(qc);
    return absl::OkStatus();
  }
  qc.fmt = "e4m3";
  if (absl::Status s = q.Choice("fmt", &qc.fmt, {"e4m3"}); !s.ok()) return s;
  std::string activation_scheme = "dynamic";
  if (absl::Status s = q.Choice("activation_scheme", &activation_scheme, {"dynamic"}); !s.ok())
    return s;
  std::string scale_fmt;
  if (q.Find("scale_fmt") != nullptr) {
    if (absl::Status s = q.Choice("scale_fmt", &scale_fmt, {"ue8m0"}); !s.ok()) return s;
    qc.scale_ue8m0 = true;
  }
  if (const Json* b = q.Find("weight_block_size"); b != nullptr) {
    if (!b->is_array() || b->size() != 2) {
      return q.Error("weight_block_size", "expected a list of two positive integers");
    }
    Json pair = {{"weight_block_size[0]", (*b)[0]}, {"weight_block_size[1]", (*b)[1]}};
    FieldReader br(pair, r.source(), "quantization_config.");
    if (absl::Status s = br.Int("weight_block_size[0]", &qc.block_out); !s.ok()) return s;
    if (absl::Status s = br.Int("weight_block_size[1]", &qc.block_in); !s.ok()) return s;
    if (br.Find("weight_block_size[0]") == nullptr || br.Find("weight_block_size[1]") == nullptr) {
      return q.Error("weight_block_size", "expected a list of two positive integers");
    }
  }
  c.quantization = qc;
  return absl::OkStatus();
}

// deepseek_v32 indexer fields: validated for type, unused by the V3 forward pass.
absl::Status ParseV32Fields(const FieldReader& r) {
  int64_t unused = 0;
  for (const char* key : {"index_n_heads", "index_head_dim", "index_topk"}) {
    if (absl::Status s = r.Int(key, &unused); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status CheckConsistency(const FieldReader& r, const ModelConfig& c) {
  if (c.n_routed_experts % c.n_group != 0) {
    return r.Error("n_group", absl::StrCat("n_routed_experts (", c.n_routed_experts,
                                           ") is not a multiple of n_group (", c.n_group, ")"));
  }
  if (c.topk_group > c.n_group) {
    return r.Error("topk_group",
                   absl::StrCat(c.topk_group, " is greater than n_group (", c.n_group, ")"));
  }
  const int64_t per_group = c.n_routed_experts / c.n_group;
  if (c.num_experts_per_tok > c.n_routed_experts) {
    return r.Error("num_experts_per_tok",
                   absl::StrCat(c.num_experts_per_tok, " is greater than n_routed_experts (",
                                c.n_routed_experts, ")"));
  }
  if (c.num_experts_per_tok > c.topk_group * per_group) {
    return r.Error(
        "num_experts_per_tok",
        absl::StrCat(c.num_experts_per_tok, " is greater than the ", c.topk_group * per_group,
                     " experts of the topk_group (", c.topk_group, ") kept groups"));
  }
  if (c.topk_method == "noaux_tc" && c.n_group > 1 && per_group < 2) {
    return r.Error("n_group", "noaux_tc scores a group by its top 2 experts: need >= 2 per group");
  }
  if (c.qk_rope_head_dim % 2 != 0) {
    return r.Error("qk_rope_head_dim",
                   absl::StrCat("must be even (RoPE rotates pairs), got ", c.qk_rope_head_dim));
  }
  if (c.first_k_dense_replace > c.num_hidden_layers) {
    return r.Error("first_k_dense_replace",
                   absl::StrCat(c.first_k_dense_replace, " is greater than num_hidden_layers (",
                                c.num_hidden_layers, ")"));
  }
  if (c.num_nextn_predict_layers > 64) {
    return r.Error("num_nextn_predict_layers", "too large (> 64)");
  }
  if (c.num_hidden_layers > 4096) return r.Error("num_hidden_layers", "too large (> 4096)");
  if (c.n_routed_experts > 65536) return r.Error("n_routed_experts", "too large (> 65536)");
  if (c.bos_token_id >= c.vocab_size) return r.Error("bos_token_id", "not below vocab_size");
  if (c.eos_token_id >= c.vocab_size) return r.Error("eos_token_id", "not below vocab_size");
  return absl::OkStatus();
}

}  // namespace

double ModelConfig::softmax_scale() const {
  double m = 1.0;
  if (rope_scaling.has_value() && rope_scaling->factor > 1.0 && rope_scaling->mscale_all_dim != 0) {
    m = 0.1 * rope_scaling->mscale_all_dim * std::log(rope_scaling->factor) + 1.0;
  }
  return m * m / std::sqrt(static_cast<double>(qk_head_dim()));
}

absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text,
                                             const std::string& source) {
  Json root;
  try {
    root = Json::parse(json_text);
  } catch (const Json::parse_error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": invalid JSON at byte ", e.byte, ": ", absl::CHexEscape(e.what())));
  } catch (const Json::exception& e) {  // e.g. a number out of double range
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": invalid JSON: ", absl::CHexEscape(e.what())));
  }
  if (!root.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": expected a JSON object, got a JSON ", root.type_name()));
  }
  FieldReader r(root, source, "");
  ModelConfig c;
  if (r.Find("model_type") == nullptr) return r.Error("model_type", "missing");
  if (absl::Status s = r.Choice("model_type", &c.model_type, {"deepseek_v3", "deepseek_v32"});
      !s.ok()) {
    return s;
  }
  if (absl::Status s = ParseSizes(r, c); !s.ok()) return s;
  if (absl::Status s = ParseScalars(r, c); !s.ok()) return s;
  if (absl::Status s = ParseRopeFields(r, c); !s.ok()) return s;
  if (absl::Status s = ParseQuantization(r, c); !s.ok()) return s;
  if (absl::Status s = ParseV32Fields(r); !s.ok()) return s;
  if (absl::Status s = CheckConsistency(r, c); !s.ok()) return s;
  return c;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir) {
  const std::string path = model_dir + "/config.json";
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read error"));
  return ParseModelConfig(text.str(), path);
}

}  // namespace r2::model
