#pragma once
// ModelRunner: the part of an engine step that touches tensors. Given the scheduler's plan for a
// step it applies the copy-on-write block copies to the KV cache, runs one forward pass over the
// chunks and returns the logits rows the sampler needs. DeepseekModelRunner is the real one; the
// step benchmark plugs in a runner that fills nothing, to time the host-side work alone.
//
// Used by the engine thread only; not thread-safe.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/model/deepseek_model.h"
#include "engine/model/kv_cache.h"
#include "engine/scheduler/scheduler_output.h"
#include "kernels/backend.h"

namespace r2::engine {

// The logits of one step: rows[i] is the row of the i-th needs_logits chunk (chunk order) in
// `logits` ([num_rows, vocab_size]); other rows may exist and are ignored. Reused across steps.
// On a device backend the rows stay where the forward pass wrote them: `device` is set (backend
// memory, [device_rows, vocab_size], valid until the next Run), `logits` is unused, and the
// engine samples them with backend->SampleRows (engine/device_sampler.h).
struct StepLogits {
  int64_t vocab_size = 0;
  std::vector<float> logits;
  std::vector<int64_t> rows;
  float* device = nullptr;
  int64_t device_rows = 0;
  Backend* backend = nullptr;  // owns `device`; null on the host path

  absl::Span<float> row(size_t i) {
    return absl::MakeSpan(logits.data() + rows[i] * vocab_size, vocab_size);
  }
};

class ModelRunner {
 public:
  virtual ~ModelRunner() = default;
  // Runs the step planned in `plan` (block copies, then the forward pass over plan.chunks) and
  // fills *logits. An error is an engine fault: the KV cache may be partly written.
  virtual absl::Status Run(const scheduler::SchedulerOutput& plan, StepLogits* logits) = 0;
};

class DeepseekModelRunner final : public ModelRunner {
 public:
  // `model` runs on `backend`; the cache holds `num_blocks` blocks of `block_size` tokens in
  // `kv_dtype`'s format. On a backend whose memory is not host memory, the logits stay there
  // (StepLogits::device) and are sampled where they are, unless `sample_on_device` is false:
  // then they are copied to the host and sampled there, as on host backends.
  static absl::StatusOr<std::unique_ptr<DeepseekModelRunner>> Create(
      std::unique_ptr<Backend> backend, std::unique_ptr<model::DeepseekModel> model,
      int32_t num_blocks, int32_t block_size, KvCacheDType kv_dtype = KvCacheDType::kFloat32,
      bool sample_on_device = true);

  absl::Status Run(const scheduler::SchedulerOutput& plan, StepLogits* logits) override;

  const model::DeepseekModel& model() const { return *model_; }

 private:
  DeepseekModelRunner(std::unique_ptr<Backend> backend, std::unique_ptr<model::DeepseekModel> model,
                      std::unique_ptr<model::PagedKvCache> cache);
  absl::Status CopyBlocks(absl::Span<const scheduler::BlockCopy> copies);

  std::unique_ptr<Backend> backend_;
  std::unique_ptr<model::DeepseekModel> model_;
  std::unique_ptr<model::PagedKvCache> cache_;
  std::vector<model::SequenceInput> inputs_;  // reused across steps
};

// Bytes of KV cache one token position takes in `config`'s cache (every cache layer, one latent +
// rope key row in `dtype`'s format: kernels/kv_cache_format.h). The cache holds the MTP layers
// too: DeepseekModel::Forward requires the full cache shape even when MTP does not run.
int64_t KvBytesPerToken(const model::ModelConfig& config,
                        KvCacheDType dtype = KvCacheDType::kFloat32);

}  // namespace r2::engine
