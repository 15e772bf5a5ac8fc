#include "engine/model_runner.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace r2::engine {

int64_t KvBytesPerToken(const model::ModelConfig& config, KvCacheDType dtype) {
  const int64_t layers = config.num_hidden_layers + config.num_nextn_predict_layers;
  return layers * KvCacheRowBytes(dtype, config.kv_lora_rank, config.qk_rope_head_dim);
}

absl::StatusOr<std::unique_ptr<DeepseekModelRunner>> DeepseekModelRunner::Create(
    std::unique_ptr<Backend> backend, std::unique_ptr<model::DeepseekModel> model,
    int32_t num_blocks, int32_t block_size, KvCacheDType kv_dtype, bool sample_on_device) {
  auto cache = model::PagedKvCache::Create(model->CacheShape(num_blocks, block_size, kv_dtype),
                                           backend.get());
  if (!cache.ok()) return cache.status();
  model->set_outputs_stay_on_device(sample_on_device && !backend->host_memory());
  return std::unique_ptr<DeepseekModelRunner>(
      new DeepseekModelRunner(std::move(backend), std::move(model), *std::move(cache)));
}

DeepseekModelRunner::DeepseekModelRunner(std::unique_ptr<Backend> backend,
                                         std::unique_ptr<model::DeepseekModel> model,
                                         std::unique_ptr<model::PagedKvCache> cache)
    : backend_(std::move(backend)), model_(std::move(model)), cache_(std::move(cache)) {}

// A block holds its positions for every layer in one contiguous range (kv_cache.h), so a block
// copy is one backend copy (CopyWithin) of block_stride words.
absl::Status DeepseekModelRunner::CopyBlocks(absl::Span<const scheduler::BlockCopy> copies) {
  for (const scheduler::BlockCopy& copy : copies) {
    if (absl::Status s = cache_->CopyBlock(copy.src, copy.dst); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status DeepseekModelRunner::Run(const scheduler::SchedulerOutput& plan, StepLogits* logits) {
  if (absl::Status s = CopyBlocks(plan.block_copies); !s.ok()) return s;
  inputs_.clear();
  logits->rows.clear();
  for (size_t i = 0; i < plan.chunks.size(); ++i) {
    const scheduler::ScheduledChunk& chunk = plan.chunks[i];
    inputs_.push_back(model::SequenceInput{
        .token_ids = chunk.tokens, .start_pos = chunk.start, .block_table = chunk.block_table});
    // kLastPerSequence gives one row per chunk, in chunk order.
    if (chunk.needs_logits) logits->rows.push_back(static_cast<int64_t>(i));
  }
  absl::StatusOr<model::ForwardOutput> out =
      model_->Forward(inputs_, model::LogitsMode::kLastPerSequence, *cache_);
  if (!out.ok()) return out.status();
  if (out->logit_rows() != static_cast<int64_t>(plan.chunks.size())) {
    return absl::InternalError(absl::StrCat("forward returned ", out->logit_rows(),
                                            " logits rows for ", plan.chunks.size(), " chunks"));
  }
  logits->vocab_size = out->vocab_size;
  if (out->device_logits != nullptr) {
    logits->device = out->device_logits;
    logits->device_rows = out->device_logit_rows;
    logits->backend = backend_.get();
    return absl::OkStatus();
  }
  logits->device = nullptr;
  logits->backend = nullptr;
  logits->logits = std::move(out->logits);
  return absl::OkStatus();
}

}  // namespace r2::engine
