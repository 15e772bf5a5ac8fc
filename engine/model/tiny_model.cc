#include "engine/model/tiny_model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/model/checkpoint.h"
#include "engine/model/config.h"
#include "engine/model/safetensors.h"
#include "kernels/numeric.h"
#include "nlohmann/json.hpp"

namespace r2::model {
namespace {

using OrderedJson = nlohmann::ordered_json;

// ---- deterministic sampling ------------------------------------------------------------------

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t StreamSeed(uint64_t seed, const std::string& name) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a of the tensor name
  for (unsigned char ch : name) h = (h ^ ch) * 0x100000001b3ull;
  uint64_t state = seed ^ h;
  return SplitMix64(state);
}

// Approximately normal samples: the centered sum of four uniform 24-bit integers (Irwin-Hall),
// scaled by one multiplication so that no rounding depends on the math library.
class NormalStream {
 public:
  NormalStream(uint64_t seed, const std::string& name, double mean, double std)
      : state_(StreamSeed(seed, name)), mean_(mean), scale_(kSqrt3 * std / kUnit) {}

  float Next() {
    int64_t sum = -2 * static_cast<int64_t>(kUnit);
    for (int i = 0; i < 4; ++i) sum += static_cast<int64_t>(SplitMix64(state_) >> 40);
    const double noise = static_cast<double>(sum) * scale_;
    const double value = mean_ + noise;  // separate statements: never contracted into an FMA
    return static_cast<float>(value);
  }

 private:
  static constexpr double kUnit = 16777216.0;              // 2^24
  static constexpr double kSqrt3 = 1.7320508075688772935;  // Irwin-Hall(4) of U(0,1) has var 1/3
  uint64_t state_;
  double mean_;
  double scale_;
};

// ---- the tensors to write --------------------------------------------------------------------

struct PlannedTensor {
  std::string name;
  std::vector<int64_t> shape;
  DType dtype;
  bool quantized = false;  // F8_E4M3: followed by its scale tensor in the same shard
  int64_t bytes = 0;       // of the tensor plus its scale
};

bool EndsWith(const std::string& s, absl::string_view suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix.data(), suffix.size()) == 0;
}

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

std::vector<PlannedTensor> PlanTensors(const ModelConfig& config, const TinyModelOptions& o) {
  std::vector<PlannedTensor> plan;
  for (const ExpectedTensor& t : ExpectedTensors(config)) {
    PlannedTensor p{t.name, t.shape, DType::kBF16};
    if (EndsWith(t.name, "e_score_correction_bias")) p.dtype = DType::kF32;
    // Spec 5.3: embeddings, norms, the router and the MTP eh_proj stay unquantized.
    p.quantized = o.format == TinyWeightFormat::kFp8Block && t.kind == TensorKind::kLinear &&
                  !EndsWith(t.name, "eh_proj.weight");
    if (p.quantized) p.dtype = DType::kF8E4M3;
    int64_t numel = 1;
    for (int64_t d : t.shape) numel *= d;
    p.bytes = numel * static_cast<int64_t>(DTypeSize(p.dtype));
    if (p.quantized) {
      p.bytes += CeilDiv(t.shape[0], o.fp8_block) * CeilDiv(t.shape[1], o.fp8_block) * 4;
    }
    plan.push_back(std::move(p));
  }
  return plan;
}

// Mean and standard deviation of a tensor's values, from its role.
std::pair<double, double> InitStats(const PlannedTensor& t, const ModelConfig& c) {
  if (t.name == "model.embed_tokens.weight") return {0.0, 1.0};
  if (t.name == "lm_head.weight") return {0.0, 3.0 / std::sqrt(static_cast<double>(c.hidden_size))};
  if (EndsWith(t.name, "e_score_correction_bias")) return {0.0, 0.05};
  if (t.shape.size() == 1) return {1.0, 0.05};  // norm weights
  return {0.0, 1.0 / std::sqrt(static_cast<double>(t.shape[1]))};
}

std::vector<float> Sample(const PlannedTensor& t, const ModelConfig& c, uint64_t seed) {
  int64_t numel = 1;
  for (int64_t d : t.shape) numel *= d;
  const auto [mean, std] = InitStats(t, c);
  NormalStream stream(seed, t.name, mean, std);
  std::vector<float> values(static_cast<size_t>(numel));
  for (float& v : values) v = stream.Next();
  return values;
}

std::vector<uint8_t> ToBF16Bytes(const std::vector<float>& values) {
  std::vector<uint8_t> bytes(values.size() * 2);
  for (size_t i = 0; i < values.size(); ++i) {
    const uint16_t b = FloatToBF16(values[i]);
    bytes[2 * i] = static_cast<uint8_t>(b);
    bytes[2 * i + 1] = static_cast<uint8_t>(b >> 8);
  }
  return bytes;
}

std::vector<uint8_t> ToF32Bytes(const std::vector<float>& values) {
  std::vector<uint8_t> bytes(values.size() * 4);
  std::memcpy(bytes.data(), values.data(), bytes.size());  // little-endian hosts only
  return bytes;
}

// Block quantization: per block scale = amax / 448, fp8 = e4m3(w / scale); scale_inv = scale.
void QuantizeFp8(const std::vector<float>& w, int64_t rows, int64_t cols, int64_t block,
                 std::vector<uint8_t>* fp8, std::vector<float>* scales) {
  const int64_t brows = CeilDiv(rows, block), bcols = CeilDiv(cols, block);
  fp8->assign(w.size(), 0);
  scales->assign(static_cast<size_t>(brows * bcols), 1.0f);
  for (int64_t bi = 0; bi < brows; ++bi) {
    for (int64_t bj = 0; bj < bcols; ++bj) {
      const int64_t r1 = std::min(rows, (bi + 1) * block), c1 = std::min(cols, (bj + 1) * block);
      float amax = 0.0f;
      for (int64_t r = bi * block; r < r1; ++r) {
        for (int64_t c = bj * block; c < c1; ++c) amax = std::max(amax, std::fabs(w[r * cols + c]));
      }
      const float scale = amax > 0.0f ? amax / 448.0f : 1.0f;
      (*scales)[bi * bcols + bj] = scale;
      for (int64_t r = bi * block; r < r1; ++r) {
        for (int64_t c = bj * block; c < c1; ++c) {
          (*fp8)[r * cols + c] = FloatToFp8E4M3(w[r * cols + c] / scale);
        }
      }
    }
  }
}

void AddTensor(const PlannedTensor& t, const ModelConfig& c, const TinyModelOptions& o,
               SafetensorsWriter& writer) {
  std::vector<float> values = Sample(t, c, o.seed);
  if (t.dtype == DType::kF32) {
    writer.Add(t.name, t.dtype, t.shape, ToF32Bytes(values));
  } else if (!t.quantized) {
    writer.Add(t.name, t.dtype, t.shape, ToBF16Bytes(values));
  } else {
    std::vector<uint8_t> fp8;
    std::vector<float> scales;
    QuantizeFp8(values, t.shape[0], t.shape[1], o.fp8_block, &fp8, &scales);
    writer.Add(t.name, DType::kF8E4M3, t.shape, std::move(fp8));
    writer.Add(t.name + "_scale_inv", DType::kF32,
               {CeilDiv(t.shape[0], o.fp8_block), CeilDiv(t.shape[1], o.fp8_block)},
               ToF32Bytes(scales));
  }
}

// ---- files -----------------------------------------------------------------------------------

absl::Status WriteText(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) {
      return absl::PermissionDeniedError(
          absl::StrCat(path, ": cannot create: ", std::strerror(errno)));
    }
    out << text;
    out.close();
    if (!out) return absl::DataLossError(absl::StrCat(path, ": write failed"));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::DataLossError(absl::StrCat(path, ": rename failed: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

std::string ShardName(int k, int n) {
  return absl::StrFormat("model-%05d-of-%05d.safetensors", k + 1, n);
}

// Cuts the plan into `shards` runs of about equal bytes; returns each tensor's shard.
std::vector<int> AssignShards(const std::vector<PlannedTensor>& plan, int shards) {
  int64_t total = 0;
  for (const PlannedTensor& t : plan) total += t.bytes;
  std::vector<int> shard_of(plan.size(), 0);
  int64_t before = 0;
  const int n = static_cast<int>(plan.size());
  for (int i = 0; i < n; ++i) {
    // The shard whose byte range holds this tensor's midpoint; never more shards than tensors left.
    int k = static_cast<int>(((before + plan[i].bytes / 2) * shards) / std::max<int64_t>(total, 1));
    k = std::min(k, shards - 1);
    k = std::max(k, shards - (n - i));
    if (i > 0) k = std::max(k, shard_of[i - 1]);
    shard_of[i] = k;
    before += plan[i].bytes;
  }
  return shard_of;
}

absl::Status WriteShards(const std::vector<PlannedTensor>& plan, const ModelConfig& c,
                         const TinyModelOptions& o, const std::string& dir) {
  const std::vector<int> shard_of = AssignShards(plan, o.shards);
  OrderedJson weight_map = OrderedJson::object();
  for (size_t i = 0; i < plan.size(); ++i) {
    const int k = shard_of[i];
    const std::string file = o.shards == 1 ? "model.safetensors" : ShardName(k, o.shards);
    weight_map[plan[i].name] = file;
    if (plan[i].quantized) weight_map[plan[i].name + "_scale_inv"] = file;
  }
  // Shards are independent (each tensor draws from its own stream): sample and write them in
  // parallel, which is what makes the multi-gigabyte benchmark presets quick to write.
  std::vector<absl::Status> status(o.shards);
  std::vector<uint64_t> sizes(o.shards, 0);
#pragma omp parallel for schedule(dynamic, 1) if (o.shards > 1)
  for (int k = 0; k < o.shards; ++k) {
    SafetensorsWriter writer;
    writer.SetMetadata("format", "pt");
    const std::string file = o.shards == 1 ? "model.safetensors" : ShardName(k, o.shards);
    for (size_t i = 0; i < plan.size(); ++i) {
      if (shard_of[i] == k) AddTensor(plan[i], c, o, writer);
    }
    sizes[k] = writer.data_size();
    status[k] = writer.Write(dir + "/" + file);
  }
  uint64_t total_size = 0;
  for (int k = 0; k < o.shards; ++k) {
    if (!status[k].ok()) return status[k];
    total_size += sizes[k];
  }
  if (o.shards == 1) return absl::OkStatus();
  OrderedJson index = {{"metadata", {{"total_size", total_size}}}, {"weight_map", weight_map}};
  return WriteText(dir + "/model.safetensors.index.json", index.dump(2) + "\n");
}

absl::Status CheckOptions(const TinyModelOptions& o) {
  if (o.shards < 1 || o.shards > 1000) {
    return absl::InvalidArgumentError(absl::StrCat("shards must be 1..1000, got ", o.shards));
  }
  if (o.format == TinyWeightFormat::kFp8Block && (o.fp8_block < 1 || o.fp8_block > 4096)) {
    return absl::InvalidArgumentError(absl::StrCat("fp8 block must be 1..4096, got ", o.fp8_block));
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> ValidatedConfig(const TinyModelOptions& o) {
  if (absl::Status s = CheckOptions(o); !s.ok()) return s;
  return ParseModelConfig(TinyModelConfigJson(o), "make-tiny-model options (config.json)");
}

}  // namespace

std::string TinyModelConfigJson(const TinyModelOptions& o) {
  OrderedJson j;
  j["architectures"] = {"DeepseekV3ForCausalLM"};
  j["model_type"] = "deepseek_v3";
  const std::pair<const char*, int64_t> sizes[] = {
      {"vocab_size", o.vocab_size},
      {"hidden_size", o.hidden_size},
      {"intermediate_size", o.intermediate_size},
      {"moe_intermediate_size", o.moe_intermediate_size},
      {"num_hidden_layers", o.num_hidden_layers},
      {"num_nextn_predict_layers", o.num_nextn_predict_layers},
      {"first_k_dense_replace", o.first_k_dense_replace},
      {"moe_layer_freq", 1},
      {"num_attention_heads", o.num_attention_heads},
      {"num_key_value_heads", o.num_attention_heads},
  };
  for (const auto& [key, value] : sizes) j[key] = value;
  j["q_lora_rank"] = o.q_lora_rank > 0 ? OrderedJson(o.q_lora_rank) : OrderedJson(nullptr);
  const std::pair<const char*, int64_t> more[] = {
      {"kv_lora_rank", o.kv_lora_rank},
      {"qk_nope_head_dim", o.qk_nope_head_dim},
      {"qk_rope_head_dim", o.qk_rope_head_dim},
      {"v_head_dim", o.v_head_dim},
      {"n_routed_experts", o.n_routed_experts},
      {"n_group", o.n_group},
      {"topk_group", o.topk_group},
      {"num_experts_per_tok", o.num_experts_per_tok},
      {"n_shared_experts", o.n_shared_experts},
  };
  for (const auto& [key, value] : more) j[key] = value;
  j["routed_scaling_factor"] = o.routed_scaling_factor;
  j["norm_topk_prob"] = true;
  j["scoring_func"] = "sigmoid";
  j["topk_method"] = "noaux_tc";
  j["hidden_act"] = "silu";
  j["rms_norm_eps"] = 1e-6;
  j["rope_theta"] = 10000.0;
  j["max_position_embeddings"] = o.max_position_embeddings;
  j["rope_scaling"] = nullptr;
  if (o.yarn) {
    j["rope_scaling"] = {
        {"type", "yarn"},
        {"factor", o.yarn_factor},
        {"original_max_position_embeddings", o.yarn_original_max_position_embeddings},
        {"beta_fast", 32.0},
        {"beta_slow", 1.0},
        {"mscale", 1.0},
        {"mscale_all_dim", 1.0}};
  }
  j["attention_bias"] = false;
  j["tie_word_embeddings"] = false;
  j["bos_token_id"] = 0;
  j["eos_token_id"] = 1;
  j["initializer_range"] = 0.02;
  j["use_cache"] = true;
  j["torch_dtype"] = "bfloat16";
  if (o.format == TinyWeightFormat::kFp8Block) {
    j["quantization_config"] = {{"activation_scheme", "dynamic"},
                                {"fmt", "e4m3"},
                                {"quant_method", "fp8"},
                                {"weight_block_size", {o.fp8_block, o.fp8_block}}};
  }
  return j.dump(2) + "\n";
}

absl::StatusOr<int64_t> TinyModelParameterCount(const TinyModelOptions& options) {
  absl::StatusOr<ModelConfig> config = ValidatedConfig(options);
  if (!config.ok()) return config.status();
  int64_t total = 0;
  for (const ExpectedTensor& t : ExpectedTensors(*config)) {
    int64_t numel = 1;
    for (int64_t d : t.shape) numel *= d;
    total += numel;
  }
  return total;
}

absl::Status WriteTinyModel(const TinyModelOptions& options, const std::string& dir) {
  absl::StatusOr<ModelConfig> config = ValidatedConfig(options);
  if (!config.ok()) return config.status();
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec || !std::filesystem::is_directory(dir)) {
    return absl::PermissionDeniedError(
        absl::StrCat(dir, ": cannot create directory: ", ec ? ec.message() : "not a directory"));
  }
  if (absl::Status s = WriteText(dir + "/config.json", TinyModelConfigJson(options)); !s.ok()) {
    return s;
  }
  const std::vector<PlannedTensor> plan = PlanTensors(*config, options);
  if (absl::Status s = WriteShards(plan, *config, options, dir); !s.ok()) return s;
  OrderedJson generation = {{"_from_model_config", true}, {"bos_token_id", 0},  {"eos_token_id", 1},
                            {"do_sample", true},          {"temperature", 1.0}, {"top_p", 0.95}};
  if (absl::Status s = WriteText(dir + "/generation_config.json", generation.dump(2) + "\n");
      !s.ok()) {
    return s;
  }
  if (options.write_tokenizer) return options.write_tokenizer(dir, options);
  return absl::OkStatus();
}

// ---- presets ---------------------------------------------------------------------------------

std::vector<std::string> TinyModelPresetNames() {
  return {"tiny", "tiny-noqlora", "tiny-fp8", "small", "bench-2b"};
}

absl::StatusOr<TinyModelOptions> TinyModelPreset(absl::string_view name) {
  TinyModelOptions o;  // the defaults are spec 8.1's tiny config
  if (name == "tiny") return o;
  if (name == "tiny-noqlora") {
    o.q_lora_rank = 0;
    o.yarn = false;
    o.shards = 2;
    return o;
  }
  if (name == "tiny-fp8") {
    o.format = TinyWeightFormat::kFp8Block;
    o.hidden_size = 192;
    o.intermediate_size = 320;
    o.moe_intermediate_size = 96;
    o.kv_lora_rank = 64;
    o.q_lora_rank = 96;
    o.n_routed_experts = 16;
    o.n_group = 4;
    o.topk_group = 2;
    o.num_experts_per_tok = 4;
    return o;
  }
  if (name == "small") {
    o.vocab_size = 32768;
    o.hidden_size = 1024;
    o.intermediate_size = 2816;
    o.moe_intermediate_size = 128;
    o.num_hidden_layers = 12;
    o.num_attention_heads = 16;
    o.q_lora_rank = 384;
    o.kv_lora_rank = 256;
    o.qk_nope_head_dim = 64;
    o.qk_rope_head_dim = 32;
    o.v_head_dim = 64;
    o.n_routed_experts = 64;
    o.n_group = 8;
    o.topk_group = 4;
    o.num_experts_per_tok = 6;
    o.max_position_embeddings = 4096;
    o.yarn_original_max_position_embeddings = 1024;
    o.shards = 4;
    return o;
  }
  if (name == "bench-2b") {
    // DeepSeek-V3's proportions at hidden 2048: expert width / hidden ~ 0.25 (V3: 2048 / 7168),
    // the real vocabulary (so the head weighs what it does in V3), MLA at V3's head dims.
    o.vocab_size = 129280;
    o.hidden_size = 2048;
    o.intermediate_size = 5632;
    o.moe_intermediate_size = 512;
    o.num_hidden_layers = 10;
    o.num_nextn_predict_layers = 0;
    o.num_attention_heads = 16;
    o.q_lora_rank = 768;
    o.kv_lora_rank = 512;
    o.qk_nope_head_dim = 128;
    o.qk_rope_head_dim = 64;
    o.v_head_dim = 128;
    o.n_routed_experts = 64;
    o.n_group = 8;
    o.topk_group = 4;
    o.num_experts_per_tok = 6;
    o.n_shared_experts = 2;
    o.max_position_embeddings = 4096;
    o.yarn_original_max_position_embeddings = 1024;
    o.shards = 8;
    return o;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown preset '", name, "' (tiny, tiny-noqlora, tiny-fp8, small, bench-2b)"));
}

}  // namespace r2::model
