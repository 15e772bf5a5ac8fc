#pragma once
// DeepseekModel: the DeepSeek-V3/R1 forward pass (spec sections 2-4) over a Backend.
//
// One Forward() runs a mixed batch of sequences through every layer: sequences with no cached
// context use the plain MLA formulation (prefill); sequences with cached context (decode, chunked
// prefill) use the absorbed formulation reading the paged latent cache. Every call writes the new
// tokens' latent + rope key into their cache slots first. The residual stream is float32.
// ForwardMtp() runs the multi-token-prediction module on the main model's hidden states; its
// layer's cache is an extra layer of the same PagedKvCache.
//
// Usage:
//   auto model = DeepseekModel::Load(dir, backend.get());
//   auto cache = PagedKvCache::Create((*model)->CacheShape(/*num_blocks=*/64), backend.get());
//   std::vector<int32_t> table = {0, 1};
//   SequenceInput seq{.token_ids = prompt, .start_pos = 0, .block_table = table};
//   auto out = (*model)->Forward({&seq, 1}, LogitsMode::kLastPerSequence, **cache);
//   // next step: SequenceInput{.token_ids = {next}, .start_pos = prompt.size(), ...}
//
// Memory: on a host-memory backend the weights are views into the mapped checkpoint, whose pages
// Create moves in place into anonymous huge pages (same bytes, same addresses; not with
// R2_HUGE_PAGE_WEIGHTS=0 or when the checkpoint does not fit in available memory). On any other
// backend (a GPU) every tensor the ops read is uploaded once at load into an allocation the
// model owns (FP8 stays FP8), the activations live in backend scratch,
// each step's plan arrays go up in one copy, and Forward copies the logits and hidden states
// back. The KV cache must come from the same backend (PagedKvCache::Create(shape, backend)).
//
// Not thread-safe: one forward at a time (scratch buffers are reused between calls).
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/model/backend_buffer.h"
#include "engine/model/checkpoint.h"
#include "engine/model/config.h"
#include "engine/model/forward_batch.h"
#include "engine/model/huge_page_weights.h"
#include "engine/model/kv_cache.h"
#include "engine/model/model_weights.h"
#include "engine/model/step_plan.h"
#include "kernels/backend.h"
#include "kernels/rope_table.h"

namespace r2::model {

class DeepseekModel {
 public:
  // Takes the checkpoint (the weights are views into its mapped files). `backend` must outlive
  // the model.
  static absl::StatusOr<std::unique_ptr<DeepseekModel>> Create(
      std::unique_ptr<Checkpoint> checkpoint, Backend* backend);
  // Checkpoint::Open(dir) then Create().
  static absl::StatusOr<std::unique_ptr<DeepseekModel>> Load(const std::string& dir,
                                                             Backend* backend);
  ~DeepseekModel();

  const ModelConfig& config() const { return checkpoint_->config(); }
  Backend* backend() const { return backend_; }
  // Routed experts the last Forward/ForwardMtp ran, summed over its MoE layers (an expert
  // selected by several tokens of a layer counts once): for bytes-read accounting.
  int64_t last_routed_experts_run() const;
  // Host backends: the checkpoint bytes moved from the file mapping into anonymous (huge-page)
  // memory at load, and how long it took (huge_page_weights.h; zero when not moved).
  const HugePageMove& weight_placement() const { return weight_placement_; }
  // Cache layers: the main layers, then one per MTP module.
  int64_t num_cache_layers() const;
  KvCacheShape CacheShape(int64_t num_blocks, int64_t block_size = 64,
                          KvCacheDType dtype = KvCacheDType::kFloat32) const;

  // On a device backend: leave Forward's logits in backend memory (ForwardOutput::device_logits)
  // and return no hidden states, so a step copies nothing back (the engine samples on the
  // device). Ignored on host-memory backends. Off by default.
  void set_outputs_stay_on_device(bool on) { outputs_stay_on_device_ = on; }

  // The main model over `batch`. Logits per `logits`; hidden = post-final-norm states.
  absl::StatusOr<ForwardOutput> Forward(absl::Span<const SequenceInput> batch, LogitsMode logits,
                                        PagedKvCache& cache);

  // MTP module `mtp_index` (depth 1, spec 4.2). Each sequence's token_ids are the next tokens
  // t_{i+1} paired with main-model hidden states h_i at positions start_pos.., and `hidden` holds
  // those h_i ([batch tokens, hidden_size], batch order, as in ForwardOutput::hidden). Logits
  // predict t_{i+2}; hidden = the shared_head.norm output.
  absl::StatusOr<ForwardOutput> ForwardMtp(absl::Span<const SequenceInput> batch,
                                           absl::Span<const float> hidden, LogitsMode logits,
                                           PagedKvCache& cache, int64_t mtp_index = 0);

 private:
  struct Scratch;  // per-forward activation buffers (forward_scratch.h)

  DeepseekModel(std::unique_ptr<Checkpoint> checkpoint, Backend* backend);
  absl::StatusOr<StepPlan> Plan(absl::Span<const SequenceInput> batch, LogitsMode logits,
                                const PagedKvCache& cache) const;
  // Sizes the scratch for `plan` and points scratch.plan at its arrays in backend memory.
  absl::Status BeginStep(const StepPlan& plan);
  // One decoder block on scratch.h (residual stream, [rows, hidden]) using cache layer `layer`.
  absl::Status DecoderLayer(int64_t layer, const LayerWeights& w, const StepPlan& plan,
                            PagedKvCache& cache);
  // h += o_proj(MLA(x)) (mla.cc).
  absl::Status Attention(int64_t layer, const MlaWeights& w, const StepPlan& plan,
                         PagedKvCache& cache);
  absl::Status PlainAttention(const MlaWeights& w, const StepPlan& plan);
  absl::Status AbsorbedAttention(const MlaWeights& w, const StepPlan& plan,
                                 const PagedLatentCache& cache);
  // h += Mlp(x) / Moe(x) on `rows` rows of x (moe.cc).
  absl::Status Mlp(const MlpWeights& w, const float* x, int64_t rows, float* h,
                   const int32_t* out_index, const float* out_scale);
  absl::Status Moe(const MoeWeights& w, const StepPlan& plan);
  // Host backends: the routed experts in one Backend::MoeExperts call on the layer's expert
  // views (moe.cc). Sets *ran to false (and remembers it) when the backend answers Unimplemented.
  // with_shared: the shared expert runs in the same call (SharedExpertFolds in moe.cc).
  absl::Status RoutedExpertsOnHost(const MoeWeights& w, int64_t rows, bool with_shared, bool* ran);
  // norm(h) -> out.hidden (batch order) and the requested logits through `head`.
  absl::Status Finish(const TensorView& norm, const WeightView& head, const StepPlan& plan,
                      ForwardOutput& out);
  // Finish without copies: the logits stay in scratch (set_outputs_stay_on_device).
  absl::Status FinishOnDevice(const TensorView& norm, const WeightView& head, const StepPlan& plan,
                              ForwardOutput& out);

  std::unique_ptr<Checkpoint> checkpoint_;
  Backend* backend_;
  std::unique_ptr<ModelWeights> weights_;
  RopeTable rope_;
  TensorView rope_cos_, rope_sin_;  // F32 views of rope_ (in backend memory)
  BackendBuffer weight_arena_;      // device backends: every uploaded tensor
  float softmax_scale_ = 1.0f;
  std::unique_ptr<Scratch> scratch_;
  // Per MoE layer: its experts' weight views (gate of each expert, then up, then down; the
  // shared expert last in each when it rides in the call), the table MoeExperts reads on host
  // backends; built on the layer's first call.
  std::map<const MoeWeights*, std::vector<WeightView>> moe_expert_views_;
  bool outputs_stay_on_device_ = false;
  HugePageMove weight_placement_;
  bool moe_experts_on_host_ = true;        // false once the backend answered Unimplemented
  std::vector<uint8_t> moe_expert_seen_;   // distinct experts of a step (experts_run)
  std::vector<int32_t> moe_shared_ids_;    // [rows][top_k + 1]: the routed ids, then the shared
  std::vector<float> moe_shared_weights_;  // their weights, then 1
};

}  // namespace r2::model
