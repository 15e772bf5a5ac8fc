// Engine::Create: loads the model, tokenizer and generation config, sizes the KV pool and starts a
// ThreadedEngine (threaded_engine.h). The step itself lives in engine_core.cc.
#include "engine/engine.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/cache/block_pool.h"
#include "engine/engine_core.h"
#include "engine/model/deepseek_model.h"
#include "engine/model_runner.h"
#include "engine/threaded_engine.h"
#include "engine/tokenizer/tokenizer.h"
#include "kernels/backend.h"
#include "nlohmann/json.hpp"

namespace r2::engine {
namespace {

absl::Status CheckEngineConfig(const EngineConfig& config) {
  auto positive = [](const char* field, int64_t value) -> absl::Status {
    if (value >= 1) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrFormat("%s must be >= 1, got %d", field, value));
  };
  for (const auto& [field, value] :
       {std::pair<const char*, int64_t>{"max_num_seqs", config.max_num_seqs},
        {"max_num_batched_tokens", config.max_num_batched_tokens},
        {"block_size", config.block_size},
        {"max_queued_requests", config.max_queued_requests}}) {
    if (absl::Status s = positive(field, value); !s.ok()) return s;
  }
  if (config.kv_cache_memory_bytes < 0) {
    return absl::InvalidArgumentError("kv_cache_memory_bytes must be >= 0 (0 = automatic)");
  }
  if (!(config.gpu_memory_utilization > 0 && config.gpu_memory_utilization <= 1)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "gpu_memory_utilization must be in (0, 1], got %g", config.gpu_memory_utilization));
  }
  if (config.max_model_len < 0) {
    return absl::InvalidArgumentError("max_model_len must be >= 0 (0 = the model's)");
  }
  return ParseKvCacheDType(config.kv_cache_dtype).status();
}

// The KV cache format: "auto" is float32 on every backend (today's exact path). The CUDA
// backend has bf16/fp8 cache kernels (kernels/cuda/kv_cache.cu, mla_decode_mma.cuh) that have
// not yet run on a GPU (tests/gpu/device_check.sh checks them against the CPU): until they have,
// serving refuses those formats on CUDA here, from the name alone, before the device is touched.
absl::StatusOr<KvCacheDType> ResolveKvCacheDType(const EngineConfig& config) {
  absl::StatusOr<std::optional<KvCacheDType>> parsed = ParseKvCacheDType(config.kv_cache_dtype);
  if (!parsed.ok()) return parsed.status();
  const KvCacheDType dtype = parsed->value_or(KvCacheDType::kFloat32);
  if (absl::StartsWith(config.device, "cuda") && dtype != KvCacheDType::kFloat32) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--kv-cache-dtype ", KvCacheDTypeName(dtype), " is not supported on device '",
        config.device,
        "' yet (its bf16/fp8 cache kernels await their first check on a GPU; use auto or "
        "float32)"));
  }
  return dtype;
}

// kv_cache_memory_bytes 0 becomes 1 GiB on a host-memory backend, else the configured fraction
// of the device memory free now (after the weights are loaded).
absl::Status ResolveKvCacheMemory(Backend& backend, EngineConfig& config) {
  if (config.kv_cache_memory_bytes != 0) return absl::OkStatus();
  if (backend.host_memory()) {
    config.kv_cache_memory_bytes = int64_t{1} << 30;
    return absl::OkStatus();
  }
  absl::StatusOr<MemoryInfo> memory = backend.QueryMemory();
  if (!memory.ok()) return memory.status();
  config.kv_cache_memory_bytes =
      static_cast<int64_t>(static_cast<double>(memory->free_bytes) * config.gpu_memory_utilization);
  if (config.kv_cache_memory_bytes <= 0) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "no %s memory left for the KV cache after loading the weights (%d bytes free)",
        std::string(backend.name()), memory->free_bytes));
  }
  return absl::OkStatus();
}

// max_model_len 0 becomes the model's max_position_embeddings; more than that is refused.
absl::Status ResolveMaxModelLen(const model::ModelConfig& model_config, EngineConfig& config) {
  const int64_t limit = model_config.max_position_embeddings;
  if (config.max_model_len == 0) {
    config.max_model_len = static_cast<int32_t>(std::min<int64_t>(limit, INT32_MAX));
  }
  if (config.max_model_len > limit || config.max_model_len < 2) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "max_model_len (%d) must be in [2, %d] (the model's max_position_embeddings)",
        config.max_model_len, limit));
  }
  return absl::OkStatus();
}

absl::Status AddEosId(const nlohmann::json& value, int64_t vocab_size, const std::string& source,
                      std::vector<int32_t>* ids) {
  if (!value.is_number_integer() || value.get<int64_t>() < 0 ||
      value.get<int64_t>() >= vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": eos_token_id must be a token id in [0, ", vocab_size, "), got ", value.dump()));
  }
  const int32_t id = value.get<int32_t>();
  if (std::find(ids->begin(), ids->end(), id) == ids->end()) ids->push_back(id);
  return absl::OkStatus();
}

// The model's EOS ids: config.json's eos_token_id, plus generation_config.json's (an integer or a
// list) when that file exists.
absl::StatusOr<std::vector<int32_t>> LoadEosTokenIds(const std::string& dir,
                                                     const model::ModelConfig& model_config) {
  std::vector<int32_t> ids;
  if (model_config.eos_token_id >= 0)
    ids.push_back(static_cast<int32_t>(model_config.eos_token_id));
  const std::string path = dir + "/generation_config.json";
  std::ifstream file(path);
  if (!file) return ids;
  std::stringstream text;
  text << file.rdbuf();
  nlohmann::json json = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  }
  auto it = json.find("eos_token_id");
  if (it == json.end() || it->is_null()) return ids;
  const std::vector<nlohmann::json> values =
      it->is_array() ? it->get<std::vector<nlohmann::json>>() : std::vector<nlohmann::json>{*it};
  for (const nlohmann::json& value : values) {
    if (absl::Status s = AddEosId(value, model_config.vocab_size, path, &ids); !s.ok()) return s;
  }
  return ids;
}

// The tokenizer when the model directory has tokenizer.json (tokenizer_config.json beside it is
// read too), else nullptr.
absl::StatusOr<std::unique_ptr<tokenizer::Tokenizer>> LoadTokenizerIfPresent(
    const std::string& dir) {
  const std::string path = dir + "/tokenizer.json";
  std::error_code error;
  if (!std::filesystem::exists(path, error)) return std::unique_ptr<tokenizer::Tokenizer>();
  return tokenizer::Tokenizer::FromFile(path);
}

}  // namespace

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kAbort:
      return "abort";
    case FinishReason::kError:
      return "error";
    case FinishReason::kNone:
      break;
  }
  return "";
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const EngineConfig& requested) {
  EngineConfig config = requested;
  if (absl::Status s = CheckEngineConfig(config); !s.ok()) return s;
  absl::StatusOr<KvCacheDType> kv_dtype = ResolveKvCacheDType(config);
  if (!kv_dtype.ok()) return kv_dtype.status();
  absl::StatusOr<std::unique_ptr<Backend>> made = MakeBackend(config.device);
  if (!made.ok()) return made.status();
  std::unique_ptr<Backend> backend = *std::move(made);
  if (!backend->SupportsKvCacheDType(*kv_dtype)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--kv-cache-dtype ", KvCacheDTypeName(*kv_dtype), " is not supported by the ",
                     std::string(backend->name()), " backend (use auto or float32)"));
  }
  absl::StatusOr<std::unique_ptr<model::DeepseekModel>> model =
      model::DeepseekModel::Load(config.model_dir, backend.get());
  if (!model.ok()) return model.status();
  if (absl::Status s = ResolveKvCacheMemory(*backend, config); !s.ok()) return s;
  const model::ModelConfig model_config = (*model)->config();
  if (absl::Status s = ResolveMaxModelLen(model_config, config); !s.ok()) return s;
  absl::StatusOr<int32_t> num_blocks = cache::NumBlocksForBudget(
      config.kv_cache_memory_bytes, KvBytesPerToken(model_config, *kv_dtype), config.block_size);
  if (!num_blocks.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv_cache_memory_bytes: ", num_blocks.status().message()));
  }
  absl::StatusOr<std::vector<int32_t>> eos_ids = LoadEosTokenIds(config.model_dir, model_config);
  if (!eos_ids.ok()) return eos_ids.status();
  absl::StatusOr<std::unique_ptr<tokenizer::Tokenizer>> tokenizer =
      LoadTokenizerIfPresent(config.model_dir);
  if (!tokenizer.ok()) return tokenizer.status();

  absl::StatusOr<std::unique_ptr<DeepseekModelRunner>> runner =
      DeepseekModelRunner::Create(std::move(backend), *std::move(model), *num_blocks,
                                  config.block_size, *kv_dtype, config.sample_on_device);
  if (!runner.ok()) return runner.status();
  EngineCoreOptions options{
      .scheduler = {.max_num_seqs = config.max_num_seqs,
                    .max_num_batched_tokens = config.max_num_batched_tokens,
                    .max_model_len = config.max_model_len,
                    .enable_prefix_caching = config.enable_prefix_caching},
      .num_blocks = *num_blocks,
      .block_size = config.block_size,
      .output = {.vocab_size = static_cast<int32_t>(model_config.vocab_size),
                 .eos_token_ids = *eos_ids,
                 .tokenizer = tokenizer->get()},
      .seed = config.seed,
      .before_forward = config.before_forward,
  };
  absl::StatusOr<std::unique_ptr<EngineCore>> core =
      EngineCore::Create(std::move(options), *std::move(runner));
  if (!core.ok()) return core.status();
  const RequestLimits limits{.vocab_size = static_cast<int32_t>(model_config.vocab_size),
                             .max_model_len = config.max_model_len,
                             .max_num_seqs = config.max_num_seqs,
                             .num_blocks = *num_blocks,
                             .block_size = config.block_size,
                             .has_tokenizer = *tokenizer != nullptr};
  return std::make_unique<ThreadedEngine>(config, model_config, *std::move(tokenizer),
                                          *std::move(core), limits);
}

}  // namespace r2::engine
