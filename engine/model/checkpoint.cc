#include "engine/model/checkpoint.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "engine/model/quantization.h"
#include "nlohmann/json.hpp"

namespace r2::model {
namespace {

using Json = nlohmann::json;

constexpr char kSingleFile[] = "model.safetensors";
constexpr char kIndexFile[] = "model.safetensors.index.json";

void AddLinear(std::vector<ExpectedTensor>& out, const std::string& name, int64_t rows,
               int64_t cols) {
  out.push_back({name + ".weight", {rows, cols}, TensorKind::kLinear});
}

void AddVector(std::vector<ExpectedTensor>& out, const std::string& name, int64_t size) {
  out.push_back({name, {size}, TensorKind::kVector});
}

void AddAttention(const ModelConfig& c, const std::string& p, std::vector<ExpectedTensor>& out) {
  const int64_t d = c.hidden_size;
  const int64_t h = c.num_attention_heads;
  if (c.has_q_lora()) {
    AddLinear(out, p + "self_attn.q_a_proj", c.q_lora_rank, d);
    AddVector(out, p + "self_attn.q_a_layernorm.weight", c.q_lora_rank);
    AddLinear(out, p + "self_attn.q_b_proj", h * c.qk_head_dim(), c.q_lora_rank);
  } else {
    AddLinear(out, p + "self_attn.q_proj", h * c.qk_head_dim(), d);
  }
  AddLinear(out, p + "self_attn.kv_a_proj_with_mqa", c.kv_lora_rank + c.qk_rope_head_dim, d);
  AddVector(out, p + "self_attn.kv_a_layernorm.weight", c.kv_lora_rank);
  AddLinear(out, p + "self_attn.kv_b_proj", h * (c.qk_nope_head_dim + c.v_head_dim),
            c.kv_lora_rank);
  AddLinear(out, p + "self_attn.o_proj", d, h * c.v_head_dim);
}

void AddSwiGlu(const std::string& p, int64_t d, int64_t width, std::vector<ExpectedTensor>& out) {
  AddLinear(out, p + "gate_proj", width, d);
  AddLinear(out, p + "up_proj", width, d);
  AddLinear(out, p + "down_proj", d, width);
}

void AddMoe(const ModelConfig& c, const std::string& p, std::vector<ExpectedTensor>& out) {
  const int64_t d = c.hidden_size;
  // The router is never quantized: a plain [E, D] matrix.
  out.push_back({p + "mlp.gate.weight", {c.n_routed_experts, d}, TensorKind::kTable});
  if (c.topk_method == "noaux_tc") {
    AddVector(out, p + "mlp.gate.e_score_correction_bias", c.n_routed_experts);
  }
  for (int64_t e = 0; e < c.n_routed_experts; ++e) {
    AddSwiGlu(absl::StrCat(p, "mlp.experts.", e, "."), d, c.moe_intermediate_size, out);
  }
  if (c.n_shared_experts > 0) {
    AddSwiGlu(p + "mlp.shared_experts.", d, c.moe_intermediate_size * c.n_shared_experts, out);
  }
}

std::string ScaleName(const std::string& weight_name) {
  return weight_name + "_scale_inv";  // "X.weight" -> "X.weight_scale_inv"
}

// Shard names from an index must stay inside the checkpoint directory.
bool SafeRelativePath(const std::string& path) {
  if (path.empty() || path.front() == '/' || path.find('\\') != std::string::npos ||
      path.find('\0') != std::string::npos) {
    return false;
  }
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part.empty() || part == "." || part == "..") return false;
  }
  return true;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

bool AllowedPlainDType(DType dtype) {
  return dtype == DType::kBF16 || dtype == DType::kF16 || dtype == DType::kF32;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

namespace {

// The global tensors (embedding, final norm, lm_head).
void AddGlobals(const ModelConfig& c, std::vector<ExpectedTensor>& out) {
  const int64_t d = c.hidden_size;
  out.push_back({"model.embed_tokens.weight", {c.vocab_size, d}, TensorKind::kTable});
  AddVector(out, "model.norm.weight", d);
  if (!c.tie_word_embeddings) {
    out.push_back({"lm_head.weight", {c.vocab_size, d}, TensorKind::kTable});
  }
}

// The tensors of layer l (an MTP module when l >= num_hidden_layers).
void AddLayer(const ModelConfig& c, int64_t l, std::vector<ExpectedTensor>& out) {
  const int64_t d = c.hidden_size;
  const std::string p = absl::StrCat("model.layers.", l, ".");
  if (l >= c.num_hidden_layers) {  // MTP module: its own norms and projection, then a block
    AddVector(out, p + "enorm.weight", d);
    AddVector(out, p + "hnorm.weight", d);
    AddLinear(out, p + "eh_proj", d, 2 * d);
    AddVector(out, p + "shared_head.norm.weight", d);
  }
  AddVector(out, p + "input_layernorm.weight", d);
  AddAttention(c, p, out);
  AddVector(out, p + "post_attention_layernorm.weight", d);
  if (c.is_moe_layer(l)) {
    AddMoe(c, p, out);
  } else {
    AddSwiGlu(p + "mlp.", d, c.intermediate_size, out);
  }
}

}  // namespace

std::vector<ExpectedTensor> ExpectedTensors(const ModelConfig& c) {
  std::vector<ExpectedTensor> out;
  AddGlobals(c, out);
  for (int64_t l = 0; l < c.num_hidden_layers + c.num_nextn_predict_layers; ++l) {
    AddLayer(c, l, out);
  }
  return out;
}

// ---- opening ---------------------------------------------------------------------------------

namespace {

struct Loaded {
  std::vector<std::unique_ptr<SafetensorsFile>> files;
  std::map<std::string, const SafetensorsFile*> where;
};

absl::Status LoadSingle(const std::string& dir, Loaded& loaded) {
  auto file = SafetensorsFile::Open(dir + "/" + kSingleFile);
  if (!file.ok()) return file.status();
  for (const auto& [name, entry] : (*file)->entries()) loaded.where[name] = file->get();
  loaded.files.push_back(*std::move(file));
  return absl::OkStatus();
}

absl::StatusOr<std::map<std::string, std::string>> ParseIndex(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return text.status();
  Json root;
  try {
    root = Json::parse(*text);
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": invalid JSON: ", absl::CHexEscape(e.what())));
  }
  auto map_it = root.is_object() ? root.find("weight_map") : root.end();
  if (map_it == root.end() || !map_it->is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": field 'weight_map': missing or not an object"));
  }
  std::map<std::string, std::string> weight_map;
  for (auto it = map_it->begin(); it != map_it->end(); ++it) {
    if (!it.value().is_string() || !SafeRelativePath(it.value().get<std::string>())) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": field 'weight_map': tensor '", it.key(), "' names shard ", it.value().dump(),
          ", not a relative file name inside the checkpoint directory"));
    }
    weight_map[it.key()] = it.value().get<std::string>();
  }
  return weight_map;
}

absl::Status LoadSharded(const std::string& dir, Loaded& loaded) {
  const std::string index_path = dir + "/" + kIndexFile;
  auto weight_map = ParseIndex(index_path);
  if (!weight_map.ok()) return weight_map.status();
  std::map<std::string, const SafetensorsFile*> shards;  // each shard opened once
  for (const auto& [name, shard] : *weight_map) {
    auto it = shards.find(shard);
    if (it == shards.end()) {
      auto file = SafetensorsFile::Open(dir + "/" + shard);
      if (!file.ok()) {
        return absl::Status(file.status().code(),
                            absl::StrCat(index_path, ": shard '", shard, "' (listed for tensor '",
                                         name, "'): ", file.status().message()));
      }
      it = shards.emplace(shard, file->get()).first;
      loaded.files.push_back(*std::move(file));
    }
    if (!it->second->Has(name)) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": tensor '", name,
                                                     "' is listed in shard '", shard,
                                                     "' but that file does not contain it"));
    }
    loaded.where[name] = it->second;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& dir) {
  absl::StatusOr<ModelConfig> config = LoadModelConfig(dir);
  if (!config.ok()) return config.status();
  Loaded loaded;
  std::error_code ec;
  absl::Status status;
  std::string listing;
  if (std::filesystem::exists(dir + "/" + kIndexFile, ec)) {
    listing = dir + "/" + kIndexFile;
    status = LoadSharded(dir, loaded);
  } else if (std::filesystem::exists(dir + "/" + kSingleFile, ec)) {
    listing = dir + "/" + kSingleFile;
    status = LoadSingle(dir, loaded);
  } else {
    status = absl::NotFoundError(
        absl::StrCat(dir, ": neither ", kSingleFile, " nor ", kIndexFile, " found"));
  }
  if (!status.ok()) return status;
  std::unique_ptr<Checkpoint> ckpt(new Checkpoint());
  ckpt->dir_ = dir;
  ckpt->config_ = *std::move(config);
  ckpt->files_ = std::move(loaded.files);
  ckpt->where_ = std::move(loaded.where);
  ckpt->listing_ = std::move(listing);
  if (absl::Status s = ckpt->Validate(); !s.ok()) return s;
  return ckpt;
}

std::string Checkpoint::ExpectedFile(const std::string& name) const {
  auto it = where_.find(name);
  return it != where_.end() ? it->second->path() : listing_;
}

absl::Status Checkpoint::Validate() const {
  // Layer by layer, so that a config promising far more tensors than the files hold fails at the
  // first missing one without listing them all.
  std::vector<ExpectedTensor> expected;
  AddGlobals(config_, expected);
  for (int64_t l = -1; l < config_.num_hidden_layers + config_.num_nextn_predict_layers; ++l) {
    if (l >= 0) {
      expected.clear();
      AddLayer(config_, l, expected);
    }
    for (const ExpectedTensor& t : expected) {
      if (absl::Status s = ValidateTensor(t); !s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

absl::Status Checkpoint::ValidateTensor(const ExpectedTensor& expected) const {
  const std::string& name = expected.name;
  if (expected.kind != TensorKind::kVector && name != "model.embed_tokens.weight" &&
      StoredAsIntegerWeight(*this, name)) {  // int8 / int4: quantization.cc
    return ValidateIntegerLinear(*this, name, expected.shape);
  }
  auto view = Tensor(name);
  if (!view.ok()) {
    return absl::NotFoundError(absl::StrCat(ExpectedFile(name), ": tensor '", name,
                                            "' is missing (expected shape ",
                                            ShapeString(expected.shape), ")"));
  }
  const std::string file = ExpectedFile(name);
  if (view->shape != expected.shape) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": tensor '", name, "' has shape ",
                                                   ShapeString(view->shape), ", expected ",
                                                   ShapeString(expected.shape)));
  }
  if (AllowedPlainDType(view->dtype)) return absl::OkStatus();
  if (expected.kind != TensorKind::kLinear || view->dtype != DType::kF8E4M3) {
    return absl::InvalidArgumentError(absl::StrCat(
        file, ": tensor '", name, "' has dtype ", DTypeToSafetensors(view->dtype), ", expected ",
        expected.kind == TensorKind::kLinear ? "BF16, F16, F32 or F8_E4M3" : "BF16, F16 or F32"));
  }
  return ValidateScale(name, *view);
}

absl::Status Checkpoint::ValidateScale(const std::string& name, const TensorView& weight) const {
  const std::string scale_name = ScaleName(name);
  auto scale = Tensor(scale_name);
  if (!scale.ok()) {
    return absl::NotFoundError(absl::StrCat(ExpectedFile(scale_name), ": tensor '", scale_name,
                                            "' is missing (F8_E4M3 weight '", name,
                                            "' needs its block scales)"));
  }
  const auto [block_out, block_in] = BlockSize();
  const std::vector<int64_t> expected = {CeilDiv(weight.shape[0], block_out),
                                         CeilDiv(weight.shape[1], block_in)};
  const std::string file = ExpectedFile(scale_name);
  if (scale->dtype != DType::kF32) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": tensor '", scale_name, "' has dtype ",
                                                   DTypeToSafetensors(scale->dtype),
                                                   ", expected F32"));
  }
  if (scale->shape != expected) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": tensor '", scale_name, "' has shape ", ShapeString(scale->shape),
                     ", expected ", ShapeString(expected), " for blocks of ", block_out, "x",
                     block_in, " over ", ShapeString(weight.shape)));
  }
  return absl::OkStatus();
}

std::pair<int64_t, int64_t> Checkpoint::BlockSize() const {
  if (config_.quantization.has_value()) {
    return {config_.quantization->block_out, config_.quantization->block_in};
  }
  return {128, 128};
}

bool Checkpoint::Has(const std::string& name) const { return where_.count(name) != 0; }

absl::StatusOr<TensorView> Checkpoint::Tensor(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) {
    return absl::NotFoundError(absl::StrCat(dir_, ": no tensor '", name, "' in the checkpoint"));
  }
  return it->second->Get(name);
}

absl::StatusOr<WeightView> Checkpoint::Linear(const std::string& name) const {
  if (StoredAsIntegerWeight(*this, name)) return BindIntegerLinear(*this, name);
  auto weight = Tensor(name);
  if (!weight.ok()) return weight.status();
  if (weight->shape.size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat(ExpectedFile(name), ": tensor '", name,
                                                   "' is not a matrix: shape ",
                                                   ShapeString(weight->shape)));
  }
  WeightView view;
  view.weight = *std::move(weight);
  if (view.weight.dtype != DType::kF8E4M3) return view;
  if (absl::Status s = ValidateScale(name, view.weight); !s.ok()) return s;
  auto scale = Tensor(ScaleName(name));
  if (!scale.ok()) return scale.status();
  view.scale_inv = *std::move(scale);
  std::tie(view.block_out, view.block_in) = BlockSize();
  return view;
}

}  // namespace r2::model
